"""The one harness of every benchmark script: command line, machine metadata, timing, records, JSON, tables.

A script builds its parser with :func:`parser` (the shared prologue: ``--arch``, ``--precision``,
``--threads``, ``--sizes``, ``--repeats``, ``--quick``, ``--out``/``--json``, ``--markdown``; a script
leaves out what it has no use for and adds its own flags), parses it with :func:`parse` (one-line errors
that name the flag), starts Taichi with :func:`start` (thread counts first: Taichi reads its CPU thread
pool size from the environment when it starts), and collects figures:

- timing: :func:`timed` (median after warm-up, fewer repeats when one run is long), :func:`timing`
  (median and spread), :class:`LaunchCounter`, all on :mod:`benchmarks.timing`'s rule;
- a figure that could not be measured is ``None`` with its reason in the row's ``null_reasons``
  (:func:`null`, :func:`measure`, :func:`ratio`);
- :func:`metadata`: date, arch, precision, threads, machine (CPU model, cores, memory, GPU, versions,
  load) and the git revision (read locally, no network);
- :class:`Record` (name, size, metric, value, unit, implementation): the flat form of every figure, in the
  JSON's ``records`` and in the side-by-side Markdown table of :func:`side_by_side` (taichi_dp, torch
  eager, torch.compile, PhiFlow, with ratios);
- :func:`write_json` (atomic: a temporary file in the same folder, then a rename) and :func:`finish`
  (print the tables, write JSON and Markdown).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from benchmarks.timing import LaunchCounter, Timing, median_seconds, time_call

__all__ = [
    "ARCHES", "IMPLS", "IMPL_LABELS", "PRECISIONS", "LaunchCounter", "Parser", "Record", "Timing", "count_launches",
    "fmt_mb", "fmt_num", "fmt_ratio", "fmt_s", "fmt_value", "fwd", "fwd_bwd", "git_state", "machine", "machine_line",
    "measure", "median_seconds", "metadata", "null", "parse", "parser", "ratio", "records_from_row", "side_by_side",
    "start", "time_call", "timed", "timing", "write_json", "write_text",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ARCHES = ("cpu", "cuda", "vulkan")
PRECISIONS = ("f32", "f64")
IMPLS = ("taichi", "torch_eager", "torch_compile", "phiflow")
"""Implementation keys of the side-by-side comparisons (row keys ``f"{impl}_{metric}"``)."""
IMPL_LABELS = {"taichi": "taichi_dp", "torch_eager": "torch eager", "torch_compile": "torch.compile",
               "phiflow": "PhiFlow 3.4"}


# ------------------------------------------------------------------------------------------- command line
class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the flag (``prog: error: argument --threads:
    expected an integer >= 1, got '0'``), exit status 2, no usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum`` (the message names what was received)."""

    def parse_int(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse_int.__name__ = f"integer >= {minimum}"
    return parse_int


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def parser(
    doc: str | None,
    *,
    arches: Sequence[str] | None = ARCHES,
    arch_default: str = "cpu",
    precisions: Sequence[str] | None = ("f32",),
    precision_default: str | None = None,
    threads: bool = True,
    sizes: str | None = None,
    sizes_flags: Sequence[str] = ("--sizes",),
    min_size: int = 1,
    repeats: bool = True,
    repeats_default: int | None = None,
    quick: str | None = "CI size: the smallest grids, few repeats",
    out: str | None = "write every figure here as JSON",
    markdown: bool = False,
) -> Parser:
    """The shared command-line prologue; a script adds its own flags to the returned parser.

    Args:
        doc: the script's docstring (the ``--help`` text).
        arches: ``--arch`` choices (``None``: no ``--arch`` flag).
        arch_default: ``--arch`` default.
        precisions: ``--precision`` choices (``None``: no flag; one choice: the flag accepts only it).
        precision_default: ``--precision`` default (the first choice when ``None``).
        threads: add ``--threads`` (CPU threads of torch and Taichi).
        sizes: help of ``--sizes`` (``None``: the script has no size list).
        sizes_flags: the flag names of the size list (``--sizes`` and/or a script's historical name).
        min_size: the smallest size accepted.
        repeats: add ``--repeats``.
        repeats_default: ``--repeats`` default (``None``: the script picks, e.g. by ``--quick``).
        quick: help of ``--quick`` (``None``: no flag).
        out: help of ``--out`` (alias ``--json``; ``None``: no JSON output flag).
        markdown: add ``--markdown`` (the tables as a Markdown file).
    """
    ap = Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if arches is not None:
        ap.add_argument("--arch", default=arch_default, choices=tuple(arches), help=f"Taichi arch (default {arch_default})")
    if precisions is not None:
        default = precision_default or precisions[0]
        ap.add_argument("--precision", default=default, choices=tuple(precisions),
                        help=f"floating-point precision (default {default})")
    if threads:
        ap.add_argument("--threads", type=at_least(1), default=None,
                        help="CPU threads of torch and Taichi (default: theirs)")
    if sizes is not None:
        ap.add_argument(*sizes_flags, dest="sizes", type=at_least(min_size), nargs="+", default=None, help=sizes)
    if repeats:
        ap.add_argument("--repeats", type=at_least(1), default=repeats_default,
                        help="timed runs per measurement" + (f" (default {repeats_default})" if repeats_default else ""))
    if quick is not None:
        ap.add_argument("--quick", action="store_true", help=quick)
    if out is not None:
        ap.add_argument("--out", "--json", dest="out", default=None, metavar="PATH", help=out)
    if markdown:
        ap.add_argument("--markdown", default=None, metavar="PATH", help="write the tables here as Markdown")
    return ap


def parse(ap: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` and check what argparse cannot: output paths that are folders. Errors are one line
    naming the flag (:class:`Parser`)."""
    args = ap.parse_args(argv)
    for flag in ("out", "markdown"):
        path = getattr(args, flag, None)
        if path is not None and Path(path).is_dir():
            ap.error(f"argument --{flag}: expected a file path, got the folder {path!r}")
    return args


def apply_threads(threads: int | None) -> None:
    """CPU threads of torch and Taichi (``None``: leave their defaults). Call before Taichi starts: its CPU
    thread pool size is read from ``TI_CPU_MAX_NUM_THREADS`` at initialisation."""
    if threads:
        os.environ["TI_CPU_MAX_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def start(args: argparse.Namespace, arch: str | None = None, precision: str | None = None) -> Any:
    """Apply ``--threads`` and start taichi_dp on ``--arch``/``--precision`` (or the given ones); returns the
    runtime (:func:`taichi_dp.init`)."""
    import taichi_dp as tdp

    apply_threads(getattr(args, "threads", None))
    return tdp.init(arch or getattr(args, "arch", "cpu"), precision or getattr(args, "precision", "f32"))


# ----------------------------------------------------------------------------------------------- metadata
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(arch: str | None = None) -> dict[str, Any]:
    """CPU model, cores (all and usable), memory, GPU, platform, threads, package versions and load average.

    Args:
        arch: the Taichi arch of the run (recorded as given).
    """
    import numpy as np
    import taichi as ti

    import taichi_dp as tdp

    cpu = platform.processor() or platform.machine()
    mem_gb = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": mem_gb,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "arch": arch,
        "torch_threads": torch.get_num_threads(),
        "taichi_cpu_threads": os.environ.get("TI_CPU_MAX_NUM_THREADS", "default"),
        "load_average_start": list(os.getloadavg()),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "taichi": ".".join(map(str, ti.__version__)),
            "numpy": np.__version__,
            "taichi_dp": tdp.__version__,
            "phiflow": _version("phiflow"),
            "phiml": _version("phiml"),
        },
    }


def git_state() -> dict[str, Any]:
    """The commit the run used and the tracked files that differed from it (``None`` outside git); local
    ``git`` only."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified": None}
    if head.returncode != 0:
        return {"commit": None, "modified": None}
    return {"commit": head.stdout.strip() or None, "modified": [line[3:] for line in status.stdout.splitlines()]}


def now() -> str:
    """UTC date and time to the second, ISO 8601."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def metadata(arch: str, precision: str, *, threads: int | None = None, quick: bool = False, **extra: Any) -> dict[str, Any]:
    """The ``meta`` block of a result: date, command, arch, precision, quick, threads, machine, git, and
    ``complete: False`` (set true by the script at the end; a partial JSON says so).

    Args:
        arch: the arch Taichi runs on (``runtime.arch``).
        precision: ``"f32"`` or ``"f64"``.
        threads: ``--threads`` (``None``: the libraries' defaults).
        quick: whether this is a ``--quick`` run.
        **extra: further keys of the script (settings, scene, ...).
    """
    return {
        "date": now(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "arch": arch,
        "precision": precision,
        "quick": quick,
        "threads": threads or "default",
        "taichi_cpu_threads": os.environ.get("TI_CPU_MAX_NUM_THREADS", "default"),
        **extra,
        "machine": machine(arch),
        "git": git_state(),
        "complete": False,
    }


def close_meta(meta: dict[str, Any], wall_s: float) -> None:
    """Mark ``meta`` complete: load average at the end and the run's wall time."""
    meta["complete"] = True
    meta["load_average_end"] = list(os.getloadavg())
    meta["machine"]["load_average_end"] = meta["load_average_end"]
    meta["wall_s"] = wall_s


def machine_line(meta: dict[str, Any]) -> str:
    """One Markdown sentence: machine, arch, precision, threads, versions, date, load, wall time."""
    mach, v = meta["machine"], meta["machine"]["versions"]
    end = meta.get("load_average_end")
    wall = meta.get("wall_s")
    return (
        f"Machine: {mach['cpu_model']}, {mach['cpu_cores']} cores, {mach['memory_gb']} GB, GPU: {mach['gpu'] or 'none'}; "
        f"arch {meta['arch']}, {meta['precision']}, threads {meta['threads']}; python {v['python']}, torch {v['torch']}, "
        f"taichi {v['taichi']}, numpy {v['numpy']}, PhiFlow {v['phiflow'] or 'not installed'}; {meta['date']}; "
        f"load average {mach['load_average_start'][0]:.2f} at start"
        + (f", {end[0]:.2f} at end" if end else "")
        + (f"; {wall:.0f} s" if wall is not None else "")
        + "."
    )


# ------------------------------------------------------------------------------------------ figures, timing
class Budget(Protocol):
    """What :func:`timed` reads from a script's settings."""

    repeats: int
    budget_s: float


def null(row: dict, key: str, reason: str) -> None:
    """Record ``row[key] = None`` with its reason in ``row["null_reasons"]``."""
    row[key] = None
    row.setdefault("null_reasons", {})[key] = reason


def measure(row: dict, key: str, fn: Callable[[], Any]) -> None:
    """``row[key] = fn()``; a failure becomes ``null`` with the error as its reason (and is printed): one
    benchmark cell that fails must not sink the whole run."""
    try:
        row[key] = fn()
    except Exception as e:
        where = row.get("kernel") or row.get("workload") or row.get("grid") or row.get("n") or ""
        print(f"  ! {where} {key}: {type(e).__name__}: {e}", file=sys.stderr)
        null(row, key, f"failed: {type(e).__name__}: {str(e)[:300]}")


def ratio(row: dict, key: str, num: str, den: str) -> None:
    """``row[key] = row[num] / row[den]`` or ``null`` naming the missing figure."""
    a, b = row.get(num), row.get(den)
    if a is None or b is None:
        null(row, key, f"{num if a is None else den} not measured")
    else:
        row[key] = a / b


def timing(fn: Callable[[], object], s: Budget, warmup: int = 1, repeats: int | None = None) -> Timing:
    """The runs of ``fn()``: ``warmup`` untimed runs, one timed run to size the rest, then up to ``repeats``
    (default ``s.repeats``) runs within the per-measurement budget ``s.budget_s`` (the first timed run
    alone when the budget allows only one).

    Args:
        fn: the work to time.
        s: settings with ``repeats`` and ``budget_s``.
        warmup: untimed runs first.
        repeats: timed runs at most (default ``s.repeats``).
    """
    first = time_call(fn, 1, warmup=warmup)
    n = max(1, min(repeats or s.repeats, int(s.budget_s / max(first.median, 1e-9))))
    return first if n < 2 else time_call(fn, n, warmup=0)


def timed(fn: Callable[[], object], s: Budget, warmup: int = 1, repeats: int | None = None) -> float:
    """Median seconds of :func:`timing`."""
    return timing(fn, s, warmup, repeats).median


def count_launches(fn: Callable[[], object]) -> int:
    """Taichi kernel launches made by ``fn()`` (:class:`LaunchCounter`)."""
    with LaunchCounter() as c:
        fn()
    return c.count


def fwd(step: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor) -> Callable[[], object]:
    """One forward step of ``u`` without autograd, as a closure to time."""

    def run() -> object:
        with torch.no_grad():
            return step(u)

    return run


def fwd_bwd(step: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor, unroll: int = 4,
            saved: dict | None = None) -> Callable[[], object]:
    """Forward + backward of an ``unroll``-step rollout from ``u`` (loss = sum of the states after the
    first, gradient w.r.t. ``u``), as a closure to time. With ``saved``, the first call also records
    ``saved["mb"]``: the MiB autograd saved for backward (an upper bound: a storage saved twice counts twice).
    """
    from taichi_dp.solvers import rollout

    def run() -> object:
        u0 = u.clone().requires_grad_()
        if saved is not None and "mb" not in saved:
            total = [0]

            def pack(t: torch.Tensor) -> torch.Tensor:
                total[0] += t.numel() * t.element_size()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = rollout(step, u0, unroll, include_initial=False).sum()
            saved["mb"] = total[0] / 2**20
        else:
            loss = rollout(step, u0, unroll, include_initial=False).sum()
        loss.backward()
        return u0.grad

    return run


# ------------------------------------------------------------------------------------------------ records
@dataclasses.dataclass(frozen=True)
class Record:
    """One figure: ``value`` (``None``: not measured, ``reason`` says why) of ``metric`` in ``unit`` for
    workload ``name`` at ``size``, by implementation ``impl`` (:data:`IMPLS` or another label)."""

    name: str
    size: str | int
    metric: str
    value: float | int | None
    unit: str
    impl: str = "taichi"
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["reason"] is None:
            del out["reason"]
        return out


def records_from_row(row: dict, name: str, size: str | int, metrics: dict[str, str],
                     impls: Sequence[str] = IMPLS) -> list[Record]:
    """The records of a wide row with keys ``f"{impl}_{metric}"`` (missing keys skipped, nulls kept with
    their reasons).

    Args:
        row: the row (``null_reasons`` read for nulls).
        name: the workload name of every record.
        size: the size label of every record.
        metrics: metric → unit.
        impls: the implementation prefixes to look for.
    """
    out = []
    reasons = row.get("null_reasons", {})
    for metric, unit in metrics.items():
        for impl in impls:
            key = f"{impl}_{metric}"
            if key in row:
                out.append(Record(name, size, metric, row[key], unit, impl, reasons.get(key) if row[key] is None else None))
    return out


def fmt_s(x: float | None) -> str:
    """Seconds with a readable unit; '—' for null."""
    if x is None:
        return "—"
    if x < 1e-3:
        return f"{1e6 * x:.0f} µs"
    if x < 1:
        return f"{1e3 * x:.3g} ms"
    return f"{x:.3g} s"


def fmt_num(x: float | None, scale: float = 1.0, unit: str = "") -> str:
    """A scaled number with unit; '—' for null."""
    return "—" if x is None else f"{x * scale:.3g}{' ' if unit and unit != '%' else ''}{unit}"


def fmt_ratio(x: float | None) -> str:
    """A ratio as ``1.23×``; '—' for null."""
    return "—" if x is None else f"{x:.2f}×"


def fmt_mb(x: float | None) -> str:
    """Megabytes; '—' for null."""
    return "—" if x is None else f"{x:.3g} MB"


def fmt_value(value: float | int | None, unit: str) -> str:
    """A record's value in its unit (seconds and MB readable, others as numbers)."""
    if value is None:
        return "—"
    if unit == "s":
        return fmt_s(value)
    if unit == "MB":
        return fmt_mb(value)
    if isinstance(value, int):
        return f"{value}{' ' + unit if unit else ''}"
    return fmt_num(value, unit=unit)


def side_by_side(records: Iterable[Record], reference: str = "taichi") -> str:
    """A Markdown table with one line per (workload, size, metric) and one column per implementation that
    has a record (in :data:`IMPLS` order, others after), then for every other implementation a ratio
    column ``other / reference`` (for times: > 1 means the reference is faster).

    Args:
        records: the records to lay out.
        reference: the implementation the ratios divide by.
    """
    records = list(records)
    if not records:
        return ""
    present = {r.impl for r in records}
    impls = [i for i in IMPLS if i in present] + sorted(present - set(IMPLS))
    lines_: dict[tuple[str, str, str], dict[str, Record]] = {}
    for r in records:
        lines_.setdefault((r.name, str(r.size), r.metric), {})[r.impl] = r
    others = [i for i in impls if i != reference] if reference in present else []
    label = lambda i: IMPL_LABELS.get(i, i)
    head = ["workload", "size", "metric", *map(label, impls), *(f"{label(i)} / {label(reference)}" for i in others)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (name, size, metric), by_impl in lines_.items():
        cells = [name, size, metric]
        cells += [fmt_value(by_impl[i].value, by_impl[i].unit) if i in by_impl else "" for i in impls]
        ref = by_impl.get(reference)
        for i in others:
            other = by_impl.get(i)
            ok = other is not None and ref is not None and other.value is not None and ref.value
            cells.append(fmt_ratio(other.value / ref.value) if ok else "—")  # type: ignore[operator,union-attr]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------- output
def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder (created if needed), flushed
    to disk, then renamed over ``path``, so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as JSON at ``path``, atomically (:func:`write_text`); NaN and infinity are refused (a figure
    that is not a number is ``None`` with a reason)."""
    return write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def default_json(args: Any, name: str, res: dict) -> str | None:
    """Where a benchmark writes its JSON: ``--out`` if given, else nothing for a ``--quick`` run, else
    ``benchmarks/results/<name>_<arch>_<date>.json`` (:func:`write_json` creates the folder)."""
    if args.out is not None or args.quick:
        return args.out
    return str(RESULTS / f"{name}_{res['meta']['arch']}_{res['meta']['date'][:10]}.json")


def finish(res: dict, md: str, json_path: str | Path | None, md_path: str | Path | None = None) -> None:
    """Print the tables, then write the JSON and the Markdown where asked (and say where)."""
    print()
    print(md)
    if json_path:
        write_json(json_path, res)
        print(f"wrote {json_path}")
    if md_path:
        write_text(md_path, md)
        print(f"wrote {md_path}")
