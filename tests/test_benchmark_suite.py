"""The benchmark suite (``python -m benchmarks.run --quick``) runs end to end and writes a complete JSON:
every level, every expected key, every figure finite and positive or ``null`` with a reason. No timing
assertions: the numbers of a CI-size run on a shared machine mean nothing."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

KERNELS = (
    "advect_semi_lagrangian",
    "advect_maccormack",
    "diffuse_explicit",
    "divergence",
    "pressure_gradient",
    "poisson_matvec",
    "pcg_iteration",
    "projection",
)
KERNEL_KEYS = (
    "n", "cells", "taichi_s", "bytes_per_s", "copy_fraction", "torch_eager_s", "torch_compile_s", "eager_over_taichi",
    "compile_over_taichi", "iterations", "torch_cg_iterations", "backward_s", "backward_over_forward",
)
STEP_KEYS = (
    "cells", "batch", "taichi_step_s", "taichi_fwd_bwd_4_s", "pressure_iterations", "launches_per_step", "launches_fwd_bwd_4",
)
COMPARISON_KEYS = (
    "cells", "taichi_step_s", "taichi_fwd_bwd_4_s", "torch_cg_iterations", "step_rel_diff_torch_vs_taichi",
    *(f"{impl}_{key}" for impl in ("torch_eager", "torch_compile", "phiflow")
      for key in ("step_s", "fwd_bwd_4_s", "over_taichi_step", "over_taichi_fwd_bwd")),
)
TRAINING_KEYS = (
    "batch_size", "unroll", "datagen_s", "iterations_timed", "seconds_per_iteration", "iterations_per_s", "sol_update_s",
    "solver_s", "network_s", "solver_fraction", "network_fraction",
)
NONNEGATIVE = {"step_rel_diff_torch_vs_taichi"}  # may be exactly 0
# Upper bounds on the *values* (never on times) a correct run stays far below; a wrong step or solver breaks them.
# step_rel_diff: max |torch − taichi| / max |taichi| of one float32 step (measured, full suite 2026-11-28:
# burgers 6e-8; karman/smoke 7e-6 … 1.1e-4, from the pressure tolerance).
MAX_STEP_REL_DIFF = {"burgers": 1e-4, "karman": 1e-2, "smoke": 1e-2}
MAX_PRESSURE_ITERATIONS = 60  # multigrid PCG per step (measured 10 … 30 up to 256×512)

pytestmark = pytest.mark.slow  # one `benchmarks.run --quick` subprocess (~40 s on 2 cores)


def _check_row(row: dict, keys: tuple[str, ...], where: str) -> None:
    reasons = row.get("null_reasons", {})
    for key in keys:
        assert key in row, f"{where}: missing {key}"
        value = row[key]
        if value is None:
            assert isinstance(reasons.get(key), str) and reasons[key], f"{where}: {key} is null without a reason"
        else:
            assert isinstance(value, int | float) and not isinstance(value, bool), f"{where}: {key} = {value!r}"
            assert math.isfinite(value), f"{where}: {key} = {value}"
            assert value >= 0 if key in NONNEGATIVE else value > 0, f"{where}: {key} = {value}"


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "suite.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(out), "--markdown", str(out.with_suffix(".md"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Targets:" in proc.stdout and out.with_suffix(".md").is_file()
    return json.loads(out.read_text())


def test_meta_is_complete(result):
    meta = result["meta"]
    assert meta["quick"] is True and meta["arch"] == "cpu" and meta["date"]
    mach = meta["machine"]
    assert mach["cpu_model"] and mach["cpu_cores"] >= 1 and "gpu" in mach
    for pkg in ("python", "torch", "taichi", "numpy", "taichi_dp", "phiflow"):
        assert pkg in mach["versions"]
    assert all(mach["versions"][p] for p in ("python", "torch", "taichi", "numpy"))
    copy = result["copy_bandwidth"]
    assert copy["bytes"] > 0 and copy["seconds"] > 0 and copy["bytes_per_s"] > 0


def test_every_level_and_key_present(result):
    levels = result["levels"]
    assert set(levels) == {"kernels", "steps", "training", "comparison"}

    kernels = levels["kernels"]
    assert kernels["launch_overhead_us"] > 0 and set(kernels["byte_models"]) == set(KERNELS)
    assert {r["kernel"] for r in kernels["rows"]} == set(KERNELS)
    for r in kernels["rows"]:
        _check_row(r, KERNEL_KEYS, f"kernel {r['kernel']} {r['n']}")
    for r in levels["steps"]["rows"]:
        _check_row(r, STEP_KEYS, f"step {r['workload']} {r['grid']}")
    for r in levels["comparison"]["rows"]:
        _check_row(r, COMPARISON_KEYS, f"comparison {r['workload']} {r['grid']}")
    assert {r["workload"] for r in levels["steps"]["rows"]} == {"burgers", "karman", "smoke"}
    assert {r["workload"] for r in levels["comparison"]["rows"]} == {"burgers", "karman", "smoke"}
    (train,) = levels["training"]["rows"]
    _check_row(train, TRAINING_KEYS, "training")


def test_targets_judged_or_explained(result):
    targets = result["targets"]
    assert len(targets) == 6
    for t in targets:
        assert t["met"] in (True, False, None) and t["evidence"]


def test_values_are_sane(result):
    """Taichi and plain-PyTorch steps agree (bounded relative difference, per workload); the pressure solver
    needs few iterations. A wrong step, operator or solver breaks these bounds; times are never checked."""
    comparison = result["levels"]["comparison"]["rows"]
    assert comparison
    for r in comparison:
        where = f"comparison {r['workload']} {r['grid']}"
        diff = r["step_rel_diff_torch_vs_taichi"]
        why = r.get("null_reasons", {}).get("step_rel_diff_torch_vs_taichi")
        assert diff is not None, f"{where}: torch vs taichi not compared: {why}"
        assert 0 <= diff < MAX_STEP_REL_DIFF[r["workload"]], f"{where}: step_rel_diff_torch_vs_taichi = {diff}"
    for r in result["levels"]["steps"]["rows"]:
        if r["workload"] != "burgers":
            assert 1 <= r["pressure_iterations"] <= MAX_PRESSURE_ITERATIONS, f"step {r['workload']} {r['grid']}: {r}"
