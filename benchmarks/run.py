"""The taichi_dp benchmark suite: kernels, solver steps, training, and the same steps in plain PyTorch
(eager and ``torch.compile``) and PhiFlow, all in one process and one run.

    python -m benchmarks.run [--arch cpu|cuda|vulkan] [--precision f32|f64] [--sizes 256 512 1024 2048] [--quick]
                             [--threads T] [--repeats R] [--out|--json out.json] [--markdown out.md]
                             [--no-compile] [--no-phiflow]

The command line, metadata, timing and output are :mod:`benchmarks.harness`'s. Levels (every figure is the
median wall time after warm-up runs, :mod:`benchmarks.timing`; float32 unless ``--precision f64``):

1. ``kernels`` — on an ``N × N`` channel (inflow at y = 0, outflow at y = 1, no-slip side walls, a disc
   obstacle; smooth velocity, CFL 1.5): staggered semi-Lagrangian and MacCormack self-advection,
   explicit viscosity (5-point Laplacian), divergence, pressure-gradient subtraction, the masked Poisson
   matvec, one multigrid-preconditioned CG iteration (a solve of exactly ``PCG_ITERATIONS`` iterations
   divided by that count, so the one-off set-up is spread over them) and the full projection (rel. tol
   1e-3). Achieved bytes/s use the byte model :data:`BYTE_MODELS` (the minimum traffic: every array a
   kernel reads or writes touched once, 4 bytes per float, per cell); ``copy_fraction`` divides by the
   bandwidth of ``dst.copy_(src)`` measured in the same run (bytes read + written). Advection also
   reports its Taichi-autodiff backward time (``torch.autograd.grad`` of the output, graph retained).
2. ``steps`` — Burgers (the PBDL 1D preset), karman (``taichi_dp.scenes.karman``) and smoke
   (``smoke_plume``): one forward step, and forward + backward of a 4-step unroll (loss = sum of the 4
   states, gradient w.r.t. the initial state); Taichi launches per step (forward) and per 4-step
   forward + backward (``benchmarks.bench_karman``'s launch counter).
3. ``training`` — SOL-4 updates per second of the karman quick preset
   (``taichi_dp.learn.karman_experiment.KarmanExperiment``), and on one fixed batch the update split into solver time
   (4 solver steps forward + backward, no network) and network time (4 network applications forward +
   backward, no solver).
4. ``comparison`` — the level-2 workloads in plain PyTorch (:mod:`benchmarks.torch_flow`, built on the
   test references), eager and compiled, and PhiFlow 3.4 where importable (karman only); ratios are
   other time / taichi_dp time (> 1: taichi_dp is faster).

A figure that could not be measured is ``null`` with its reason in the row's ``null_reasons``.
``--quick`` is the CI size: tiny grids, few repeats, no ``torch.compile`` and no PhiFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import taichi_dp as tdp
from benchmarks import phiflow_karman
from benchmarks import torch_flow as tf
from benchmarks.harness import (
    Record,
    at_least,
    close_meta,
    count_launches,
    finish,
    fmt_num,
    fmt_ratio,
    fmt_s,
    fwd,
    fwd_bwd,
    machine_line,
    measure,
    median_seconds,
    metadata,
    null,
    parse,
    parser,
    positive_float,
    ratio,
    records_from_row,
    side_by_side,
    start,
    timed,
    write_json,
)
from taichi_dp.grid import Grid
from taichi_dp.grid.geometry import disc
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall, apply_boundary, open_faces, valid_faces
from taichi_dp.ops import linear_solve, pressure
from taichi_dp.ops.linear_solve import NotConvergedWarning
from taichi_dp.ops.multigrid import solver_for
from taichi_dp.ops.poisson import apply_poisson
from taichi_dp.ops.pressure import apply_subtract_gradient
from taichi_dp.ops.staggered_advection import apply_velocity_advection
from taichi_dp.ops.staggered_diffusion import apply_velocity_diffusion
from taichi_dp.scenes import karman, pbdl_burgers, smoke_plume
from taichi_dp.solvers import rollout

BYTE_MODELS: dict[str, tuple[int | None, str]] = {
    "advect_semi_lagrangian": (16, "read v (2 floats), write out (2)"),
    "advect_maccormack": (40, "SL pass 16 + correction pass: read v (2), v̂ (2), write out (2)"),
    "diffuse_explicit": (16, "read v (2), write out (2)"),
    "divergence": (12, "read v (2), write div (1)"),
    "pressure_gradient": (24, "read v (2), p (1), fluid mask (1), write out (2)"),
    "poisson_matvec": (12, "read p (1), fluid mask (1), write A·p (1)"),
    "pcg_iteration": (None, "no single byte model: a multi-level V-cycle plus torch vector updates"),
    "projection": (None, "no single byte model: boundary, divergence, a PCG solve of varying length, gradient"),
}
"""Kernel → (bytes per cell, what is counted)."""

ADVECTION = ("advect_semi_lagrangian", "advect_maccormack")
STENCIL = ("diffuse_explicit", "divergence", "pressure_gradient", "poisson_matvec")
PCG_ITERATIONS = 10
TORCH_PROJECTION_MAX = 512  # plain CG needs O(N) iterations: larger grids would take minutes per solve
STEP_KEYS = ("taichi_step_s", "taichi_fwd_bwd_4_s")
OTHERS = ("torch_eager", "torch_compile", "phiflow")
SKIP_COMPILE = "skipped in --quick (torch.compile start-up ~20 s per process)"


@dataclasses.dataclass
class Settings:
    """What one run measures."""

    arch: str
    sizes: list[int]
    quick: bool
    repeats: int
    budget_s: float  # per measurement: fewer repeats when one run is long
    karman_scales: list[int]
    smoke_sizes: list[int]
    compile: bool
    phiflow: bool
    copy_elements: int
    train_iterations: int
    cache: Path | None
    threads: int | None = None  # CPU threads of torch and Taichi (None: their defaults)
    max_call_s: float = 20.0  # an implementation slower than this per call is skipped at larger sizes
    precision: str = "f32"


# ------------------------------------------------------------------------------------------- helpers
def copy_bandwidth(s: Settings) -> dict:
    """Bytes/s of ``dst.copy_(src)`` for a large float32 tensor (read + write counted)."""
    rt = tdp.current()
    src = torch.rand(s.copy_elements, dtype=torch.float32, device=rt.device)
    dst = torch.empty_like(src)
    t = median_seconds(lambda: dst.copy_(src), max(3, s.repeats), warmup=2)
    nbytes = 2 * src.numel() * src.element_size()
    return {"bytes": nbytes, "seconds": t, "bytes_per_s": nbytes / t}


# ------------------------------------------------------------------------------------ level 1: kernels
def kernel_problem(n: int) -> dict:
    """The ``n × n`` channel of the kernel level: grid, boundary, obstacle, velocity, pressure, dt, ν."""
    rt = tdp.current()
    grid = Grid.rect((n, n), (1.0, 1.0))
    boundary = FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall())))
    fluid = disc(grid, (0.3, 0.5), 0.1)
    h = 1.0 / n
    gen = torch.Generator().manual_seed(0)
    yf = torch.arange(n + 1, dtype=torch.float64)[:, None] * h  # face / centre coordinates
    yc = yf + 0.5 * h
    vy = 1.0 + 0.5 * torch.sin(2 * math.pi * (yc.T - 0.5 * h)) * torch.sin(math.pi * yf)
    vx = 0.5 * torch.sin(math.pi * yf.T) * torch.cos(2 * math.pi * yc)
    v = torch.stack([vy, vx])[None].to(rt.dtype) + 0.05 * torch.randn(1, 2, n + 1, n + 1, generator=gen).to(rt.dtype)
    v = apply_boundary((v * valid_faces(grid, rt.dtype)).to(rt.device), grid, boundary, fluid).contiguous()
    dt = 1.5 * h
    return {
        "grid": grid,
        "boundary": boundary,
        "fluid": fluid,
        "open": open_faces(fluid, boundary).contiguous(),
        "v": v,
        "p": (torch.rand(1, 1, n, n, generator=gen).to(rt.dtype).to(rt.device) * fluid).contiguous(),
        "dt": torch.full((1,), dt, dtype=rt.dtype, device=rt.device),
        "nu": torch.full((1,), 0.1 * h * h / dt, dtype=rt.dtype, device=rt.device),
    }


def _taichi_kernels(k: dict) -> dict[str, Callable[[], Any] | str]:
    """The Taichi kernels of level 1 (or the reason one cannot be timed through the public API)."""
    g, bnd, fluid, v, p, dt, nu = k["grid"], k["boundary"], k["fluid"], k["v"], k["p"], k["dt"], k["nu"]
    codes = bnd.pressure().codes
    solver = solver_for(g, fluid, codes)
    rhs = (-pressure.apply_divergence(v, g)).contiguous()

    def pcg() -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotConvergedWarning)  # rtol 0: exactly PCG_ITERATIONS iterations
            return solver.solve(rhs, rtol=0.0, max_iter=PCG_ITERATIONS)

    return {
        "advect_semi_lagrangian": lambda: apply_velocity_advection(v, v, dt, g, bnd, "semi_lagrangian"),
        "advect_maccormack": lambda: apply_velocity_advection(v, v, dt, g, bnd, "maccormack"),
        "diffuse_explicit": lambda: apply_velocity_diffusion(v, nu, dt, g, bnd),
        "divergence": lambda: pressure.apply_divergence(v, g),
        "pressure_gradient": lambda: apply_subtract_gradient(v, p, g, fluid, codes),
        "poisson_matvec": lambda: apply_poisson(p, fluid, g, codes),
        "pcg_iteration": pcg,
        "projection": lambda: pressure.project(v, g, bnd, fluid, rtol=1e-3),
    }


def _torch_kernels(k: dict, compile: bool) -> dict[str, Callable[[], Any] | str]:
    """Plain-PyTorch counterparts (or the reason there is none)."""
    g, bnd, fluid, open_, v, p, dt, nu = (k[x] for x in ("grid", "boundary", "fluid", "open", "v", "p", "dt", "nu"))
    c = lambda fn: tf.maybe_compile(fn, compile)
    sl = c(lambda v: tf.velocity_advection(v, dt, g, bnd, "semi_lagrangian"))
    mc = c(lambda v: tf.velocity_advection(v, dt, g, bnd, "maccormack"))
    dif = c(lambda v: tf.velocity_diffusion(v, nu, dt, g, bnd))
    div = c(lambda v: tf.divergence(v, g))
    grad = c(lambda v, p: v - tf.gradient(p, g, bnd, open_))
    mat = c(lambda p: tf.poisson(p, g, bnd, fluid, open_))
    out: dict[str, Callable[[], Any] | str] = {
        "advect_semi_lagrangian": lambda: sl(v),
        "advect_maccormack": lambda: mc(v),
        "diffuse_explicit": lambda: dif(v),
        "divergence": lambda: div(v),
        "pressure_gradient": lambda: grad(v, p),
        "poisson_matvec": lambda: mat(p),
        "pcg_iteration": "no plain-PyTorch multigrid preconditioner (a plain CG iteration is a different algorithm)",
    }
    if g.shape[0] <= TORCH_PROJECTION_MAX:
        proj = tf.TorchProjection(g, bnd, fluid, 1e-3, compile=compile)
        out["projection"] = lambda: proj(v)
        out["_projection"] = proj  # type: ignore[assignment]
    else:
        out["projection"] = f"plain CG needs O(N) iterations: skipped above {TORCH_PROJECTION_MAX}²"
    return out


def bench_kernels(s: Settings, copy_bps: float) -> dict:
    """Level 1 rows (one per kernel and size) and the launch overhead."""
    rows = []
    itemsize = torch.empty((), dtype=tdp.current().dtype).element_size()
    too_slow: dict[tuple[str, str], str] = {}  # (impl, kernel) → reason to skip larger sizes
    for n in s.sizes:
        k = kernel_problem(n)
        ti_k = _taichi_kernels(k)
        impls = {"torch_eager": _torch_kernels(k, False)}
        if s.compile:
            impls["torch_compile"] = _torch_kernels(k, True)
        for name, fn in ti_k.items():
            bpc, _ = BYTE_MODELS[name]
            bpc = None if bpc is None else bpc * itemsize // 4  # the byte models count 4-byte floats
            row: dict[str, Any] = {"kernel": name, "n": n, "cells": n * n, "bytes_per_cell": bpc}
            if isinstance(fn, str):
                null(row, "taichi_s", fn)
            else:
                with torch.no_grad():
                    measure(row, "taichi_s", lambda fn=fn: timed(fn, s))
            if name in ("pcg_iteration", "projection"):
                row["iterations"] = linear_solve.last_solve.iterations
            else:
                null(row, "iterations", "not an iterative solve")
            if row["taichi_s"] is not None and name == "pcg_iteration":
                row["taichi_s"] /= PCG_ITERATIONS
            if BYTE_MODELS[name][0] is None:
                null(row, "bytes_per_s", BYTE_MODELS[name][1])
                null(row, "copy_fraction", BYTE_MODELS[name][1])
            elif row["taichi_s"] is None:
                null(row, "bytes_per_s", "taichi_s not measured")
                null(row, "copy_fraction", "taichi_s not measured")
            else:
                row["bytes_per_s"] = bpc * n * n / row["taichi_s"]
                row["copy_fraction"] = row["bytes_per_s"] / copy_bps
            for impl in OTHERS[:2]:
                key = f"{impl}_s"
                other = impls.get(impl, {}).get(name) if impl in impls else None
                if impl not in impls:
                    null(row, key, SKIP_COMPILE if s.quick else "--no-compile")
                elif isinstance(other, str):
                    null(row, key, other)
                elif (impl, name) in too_slow:
                    null(row, key, too_slow[impl, name])
                else:
                    warm = 3 if impl == "torch_compile" else 1
                    with torch.no_grad():
                        measure(row, key, lambda o=other, w=warm: timed(o, s, warmup=w))
                    if row[key] is not None and row[key] > s.max_call_s:
                        too_slow[impl, name] = f"skipped: {row[key]:.0f} s per call already at {n}² (> {s.max_call_s:.0f} s)"
                ratio(row, f"{impl.split('_')[1]}_over_taichi", key, "taichi_s")
            proj = impls["torch_eager"].get("_projection")
            if name == "projection" and proj is not None and row["torch_eager_s"] is not None:
                row["torch_cg_iterations"] = proj.iterations
            else:
                null(row, "torch_cg_iterations", "no plain-PyTorch CG solve in this row")
            if name in ADVECTION:
                measure(row, "backward_s", lambda name=name, k=k: _advection_backward(k, name, s))
                ratio(row, "backward_over_forward", "backward_s", "taichi_s")
            else:
                null(row, "backward_s", "backward timed for the advection kernels only")
                null(row, "backward_over_forward", "backward timed for the advection kernels only")
            rows.append(row)
            print(_kernel_line(row), flush=True)
        del k, ti_k, impls
    return {
        "byte_models": {k: {"bytes_per_cell": b, "counted": d} for k, (b, d) in BYTE_MODELS.items()},
        "pcg_iterations_per_timed_solve": PCG_ITERATIONS,
        "launch_overhead_us": launch_overhead_us(s),
        "launch_overhead_note": "one bridged Taichi op (divergence, forward) on a 4×4 grid, per call",
        "rows": rows,
    }


def _advection_backward(k: dict, name: str, s: Settings) -> float:
    scheme = "semi_lagrangian" if name == "advect_semi_lagrangian" else "maccormack"
    v = k["v"].clone().requires_grad_()
    out = apply_velocity_advection(v, v, k["dt"], k["grid"], k["boundary"], scheme)
    g = torch.randn_like(out)
    return timed(lambda: torch.autograd.grad(out, v, g, retain_graph=True), s)


def launch_overhead_us(s: Settings) -> float:
    """Microseconds per call of one small bridged Taichi op (forward, serial)."""
    rt = tdp.current()
    g = Grid.rect((4, 4))
    v = torch.zeros(1, 2, 5, 5, dtype=rt.dtype, device=rt.device)
    calls = 200

    def run() -> None:
        for _ in range(calls):
            pressure.apply_divergence(v, g)

    return 1e6 * median_seconds(run, max(3, s.repeats), warmup=1) / calls


def _kernel_line(r: dict) -> str:
    return (
        f"{r['kernel']:24s} {r['n']:5d}²  taichi {fmt_s(r['taichi_s']):>9s}  "
        f"{fmt_num(r['bytes_per_s'], 1e-9, 'GB/s'):>10s} {fmt_num(r['copy_fraction'], 100, '%'):>6s}  "
        f"eager {fmt_s(r['torch_eager_s']):>9s}  compile {fmt_s(r['torch_compile_s']):>9s}"
        + (f"  bwd {fmt_s(r['backward_s'])} (×{r['backward_over_forward']:.2f})" if r.get("backward_over_forward") else "")
    )


# ----------------------------------------------------------------------------------- level 2 + 4: steps
def step_workloads(s: Settings):
    """``(workload, grid label, cells, stepper, developed state)`` for every step workload."""
    sc = pbdl_burgers()
    yield "burgers", f"N={sc.stepper.grid.shape[0]}", sc.stepper.grid.shape[0], sc.stepper, sc.state0
    for scale in s.karman_scales:
        scene = karman(scale=scale, reynolds=200.0)
        h, w = scene.stepper.grid.shape
        with torch.no_grad():  # a developed wake, not the start-up transient
            v = rollout(scene.stepper, scene.state0, 5)[:, -1].contiguous()
        yield "karman", f"{w}x{h}", h * w, scene.stepper, v
    for n in s.smoke_sizes:
        scene = smoke_plume(n)
        st, state0 = scene.stepper, scene.state0
        with torch.no_grad():  # some smoke and motion
            state = rollout(st, state0, 10)[:, -1].contiguous()
        yield "smoke", f"{n}x{n}", n * n, st, state


def bench_steps(s: Settings) -> tuple[dict, dict]:
    """Levels 2 (taichi_dp) and 4 (the same workloads in plain PyTorch / torch.compile / PhiFlow)."""
    steps, comps = [], []
    phi_ok = s.phiflow and phiflow_karman.available()
    too_slow: dict[tuple[str, str], str] = {}  # (workload, impl) → reason to skip larger grids
    for workload, label, cells, st, u in step_workloads(s):
        row: dict[str, Any] = {"workload": workload, "grid": label, "cells": cells, "batch": u.shape[0]}
        measure(row, "taichi_step_s", lambda st=st, u=u: timed(fwd(st, u), s))
        flow = workload != "burgers"
        if flow:
            row["pressure_iterations"] = linear_solve.last_solve.iterations
        else:
            null(row, "pressure_iterations", "no pressure solve")
        measure(row, "taichi_fwd_bwd_4_s", lambda st=st, u=u: timed(fwd_bwd(st, u), s, repeats=max(1, s.repeats // 2 + 1)))
        row["launches_per_step"] = count_launches(fwd(st, u))
        row["launches_fwd_bwd_4"] = count_launches(fwd_bwd(st, u))
        steps.append(row)
        print(
            f"{workload:8s} {label:>8s}  step {fmt_s(row['taichi_step_s']):>9s}  "
            f"fwd+bwd(4) {fmt_s(row['taichi_fwd_bwd_4_s']):>9s}"
            f"  launches/step {row['launches_per_step']:4d}  (fwd+bwd(4) {row['launches_fwd_bwd_4']})"
            + (f"  PCG its {row['pressure_iterations']}" if flow else ""),
            flush=True,
        )

        comp: dict[str, Any] = {"workload": workload, "grid": label, "cells": cells}
        for key in STEP_KEYS:
            comp[key] = row[key]
        for impl in OTHERS[:2]:
            compiled = impl == "torch_compile"
            if compiled and not s.compile:
                for key in ("step_s", "fwd_bwd_4_s"):
                    null(comp, f"{impl}_{key}", SKIP_COMPILE if s.quick else "--no-compile")
                continue
            if (workload, impl) in too_slow:
                for key in ("step_s", "fwd_bwd_4_s"):
                    null(comp, f"{impl}_{key}", too_slow[workload, impl])
                continue
            try:
                pt = tf.torch_stepper(st, u.shape[0], compile=compiled)
            except Exception as e:
                for key in ("step_s", "fwd_bwd_4_s"):
                    null(comp, f"{impl}_{key}", f"failed: {type(e).__name__}: {e}")
                continue
            warm = 3 if compiled else 1
            measure(comp, f"{impl}_step_s", lambda pt=pt, w=warm, u=u: timed(fwd(pt, u), s, warmup=w))
            if not compiled:
                if flow:
                    comp["torch_cg_iterations"] = pt.projection.iterations
                with torch.no_grad():
                    a, b = pt(u), st(u)
                comp["step_rel_diff_torch_vs_taichi"] = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
            measure(
                comp,
                f"{impl}_fwd_bwd_4_s",
                lambda pt=pt, w=warm, u=u: timed(fwd_bwd(pt, u), s, warmup=w, repeats=max(1, s.repeats // 2 + 1)),
            )
            slow = comp.get(f"{impl}_fwd_bwd_4_s")
            if slow is not None and slow > s.max_call_s:
                too_slow[workload, impl] = f"skipped: fwd+bwd took {slow:.0f} s already at {label} (> {s.max_call_s:.0f} s)"
            del pt
        if not flow:
            null(comp, "torch_cg_iterations", "no pressure solve")
        elif "torch_cg_iterations" not in comp:
            null(comp, "torch_cg_iterations", "plain-PyTorch eager step not measured")
        if "step_rel_diff_torch_vs_taichi" not in comp:
            null(comp, "step_rel_diff_torch_vs_taichi", "plain-PyTorch eager step not measured")
        _phiflow_cells(comp, workload, st, s, phi_ok)
        for impl in OTHERS:
            for what, key in (("step", "step_s"), ("fwd_bwd", "fwd_bwd_4_s")):
                ratio(comp, f"{impl}_over_taichi_{what}", f"{impl}_{key}", f"taichi_{key}")
        comps.append(comp)
        print("          " + "  ".join(
            f"{impl} {fmt_s(comp[f'{impl}_step_s'])} / {fmt_s(comp[f'{impl}_fwd_bwd_4_s'])}" for impl in OTHERS
        ), flush=True)
    return {"rows": steps}, {"rows": comps}


def _phiflow_cells(comp: dict, workload: str, st: Any, s: Settings, available: bool) -> None:
    keys = ("phiflow_step_s", "phiflow_fwd_bwd_4_s")
    reason = None
    if workload != "karman":
        reason = "no PhiFlow version of this workload in benchmarks/ (benchmarks/phiflow_karman.py covers karman)"
    elif s.quick:
        reason = "skipped in --quick"
    elif not s.phiflow:
        reason = "--no-phiflow"
    elif not available:
        reason = "PhiFlow 3.4 not installed (pip install phiflow==3.4.0 phiml==1.16.0)"
    elif st.grid.shape == (512, 256):
        reason = "PhiFlow 3.4 overflows a 32-bit index building its pressure matrix at 256×512 (benchmarks/phiflow_karman.py)"
    if reason:
        for key in keys:
            null(comp, key, reason)
        return
    try:
        comp[keys[0]], comp[keys[1]] = phiflow_karman.karman_times(st.grid.shape[1], st.grid.shape[0], max(2, s.repeats))
    except Exception as e:
        for key in keys:
            null(comp, key, f"failed: {type(e).__name__}: {str(e)[:300]}")


# --------------------------------------------------------------------------------- level 3: training
def bench_training(s: Settings, cache: Path) -> dict:
    """SOL-k updates/s of the karman quick preset (:class:`~taichi_dp.learn.karman_experiment.KarmanExperiment`:
    its data, network, optimiser settings and training loop), and on one fixed batch the update split into
    solver and network time."""
    from taichi_dp.learn import train
    from taichi_dp.learn.experiment import windows
    from taichi_dp.learn.karman_experiment import KarmanExperiment, KarmanExperimentConfig

    cfg = KarmanExperimentConfig.preset("quick")
    variant = next((v for v in cfg.train.variants if v.startswith("SOL-")), "SOL-4")
    k = int(variant.split("-")[1])
    if s.quick:  # CI size: 2 Reynolds numbers, 2× reference, a few recorded steps, batch 2, no warm-up update
        d = cfg.data.train
        cfg.data.train = dataclasses.replace(d, reynolds=d.reynolds[:2], factor=2, warmup=2, steps=k + 4)
        cfg.train = dataclasses.replace(cfg.train, batch_size=2)
    exp = KarmanExperiment(cfg)
    t0 = time.perf_counter()
    data = exp.make_data("train", cache=cache, progress=False)
    datagen = time.perf_counter() - t0
    model = exp.make_model(cfg.train.seeds[0])
    batch_loss, n_samples = exp.loss(variant, model, data)
    optim = dataclasses.replace(cfg.train.budget("updates", cfg.train.seeds[0]), checkpoint_every=0)
    if not s.quick:
        train(model, batch_loss, n_samples, dataclasses.replace(optim, iterations=1), progress=False)  # compile, caches
    result = train(model, batch_loss, n_samples, dataclasses.replace(optim, iterations=s.train_iterations), progress=False)
    model.train()

    bsz = cfg.train.batch_size
    idx = torch.randint(0, n_samples, (bsz,), generator=torch.Generator().manual_seed(1))
    traj, window = windows(data.reference, k, idx)
    solver = exp.source(data.params[traj])
    cond = exp.condition(data.params[traj])
    base = exp.base

    def update() -> None:
        model.zero_grad()
        batch_loss(idx).backward()

    def solver_only() -> None:
        u0 = window[:, 0].contiguous().requires_grad_()
        ((rollout(solver, u0, k, include_initial=False) - window[:, 1:]) ** 2).mean().backward()

    def network_only() -> None:
        model.zero_grad()
        x, loss = window[:, 0], 0.0
        for i in range(k):
            x = x + model(x, **cond)
            loss = loss + ((x - window[:, i + 1]) ** 2).mean()
        loss.backward()

    row: dict[str, Any] = {
        "workload": f"karman {variant} update",
        "grid": f"{base.grid.shape[1]}x{base.grid.shape[0]}",
        "batch_size": bsz,
        "unroll": k,
        "model": f"{cfg.model.kind} width {cfg.model.width}, {sum(p.numel() for p in model.parameters())} parameters",
        "train_reynolds": list(cfg.data.train.reynolds),
        "data": f"factor {cfg.data.train.factor}, warmup {cfg.data.train.warmup}, steps {cfg.data.train.steps}",
        "datagen_s": datagen,
        "iterations_timed": len(result.losses),
        "seconds_per_iteration": result.seconds / len(result.losses),
        "iterations_per_s": len(result.losses) / result.seconds,
    }
    warm = 0 if s.quick else 1  # the training loop above already ran everything once
    measure(row, "sol_update_s", lambda: timed(update, s, warmup=warm))
    measure(row, "solver_s", lambda: timed(solver_only, s, warmup=warm))
    measure(row, "network_s", lambda: timed(network_only, s, warmup=warm))
    ratio(row, "solver_fraction", "solver_s", "sol_update_s")
    ratio(row, "network_fraction", "network_s", "sol_update_s")
    print(
        f"{row['workload']} ({row['grid']}, batch {bsz}): {row['iterations_per_s']:.2f} it/s "
        f"({fmt_s(row['seconds_per_iteration'])}/it); fixed batch: update {fmt_s(row['sol_update_s'])}, "
        f"solver {fmt_s(row['solver_s'])}, network {fmt_s(row['network_s'])}",
        flush=True,
    )
    return {"rows": [row]}


# ------------------------------------------------------------------------------------------- targets
def targets(res: dict) -> list[dict]:
    """The issue's performance targets, judged from this run's numbers (``met`` null: not measurable here)."""
    levels, arch = res["levels"], res["meta"]["arch"]
    krows = levels.get("kernels", {}).get("rows", [])
    crows = levels.get("comparison", {}).get("rows", [])
    out = []

    def add(name: str, met: bool | None, evidence: str) -> None:
        out.append({"target": name, "met": met, "evidence": evidence})

    big = [r for r in krows if r["n"] >= 2048 and r["kernel"] in ADVECTION + STENCIL and r["copy_fraction"] is not None]
    if big:
        worst = min(big, key=lambda r: r["copy_fraction"])
        add(
            ">= 60% of copy bandwidth for stencil and advection kernels at 2048²+",
            all(r["copy_fraction"] >= 0.6 for r in big),
            ", ".join(f"{r['kernel']} {r['n']}²: {100 * r['copy_fraction']:.0f}%" for r in big)
            + f" (worst {worst['kernel']})",
        )
    else:
        add(">= 60% of copy bandwidth for stencil and advection kernels at 2048²+", None, "no size >= 2048² in this run")

    pairs = [(f"{r['kernel']} {r['n']}²", r.get("compile_over_taichi")) for r in krows]
    for r in crows:
        pairs += [(f"{r['workload']} {r['grid']} step", r.get("torch_compile_over_taichi_step")),
                  (f"{r['workload']} {r['grid']} fwd+bwd", r.get("torch_compile_over_taichi_fwd_bwd"))]
    pairs = [(n, x) for n, x in pairs if x is not None]
    if pairs:
        slow = [f"{n} ×{x:.2f}" for n, x in pairs if x < 1]
        add("faster than torch.compile on every kernel and step", not slow,
            f"{len(pairs) - len(slow)}/{len(pairs)} faster; slower (compile time / taichi_dp time): " + "; ".join(slow)
            if slow else f"all {len(pairs)} faster")
    else:
        add("faster than torch.compile on every kernel and step", None, "torch.compile not measured in this run")

    lo = levels.get("kernels", {}).get("launch_overhead_us")
    if arch == "cuda" and lo is not None:
        add("launch overhead <= 15 µs per kernel on CUDA", lo <= 15, f"{lo:.1f} µs per bridged launch")
    else:
        add("launch overhead <= 15 µs per kernel on CUDA", None,
            f"arch is {arch}, not CUDA" + (f"; {lo:.1f} µs per bridged launch on {arch}" if lo is not None else ""))

    adv = [r for r in krows if r["kernel"] in ADVECTION and r.get("backward_over_forward") is not None]
    if adv:
        add("Taichi autodiff backward of advection <= 2× its forward", all(r["backward_over_forward"] <= 2 for r in adv),
            ", ".join(f"{r['kernel'].split('_', 1)[1]} {r['n']}²: ×{r['backward_over_forward']:.2f}" for r in adv))
    else:
        add("Taichi autodiff backward of advection <= 2× its forward", None, "not measured")

    phi = [(r, w) for r in crows for w in ("step", "fwd_bwd") if r.get(f"phiflow_over_taichi_{w}") is not None]
    if arch == "cpu" and phi:
        add(">= 20× PhiFlow on every step workload (CPU)", all(r[f"phiflow_over_taichi_{w}"] >= 20 for r, w in phi),
            ", ".join(f"{r['workload']} {r['grid']} {w}: ×{r[f'phiflow_over_taichi_{w}']:.1f}" for r, w in phi)
            + "; burgers and smoke have no PhiFlow version here")
    else:
        add(">= 20× PhiFlow on every step workload (CPU)", None, "PhiFlow not measured" if arch == "cpu" else "not CPU")

    eager = [(r, w) for r in crows if r["workload"] != "burgers" and r["cells"] >= 256 * 256
             for w in ("step", "fwd_bwd") if r.get(f"torch_eager_over_taichi_{w}") is not None]
    if arch == "cpu" and eager:
        met = all(r[f"torch_eager_over_taichi_{w}"] >= 1 for r, w in eager)
        add("not slower than eager PyTorch at 256² and above (CPU)", met,
            ", ".join(f"{r['workload']} {r['grid']} {w}: ×{r[f'torch_eager_over_taichi_{w}']:.2f}" for r, w in eager))
    else:
        add("not slower than eager PyTorch at 256² and above (CPU)", None, "no 2D step workload >= 256² measured in this run")
    return out


# ------------------------------------------------------------------------------------------ reporting
def markdown(res: dict) -> str:
    """All tables of a result as Markdown."""
    lv = res["levels"]
    lines = [
        f"{machine_line(res['meta'])} Copy bandwidth (`dst.copy_(src)`, {res['copy_bandwidth']['bytes'] / 2**20:.0f} MiB moved): "
        f"{res['copy_bandwidth']['bytes_per_s'] / 1e9:.2f} GB/s.",
        "",
    ]
    if "kernels" in lv:
        k = lv["kernels"]
        lines += [
            f"Kernels (launch overhead of one small bridged op: {k['launch_overhead_us']:.0f} µs; "
            f"PCG iteration = a {k['pcg_iterations_per_timed_solve']}-iteration solve / {k['pcg_iterations_per_timed_solve']}):",
            "",
            "| kernel | N² | taichi_dp | B/cell | GB/s | of copy BW | torch eager | torch.compile | eager/taichi | "
            "compile/taichi | backward (×fwd) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in k["rows"]:
            its = f" ({r['iterations']} its)" if r["kernel"] == "projection" and r["iterations"] else ""
            tits = f" ({r['torch_cg_iterations']} CG its)" if r.get("torch_cg_iterations") else ""
            bwd = f"{fmt_s(r['backward_s'])} (×{r['backward_over_forward']:.2f})" if r["backward_over_forward"] else "—"
            lines.append(
                f"| {r['kernel']} | {r['n']}² | {fmt_s(r['taichi_s'])}{its} | {r['bytes_per_cell'] or '—'} | "
                f"{fmt_num(r['bytes_per_s'], 1e-9)} | {fmt_num(r['copy_fraction'], 100, '%')} | "
                f"{fmt_s(r['torch_eager_s'])}{tits} | {fmt_s(r['torch_compile_s'])} | {fmt_ratio(r['eager_over_taichi'])} | "
                f"{fmt_ratio(r['compile_over_taichi'])} | {bwd} |"
            )
        lines.append("")
    if "steps" in lv:
        lines += [
            "Steps (fwd+bwd = loss summed over a 4-step unroll, gradient w.r.t. the initial state):",
            "",
            "| workload | grid | step | fwd+bwd (4) | launches/step | launches fwd+bwd (4) | PCG its |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in lv["steps"]["rows"]:
            lines.append(
                f"| {r['workload']} | {r['grid']} | {fmt_s(r['taichi_step_s'])} | {fmt_s(r['taichi_fwd_bwd_4_s'])} | "
                f"{r['launches_per_step']} | {r['launches_fwd_bwd_4']} | {r['pressure_iterations'] or '—'} |"
            )
        lines.append("")
    if "training" in lv:
        lines += [
            "Training (karman quick setup):",
            "",
            "| workload | grid | batch | it/s | per update (train loop) | update, fixed batch | solver (4 steps fwd+bwd) | "
            "network (4× fwd+bwd) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in lv["training"]["rows"]:
            lines.append(
                f"| {r['workload']} | {r['grid']} | {r['batch_size']} | {r['iterations_per_s']:.2f} | "
                f"{fmt_s(r['seconds_per_iteration'])} | {fmt_s(r['sol_update_s'])} | {fmt_s(r['solver_s'])} "
                f"({fmt_num(r['solver_fraction'], 100, '%')}) | {fmt_s(r['network_s'])} "
                f"({fmt_num(r['network_fraction'], 100, '%')}) |"
            )
        lines.append("")
    if "comparison" in lv:
        lines += [
            "Same workloads, other implementations (ratio = other time / taichi_dp time; > 1: taichi_dp faster; "
            "pressure_iterations: multigrid PCG for taichi_dp, plain CG for torch):",
            "",
            side_by_side(Record(**r) for r in res["records"]),
        ]
    lines += ["Targets:", "", "| target | met | evidence |", "|---|---|---|"]
    for t in res["targets"]:
        met = {True: "**met**", False: "**not met**", None: "n/a here"}[t["met"]]
        lines.append(f"| {t['target']} | {met} | {t['evidence']} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ main
LEVELS = ("kernels", "steps", "training", "comparison")


def comparison_records(comparison_rows: list[dict], step_rows: list[dict]) -> list[dict]:
    """The level-4 figures as harness records: step and 4-step fwd+bwd seconds per implementation, and the
    pressure iterations of taichi_dp (multigrid PCG) and plain PyTorch (plain CG)."""
    out: list[Record] = []
    for comp, step in zip(comparison_rows, step_rows):
        name, size = comp["workload"], comp["grid"]
        out += records_from_row(comp, name, size, {"step_s": "s", "fwd_bwd_4_s": "s"})
        if step.get("pressure_iterations") is not None:
            out.append(Record(name, size, "pressure_iterations", step["pressure_iterations"], "", "taichi"))
            cg = comp.get("torch_cg_iterations")
            out.append(Record(name, size, "pressure_iterations", cg, "", "torch_eager",
                              None if cg is not None else comp["null_reasons"].get("torch_cg_iterations")))
    return [r.as_dict() for r in out]


def settings(args: argparse.Namespace, arch: str) -> Settings:
    """Run settings from the command line (``--quick``: CI size)."""
    quick = args.quick
    default_sizes = [32] if quick else [256, 512, 1024, 2048] + ([4096] if arch != "cpu" else [])
    return Settings(
        arch=arch,
        sizes=args.sizes or default_sizes,
        quick=quick,
        repeats=args.repeats or (3 if quick else 5),
        budget_s=0.3 if quick else 8.0,
        karman_scales=args.karman_scales or ([1] if quick else [1, 2, 4, 8]),
        smoke_sizes=args.smoke_sizes or ([32] if quick else [64, 128, 256]),
        compile=(not quick or args.compile) and not args.no_compile,
        phiflow=not args.no_phiflow,
        copy_elements=(1 << 22) if quick else (1 << 26),
        train_iterations=1 if quick else 10,
        cache=Path(args.cache) if args.cache else None,
        threads=args.threads,
        max_call_s=args.max_call_s,
        precision=args.precision,
    )


def run(s: Settings, levels: tuple[str, ...] = LEVELS, json_path: str | None = None) -> dict:
    """Run the suite and return the result dictionary (also what ``--json`` writes; with ``json_path``
    the partial result is written after every level, ``meta.complete`` false until the end)."""

    def checkpoint() -> None:
        if json_path:
            write_json(json_path, res)

    tf.configure_compile()
    res: dict[str, Any] = {
        "suite": "taichi_dp benchmarks.run",
        "meta": metadata(s.arch, s.precision, threads=s.threads, quick=s.quick, sizes=s.sizes, repeats=s.repeats,
                         budget_s_per_measurement=s.budget_s, compile=s.compile),
    }
    t_start = time.perf_counter()
    res["copy_bandwidth"] = copy_bandwidth(s)
    print(f"copy bandwidth: {res['copy_bandwidth']['bytes_per_s'] / 1e9:.2f} GB/s", flush=True)
    res["levels"] = {}
    wall = res["meta"]["level_wall_s"] = {}
    if "kernels" in levels:
        t0 = time.perf_counter()
        res["levels"]["kernels"] = bench_kernels(s, res["copy_bandwidth"]["bytes_per_s"])
        wall["kernels"] = time.perf_counter() - t0
        checkpoint()
    if "steps" in levels or "comparison" in levels:
        t0 = time.perf_counter()
        steps, comparison = bench_steps(s)
        res["levels"]["steps"], res["levels"]["comparison"] = steps, comparison
        wall["steps+comparison"] = time.perf_counter() - t0
        checkpoint()
    if "training" in levels:
        t0 = time.perf_counter()
        if s.cache is not None:
            res["levels"]["training"] = bench_training(s, s.cache)
        else:
            with tempfile.TemporaryDirectory(prefix="taichi_dp_bench_") as tmp:
                res["levels"]["training"] = bench_training(s, Path(tmp))
        wall["training"] = time.perf_counter() - t0
    if "comparison" in res["levels"]:
        res["records"] = comparison_records(res["levels"]["comparison"]["rows"], res["levels"]["steps"]["rows"])
    close_meta(res["meta"], time.perf_counter() - t_start)
    res["targets"] = targets(res)
    return res


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the result dictionary."""
    ap = parser(__doc__, precisions=("f32", "f64"), sizes="kernel-level grid sizes N (N × N)", min_size=4,
                quick="CI size: tiny grids, few repeats, no torch.compile/PhiFlow", markdown=True)
    ap.add_argument("--karman-scales", type=at_least(1), nargs="+", default=None, help="karman grids 32·s × 64·s")
    ap.add_argument("--smoke-sizes", type=at_least(4), nargs="+", default=None, help="smoke grids n × n")
    ap.add_argument("--levels", nargs="+", choices=LEVELS, default=list(LEVELS))
    ap.add_argument("--compile", action="store_true", help="time torch.compile even with --quick")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--no-phiflow", action="store_true", help="skip PhiFlow even when importable")
    ap.add_argument("--max-call-s", type=positive_float, default=20.0,
                    help="skip an implementation at larger sizes once one call took longer than this")
    ap.add_argument("--cache", default=None, help="karman training-data cache folder (default: a temporary one)")
    args = parse(ap, argv)
    rt = start(args)
    s = settings(args, rt.arch)
    res = run(s, tuple(args.levels), args.out)
    finish(res, markdown(res), args.out, args.markdown)
    return res


if __name__ == "__main__":
    main()
