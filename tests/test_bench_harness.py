"""The benchmark harness (``benchmarks/harness.py``, ``benchmarks/timing.py``) and the rules every benchmark
script follows: no private names of the package, the harness's command line. Timing is tested on a fake
clock (a fake function "sleeps" by advancing it), never against real thresholds."""

import ast
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import harness, timing

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "__init__.py")


# ---------------------------------------------------------------------------------- no private names
def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, filename: str = "<src>") -> list[str]:
    """Every private name of ``taichi_dp`` that ``source`` imports or reads: ``from taichi_dp.x import _y``,
    a private module in an import path (``taichi_dp._x``), and ``_y`` accessed (or ``getattr``-ed) on a
    name bound to anything imported from ``taichi_dp``, also through a chain (``tdp.ops._x``)."""
    tree = ast.parse(source, filename)
    bound: set[str] = set()  # local names bound to taichi_dp modules or to objects imported from them
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "taichi_dp" or a.name.startswith("taichi_dp."):
                    bound.add(a.asname or a.name.split(".")[0])
                    found += [f"{filename}:{node.lineno}: import {a.name}" for part in a.name.split(".") if _private(part)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
            node.module == "taichi_dp" or node.module.startswith("taichi_dp.")
        ):
            if any(_private(part) for part in node.module.split(".")):
                found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
            for a in node.names:
                bound.add(a.asname or a.name)
                if _private(a.name):
                    found.append(f"{filename}:{node.lineno}: from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _private(node.args[1].value)):
            base = node.args[0]
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    "source, what",
    [
        ("from taichi_dp.ops.pressure import _SUBTRACT_GRADIENT", "from taichi_dp.ops.pressure import _SUBTRACT_GRADIENT"),
        ("from taichi_dp.ops import pressure\npressure._SUBTRACT_GRADIENT(1)", "pressure._SUBTRACT_GRADIENT"),
        ("import taichi_dp as tdp\ntdp.ops._stencil.x", "tdp.ops._stencil"),
        ("import taichi_dp.ops._stencil", "import taichi_dp.ops._stencil"),
        ("from taichi_dp._stencil import ordered_sum", "from taichi_dp._stencil import"),
        ("from taichi_dp.ops import linear_solve as ls\ngetattr(ls, '_private')", "getattr(ls, '_private')"),
        ("from taichi_dp.solvers import NavierStokes\nNavierStokes._pre", "NavierStokes._pre"),
    ],
)
def test_checker_catches_private_names(source, what):
    found = private_uses(source)
    assert found and any(what in f for f in found), found


def test_checker_allows_public_and_foreign_names():
    src = ("import torch\nimport taichi_dp as tdp\nfrom taichi_dp.ops import linear_solve\nfrom benchmarks import x\n"
           "tdp.__version__\nlinear_solve.last_solve.iterations\ntorch._dynamo.config\nx._private\n"
           "class A:\n    def f(self):\n        return self._chunk\n")
    assert private_uses(src) == []


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_benchmarks_use_no_private_names(path):
    assert private_uses(path.read_text(), str(path.relative_to(ROOT))) == []


@pytest.mark.parametrize("path", [p for p in SCRIPTS if "__main__" in p.read_text()], ids=lambda p: p.name)
def test_every_script_uses_the_harness_command_line(path):
    """A runnable script builds its parser with ``benchmarks.harness.parser`` and parses with ``parse``."""
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "benchmarks.harness"
             for a in n.names}
    assert {"parser", "parse"} <= names, f"{path.name} imports {sorted(names)} from benchmarks.harness"
    assert "argparse.ArgumentParser(" not in path.read_text()


# -------------------------------------------------------------------------------------------- metadata
def test_metadata_keys():
    meta = harness.metadata("cpu", "f32", threads=2, quick=True, sizes=[8])
    for key in ("date", "command", "arch", "precision", "quick", "threads", "taichi_cpu_threads", "machine", "git",
                "complete", "sizes"):
        assert key in meta, key
    assert meta["arch"] == "cpu" and meta["precision"] == "f32" and meta["threads"] == 2 and meta["complete"] is False
    mach = meta["machine"]
    for key in ("cpu_model", "cpu_cores", "cpu_cores_usable", "memory_gb", "gpu", "platform", "torch_threads",
                "load_average_start", "versions"):
        assert key in mach, key
    assert mach["cpu_model"] and mach["cpu_cores"] >= 1
    for pkg in ("python", "torch", "taichi", "numpy", "taichi_dp"):
        assert mach["versions"][pkg], pkg
    assert "phiflow" in mach["versions"]
    git = meta["git"]
    assert git["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", git["commit"])
    json.dumps(meta, allow_nan=False)  # serialisable as is
    harness.close_meta(meta, 1.5)
    assert meta["complete"] is True and meta["wall_s"] == 1.5 and len(meta["load_average_end"]) == 3
    assert "Machine:" in harness.machine_line(meta) and "f32" in harness.machine_line(meta)


