"""The 3D smoke benchmark (``python -m benchmarks.bench_smoke3d --quick``) runs end to end and writes a complete
JSON (every figure finite and positive or ``null`` with a reason; no timing assertions), and its plain-PyTorch
3D step is taichi_dp's step: the same state after one step (and the same gradient through two) once both
pressure solves are tight. That agreement is what makes the side-by-side timing a comparison of one workload."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import torch_flow as tf
from taichi_dp.ops.solve_options import SolveOptions
from taichi_dp.scenes import smoke_plume_3d
from taichi_dp.solvers import rollout

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("taichi", "torch_eager", "torch_compile", "phiflow")
ROW_KEYS = (
    "n", "cells", "warmup_steps", "pressure_rtol", "pcg_iterations", "launches_per_step", "torch_cg_iterations",
    "step_rel_diff_torch_vs_taichi", "phiflow_cg_iterations",
    *(f"{impl}_{key}" for impl in IMPLS for key in ("step_s", "fwd_bwd_4_s")),
    *(f"{impl}_over_taichi_{w}" for impl in IMPLS[1:] for w in ("step", "fwd_bwd")),
)
NONNEGATIVE = {"step_rel_diff_torch_vs_taichi"}
MAX_PCG_ITERATIONS = 40  # multigrid PCG per projection (6-7 measured at 12³)
MAX_STEP_REL_DIFF = 1e-2  # float32, both solves to rtol 1e-4 (1.2e-6 measured at 12³)


def _check(row: dict, keys: tuple[str, ...], where: str) -> None:
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


SLOW = pytest.mark.slow  # the quick benchmark run is a subprocess with Taichi start-up and two memory children (~30 s)


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench3d") / "smoke3d.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_smoke3d", "--quick", "--json", str(out), "--markdown",
         str(out.with_suffix(".md"))],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| grid |" in proc.stdout and out.with_suffix(".md").is_file()
    return json.loads(out.read_text())


@SLOW
def test_quick_run_writes_every_figure(result):
    meta = result["meta"]
    assert meta["complete"] and meta["quick"] and meta["precision"] == "f32"
    assert meta["warmup_steps"] > 0 and meta["unroll"] == 4
    for key in ("machine", "git", "date", "wall_s", "load_average_end", "settings"):
        assert key in meta, key
    assert [r["n"] for r in result["rows"]] == meta["settings"]["sizes"]
    for row in result["rows"]:
        where = f"row {row['grid']}"
        _check(row, ROW_KEYS, where)
        for key in ("taichi_step_s", "taichi_fwd_bwd_4_s", "torch_eager_step_s", "torch_eager_fwd_bwd_4_s"):
            assert row[key] is not None, f"{where}: {key} must be measured in --quick ({row.get('null_reasons')})"
        for key in ("torch_compile_step_s", "phiflow_step_s", "phiflow_fwd_bwd_4_s"):
            assert row[key] is None and "quick" in row["null_reasons"][key], f"{where}: {key}"
        assert 1 <= row["pcg_iterations"] <= MAX_PCG_ITERATIONS
        assert len(row["pcg_iterations_warmup"]) == meta["warmup_steps"]
        assert row["step_rel_diff_torch_vs_taichi"] < MAX_STEP_REL_DIFF


@SLOW
def test_tight_solve_and_memory(result):
    tight = result["tight_solve"]
    _check(tight, ("iterations", "relative_residual", "step_s"), "tight solve")
    assert tight["converged"] is True and tight["relative_residual"] <= tight["rtol"]
    assert tight["iterations"] >= result["rows"][-1]["pcg_iterations"]  # a tighter tolerance never takes fewer
    mem = result["memory"]
    assert [r["checkpoint_every"] for r in mem["rows"]] == [0, result["meta"]["settings"]["checkpoint_every"]]
    for r in mem["rows"]:
        _check(r, ("seconds",), f"memory {r['checkpoint_every']}")
        # growth at the quick size is ~0 and the page accounting can read a few KiB below the baseline
        assert r["peak_rss_growth_mb"] > -1.0 and r["grad_finite"] is True and r["steps"] == mem["steps"]
    assert "memory_ratio_without_over_with" in mem


@pytest.mark.slow  # float64 3D steps and 2-step gradients in both implementations (~10 s each)
@pytest.mark.parametrize("density_advection, buoyancy", [("flux", 0.5), ("maccormack", (0.5, 0.9))])
def test_torch_step_is_taichi_step_3d(density_advection, buoyancy):
    """float64, both pressure solves to rtol 1e-10 (taichi_dp multigrid-PCG, plain CG in PyTorch): one step
    from a developed state agrees to round-off, and so does the gradient of a 2-step unroll. The density
    gets a small random perturbation first: where it is exactly 0 or repeats a neighbour (outside the
    plume, wall ghosts) the limiters sit on ties, where torch (``maximum`` splits the gradient between
    equal arguments) and Taichi's autodiff pick different, equally valid subgradients."""
    batch = 1 if isinstance(buoyancy, float) else len(buoyancy)
    beta = buoyancy if batch == 1 else torch.tensor(buoyancy, dtype=torch.float64)
    scene = smoke_plume_3d(12, beta, batch, density_advection=density_advection, pressure=SolveOptions(rtol=1e-10))
    st = scene.stepper
    with torch.no_grad():
        u = rollout(st, scene.state0, 4)[:, -1].clone()
        assert u[:, 3].abs().max() > 0.1 and u[:, :3].abs().max() > 0.1  # smoke and motion
        noise = torch.rand(u[:, 3, :-1, :-1, :-1].shape, generator=torch.Generator().manual_seed(0), dtype=u.dtype)
        u[:, 3, :-1, :-1, :-1] += 0.05 * noise * st.flow.fluid[:, 0]
    pt = tf.torch_stepper(st, batch)
    with torch.no_grad():
        a, b = pt(u), st(u)
    assert a.shape == b.shape == u.shape
    assert float((a - b).abs().max() / b.abs().max()) < 1e-9

    def grad(step):
        u0 = u.clone().requires_grad_()
        rollout(step, u0, 2, include_initial=False).square().sum().backward()
        return u0.grad

    ga, gb = grad(pt), grad(st)
    assert float((ga - gb).abs().max() / gb.abs().max()) < 1e-9