# ------------------------------------------------------------------------------------------------ JSON
def test_write_json_is_atomic_and_readable(tmp_path):
    path = tmp_path / "sub" / "res.json"
    harness.write_json(path, {"a": 1, "b": [1.5, None]})
    assert json.loads(path.read_text()) == {"a": 1, "b": [1.5, None]}
    harness.write_json(path, {"a": 2})  # replaces
    assert json.loads(path.read_text()) == {"a": 2}
    for bad in ({"x": math.nan}, {"x": object()}):  # a failing write leaves the old file and no temporary file
        with pytest.raises((ValueError, TypeError)):
            harness.write_json(path, bad)
        assert json.loads(path.read_text()) == {"a": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["res.json"]


def test_write_json_renames_a_complete_file(tmp_path, monkeypatch):
    """The target only ever appears by ``os.replace`` of a fully written temporary file in the same folder."""
    seen = []
    real = harness.os.replace

    def spy(src, dst):
        seen.append((Path(src).parent == Path(dst).parent, json.loads(Path(src).read_text())))
        return real(src, dst)

    monkeypatch.setattr(harness.os, "replace", spy)
    harness.write_json(tmp_path / "r.json", {"k": [1, 2]})
    assert seen == [(True, {"k": [1, 2]})]


# ---------------------------------------------------------------------------------------------- timing
class FakeClock:
    """``perf_counter`` replacement; :meth:`sleeper` returns a function that "sleeps" the given durations."""

    def __init__(self) -> None:
        self.t = 0.0
        self.calls = 0

    def perf_counter(self) -> float:
        return self.t

    def sleeper(self, durations):
        durations = list(durations)

        def fn():
            self.t += durations[self.calls % len(durations)]
            self.calls += 1

        return fn


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", c.perf_counter)
    syncs = []
    monkeypatch.setattr(timing, "sync", lambda: syncs.append(1))
    c.syncs = syncs
    return c


def test_time_call_median_and_spread(clock):
    fn = clock.sleeper([9.0, 3.0, 1.0, 2.0])  # the first call is the warm-up
    t = timing.time_call(fn, 3, warmup=1)
    assert t.times == (3.0, 1.0, 2.0) and clock.calls == 4
    assert t.median == 2.0 and t.min == 1.0 and t.max == 3.0 and t.spread == 2.0 and t.rel_spread == 1.0
    assert t.as_dict() == {"median_s": 2.0, "min_s": 1.0, "max_s": 3.0, "spread_s": 2.0, "rel_spread": 1.0, "runs": 3}
    assert len(clock.syncs) == 4  # after the warm-up and after every timed run
    assert timing.median_seconds(clock.sleeper([5.0, 4.0]), 1, warmup=0) == 5.0


def test_timed_spends_the_budget(clock):
    class S:
        repeats, budget_s = 5, 2.5

    fn = clock.sleeper([1.0])
    assert harness.timed(fn, S()) == 1.0
    assert clock.calls == 1 + 1 + 2  # warm-up, the sizing run, then int(2.5 / 1.0) = 2 runs
    fn = clock.sleeper([4.0])
    calls = clock.calls
    t = harness.timing(fn, S(), warmup=0)
    assert t.times == (4.0,) and clock.calls - calls == 1  # over budget: the sizing run alone


def test_real_sleep_structure():
    """A real function with a known sleep: one time per repeat, the median among them (no thresholds)."""
    import time

    t = timing.time_call(lambda: time.sleep(0.001), 3, warmup=1)
    assert len(t.times) == 3 and t.min <= t.median <= t.max and t.spread == t.max - t.min


def test_null_measure_ratio():
    row = {"workload": "w"}
    harness.measure(row, "a", lambda: 2.0)
    harness.measure(row, "b", lambda: 1 / 0)
    harness.ratio(row, "a_over_b", "a", "b")
    harness.measure(row, "c", lambda: 4.0)
    harness.ratio(row, "c_over_a", "c", "a")
    assert row["a"] == 2.0 and row["b"] is None and "ZeroDivisionError" in row["null_reasons"]["b"]
    assert row["a_over_b"] is None and row["null_reasons"]["a_over_b"] == "b not measured" and row["c_over_a"] == 2.0


# ---------------------------------------------------------------------------------------------- tables
def test_side_by_side_table():
    R = harness.Record
    recs = [R("karman", "32x64", "step_s", 0.002, "s", "taichi"), R("karman", "32x64", "step_s", 0.004, "s", "torch_eager"),
            R("karman", "32x64", "step_s", None, "s", "phiflow", "skipped"), R("karman", "32x64", "its", 5, "", "taichi")]
    lines = harness.side_by_side(recs).splitlines()
    assert lines[0] == ("| workload | size | metric | taichi_dp | torch eager | PhiFlow 3.4 | torch eager / taichi_dp | "
                        "PhiFlow 3.4 / taichi_dp |")
    assert lines[1] == "|" + "---|" * 8
    assert lines[2] == "| karman | 32x64 | step_s | 2 ms | 4 ms | — | 2.00× | — |"
    assert lines[3] == "| karman | 32x64 | its | 5 |  |  | — | — |"
    assert len(lines) == 4
    assert harness.side_by_side([]) == ""
    only_torch = harness.side_by_side([R("w", 1, "m", 1.0, "s", "torch_eager")]).splitlines()
    assert "/" not in only_torch[0]  # no reference: no ratio columns


def test_records_from_row_and_formats():
    row = {"taichi_step_s": 0.5, "torch_eager_step_s": None, "null_reasons": {"torch_eager_step_s": "too slow"}}
    recs = harness.records_from_row(row, "smoke", "32³", {"step_s": "s", "fwd_bwd_4_s": "s"})
    assert [r.as_dict() for r in recs] == [
        {"name": "smoke", "size": "32³", "metric": "step_s", "value": 0.5, "unit": "s", "impl": "taichi"},
        {"name": "smoke", "size": "32³", "metric": "step_s", "value": None, "unit": "s", "impl": "torch_eager",
         "reason": "too slow"},
    ]
    assert harness.fmt_s(None) == "—" and harness.fmt_s(2e-5) == "20 µs" and harness.fmt_s(0.0123) == "12.3 ms"
    assert harness.fmt_s(12.0) == "12 s" and harness.fmt_ratio(1.234) == "1.23×" and harness.fmt_mb(1536) == "1.54e+03 MB"
    assert harness.fmt_value(3, "its") == "3 its" and harness.fmt_num(0.25, 100, "%") == "25%"


# ------------------------------------------------------------------------------------------ command line
def _parser():
    return harness.parser("doc", precisions=("f32", "f64"), sizes="sizes", min_size=4, markdown=True)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--threads", "0"], "--threads"),
        (["--threads", "two"], "--threads"),
        (["--sizes", "8", "2"], "--sizes"),
        (["--repeats", "-1"], "--repeats"),
        (["--precision", "f16"], "--precision"),
        (["--arch", "tpu"], "--arch"),
        (["--out", "."], "--out"),
        (["--markdown", "."], "--markdown"),
    ],
)
def test_cli_errors_are_one_line_naming_the_flag(argv, flag, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as e:
        harness.parse(_parser(), argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"argument {flag}" in err, err


def test_cli_prologue_defaults_and_alias(tmp_path):
    args = harness.parse(_parser(), ["--json", str(tmp_path / "r.json"), "--sizes", "4", "16", "--quick"])
    assert args.out == str(tmp_path / "r.json") and args.sizes == [4, 16] and args.quick
    assert args.arch == "cpu" and args.precision == "f32" and args.threads is None and args.repeats is None
    bare = harness.parse(harness.parser("doc", arches=None, precisions=None, threads=False, repeats=False, quick=None,
                                        out=None), [])
    assert vars(bare) == {}


@pytest.mark.slow  # one interpreter per script (~5 s each: torch and Taichi imports)
@pytest.mark.parametrize("module, argv, flag", [
    ("run", ["--threads", "0"], "--threads"),
    ("bench_smoke3d", ["--sizes", "4"], "--sizes"),
    ("bench_burgers", ["--repeats", "0"], "--repeats"),
    ("bench_karman", ["--scales", "0"], "--scales"),
    ("bench_memory", ["--unroll", "0"], "--unroll"),
    ("bench_scaling", ["--procs", "0"], "--procs"),
    ("phiflow_karman", ["--scales", "x"], "--scales"),
    ("phiflow_smoke3d", ["--sizes", "2"], "--sizes"),
    ("pbdl_karman_match", ["--precision", "f32"], "--precision"),
    ("pbdl_karman_reference", ["--bogus"], "--bogus"),
])
def test_scripts_reject_bad_flags_in_one_line(module, argv, flag):
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("[Taichi]")]
    assert proc.returncode == 2 and len(lines) == 1 and flag in lines[0], proc.stderr
