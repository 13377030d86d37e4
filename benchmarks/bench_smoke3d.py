"""3D smoke benchmark: taichi_dp, the same step in plain PyTorch (eager and ``torch.compile``) and PhiFlow 3.4,
side by side in one process (float32, CPU), plus PCG iterations and the memory of gradient checkpointing.

    python -m benchmarks.bench_smoke3d [--sizes 32 64 128] [--repeats R] [--out|--json PATH] [--markdown PATH]
                                       [--no-phiflow] [--no-compile] [--quick] [--threads T] [--arch cpu]

Command line, metadata, timing and output: :mod:`benchmarks.harness`.

The workload is :func:`taichi_dp.scenes.smoke_plume_3d` (closed 100³ box, no-slip walls, inviscid, solid
sphere r = 14 at the centre, spherical source r = 8 near the floor, buoyancy 0.5 along +y, dt = 1;
density by the conservative flux form, velocity semi-Lagrangian, projection by multigrid-PCG to the
scene's rtol 1e-4), developed by :data:`WARMUP_STEPS` steps from rest so the smoke moves. For every
size ``n`` (``n³`` cells):

- taichi_dp: one forward step, and forward + backward of a 4-step unroll (loss = sum of the 4 states,
  gradient w.r.t. the initial state), median wall time (:func:`benchmarks.harness.timed`); PCG iterations of
  the step's projection (``taichi_dp.ops.linear_solve.last_solve.iterations``) and during the warm-up;
  Taichi launches per step;
- plain PyTorch, eager and compiled (:mod:`benchmarks.torch_flow`: the test references' n-D advection,
  matrix-free plain CG to the same rtol, implicit-adjoint backward) on the same developed state; the
  largest difference of its step from taichi_dp's (relative to the largest value) and its CG iterations;
- PhiFlow 3.4 (:mod:`benchmarks.phiflow_smoke3d`: the same scene as closely as PhiFlow allows, jit
  compiled, its own warm-up from rest), with its CG iterations checked outside jit.

Then: the iterations of one pressure solve with rtol 1e-5 at :data:`TIGHT_SIZE`³ on the developed scene,
and the peak memory (peak-RSS growth, each configuration in a fresh subprocess as
:mod:`benchmarks.bench_memory` does) of a 16-step forward + backward at 64³ with and without gradient
checkpointing (``rollout(..., checkpoint_every=4)``).

A figure that could not be measured is ``null`` with its reason in ``null_reasons`` (as
:mod:`benchmarks.run`): PhiFlow 3.4 cannot assemble its pressure matrix above 35³; a plain-PyTorch or
PhiFlow call predicted (from the previous size, × (n'/n)⁴: cells × CG iterations or flux sub-steps) to
take longer than ``--max-call-s``, or a plain-PyTorch forward + backward whose autograd memory is
predicted the same way to exceed 60% of the machine's memory, is skipped. ``--quick`` is the CI size:
a 12³ grid, few repeats, no ``torch.compile`` and no PhiFlow, a 4-step memory run. Without ``--json``
a full run writes ``benchmarks/results/smoke3d_<arch>_<date>.json`` (and ``.md``).

The full run (quiet 2-core machine: roughly 40 minutes, most of it torch.compile start-up and the
plain-PyTorch and PhiFlow runs at 32³-64³; taichi_dp itself takes a few minutes)::

    python -m benchmarks.bench_smoke3d --sizes 32 64 128

On a machine shared with other work, use ``--threads 1``: with two threads each, torch's and Taichi's
thread pools wait on descheduled workers, and single calls were measured 10-60× slower than their
median (a 32³ taichi_dp step 260 ms with 2 threads vs 21 ms with 1 on the loaded 2-core box).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import taichi_dp as tdp
from benchmarks import phiflow_smoke3d
from benchmarks import torch_flow as tf
from benchmarks.harness import (
    RESULTS,
    ROOT,
    Record,
    apply_threads,
    at_least,
    close_meta,
    count_launches,
    finish,
    fmt_mb,
    fmt_ratio,
    fmt_s,
    fwd,
    fwd_bwd,
    machine_line,
    measure,
    metadata,
    null,
    parse,
    parser,
    positive_float,
    ratio,
    records_from_row,
    start,
    timed,
    write_json,
)
from taichi_dp.ops import linear_solve
from taichi_dp.ops.solve_options import SolveOptions
from taichi_dp.scenes import smoke_plume_3d
from taichi_dp.solvers import rollout

WARMUP_STEPS = 10
"""Steps from rest before anything is timed (the smoke has risen a few cells and the flow moves)."""
TIGHT_RTOL = 1e-5
TIGHT_SIZE = 128
MEMORY_SIZE, MEMORY_STEPS, CHECKPOINT_EVERY = 64, 16, 4
QUICK_SIZE = 12  # the smallest grid whose cell centres fall inside the r = 8 source (8³ has none)
UNROLL = 4
OTHERS = ("torch_eager", "torch_compile", "phiflow")
SKIP_COMPILE = "skipped in --quick (torch.compile start-up ~20 s per process)"


@dataclasses.dataclass
class Settings:
    """What one run measures (``repeats`` and ``budget_s``: :func:`benchmarks.harness.timed`)."""

    arch: str
    sizes: list[int]
    quick: bool
    repeats: int
    budget_s: float  # per measurement: fewer repeats when one run is long
    compile: bool
    phiflow: bool
    max_call_s: float  # skip a measurement whose single call is predicted or measured to take longer
    tight_size: int
    memory_size: int
    memory_steps: int
    checkpoint_every: int
    threads: int | None = None
    precision: str = "f32"


# ------------------------------------------------------------------------------------------ helpers
def developed(n: int, pressure: SolveOptions | None = None) -> tuple[Any, torch.Tensor, list[int]]:
    """The ``n³`` scene's stepper, its state after :data:`WARMUP_STEPS` steps from rest, and the PCG
    iterations of every warm-up step."""
    scene = smoke_plume_3d(n) if pressure is None else smoke_plume_3d(n, pressure=pressure)
    u, its = scene.state0, []
    with torch.no_grad():
        for _ in range(WARMUP_STEPS):
            u = scene.stepper(u)
            its.append(linear_solve.last_solve.iterations)
    return scene.stepper, u.contiguous(), its


class Skips:
    """Per implementation and measurement: the last measured ``(n, seconds)`` (and for a forward + backward
    the autograd memory), to skip larger sizes whose single call is predicted to exceed the time cap
    (× (n'/n)⁴: cells × CG iterations, or cells × flux sub-steps) or the memory cap (× (n'/n)⁴ as well:
    cells × flux sub-steps, each sub-step's intermediates saved)."""

    def __init__(self, cap: float, memory_cap_mb: float) -> None:
        self.cap, self.memory_cap_mb = cap, memory_cap_mb
        self.last: dict[str, tuple[int, float]] = {}
        self.memory: dict[str, tuple[int, float]] = {}

    def reason(self, key: str, n: int, memory_key: str | None = None) -> str | None:
        """Why to skip measurement ``key`` at ``n³`` (``None``: run it); ``memory_key``: whose recorded
        memory predicts this one's."""
        if key in self.last:
            n0, t0 = self.last[key]
            predicted = t0 * (n / n0) ** 4
            if predicted > self.cap:
                return (f"skipped: predicted ~{predicted:.0f} s per call from {t0:.2f} s at {n0}³ × ({n}/{n0})⁴ "
                        f"(cells × CG iterations) > the {self.cap:.0f} s cap (--max-call-s)")
        memory_key = memory_key or key
        if memory_key in self.memory:
            n0, mb = self.memory[memory_key]
            predicted = mb * (n / n0) ** 4
            if predicted > self.memory_cap_mb:
                return (f"skipped: autograd would save ~{predicted / 1024:.0f} GiB (predicted from {mb:.0f} MiB at "
                        f"{n0}³ × ({n}/{n0})⁴, cells × flux sub-steps) > {self.memory_cap_mb / 1024:.0f} GiB "
                        "(60% of this machine's memory)")
        return None

    def record(self, key: str, n: int, seconds: float | None, saved_mb: float | None = None) -> None:
        if seconds is not None:
            self.last[key] = (n, seconds)
        if saved_mb is not None:
            self.memory[key] = (n, saved_mb)


# ------------------------------------------------------------------------------------ per-size rows
def bench_size(s: Settings, n: int, skips: Skips, states: dict[int, torch.Tensor]) -> dict:
    """One row: taichi_dp, plain PyTorch eager / compiled and PhiFlow at ``n³``."""
    row: dict[str, Any] = {"n": n, "grid": f"{n}³", "cells": n**3, "warmup_steps": WARMUP_STEPS}
    t0 = time.perf_counter()
    st, u, warm_its = developed(n)
    row["warmup_s"] = time.perf_counter() - t0
    states[n] = u
    row["pressure_rtol"] = st.flow.pressure.rtol
    row["pcg_iterations_warmup"] = warm_its
    measure(row, "taichi_step_s", lambda: timed(fwd(st, u), s))
    row["pcg_iterations"] = linear_solve.last_solve.iterations  # of the last timed step's projection
    saved: dict = {}
    measure(row, "taichi_fwd_bwd_4_s", lambda: timed(fwd_bwd(st, u, UNROLL, saved), s, repeats=max(1, s.repeats // 2 + 1)))
    _saved(row, "taichi", saved)
    row["launches_per_step"] = count_launches(fwd(st, u))
    print(f"{row['grid']:>5s}  taichi_dp  step {fmt_s(row['taichi_step_s']):>9s}  fwd+bwd(4) "
          f"{fmt_s(row['taichi_fwd_bwd_4_s']):>9s}  PCG its {row['pcg_iterations']}  launches/step "
          f"{row['launches_per_step']}", flush=True)

    for impl in ("torch_eager", "torch_compile"):
        _torch_cells(row, s, impl, st, u, skips)
    _phiflow_cells(row, s, skips)
    for impl in OTHERS:
        for what, key in (("step", "step_s"), ("fwd_bwd", "fwd_bwd_4_s")):
            ratio(row, f"{impl}_over_taichi_{what}", f"{impl}_{key}", f"taichi_{key}")
    print("       " + "  ".join(f"{impl} {fmt_s(row[f'{impl}_step_s'])} / {fmt_s(row[f'{impl}_fwd_bwd_4_s'])}"
                               for impl in OTHERS), flush=True)
    return row


def _torch_cells(row: dict, s: Settings, impl: str, st: Any, u: torch.Tensor, skips: Skips) -> None:
    compiled = impl == "torch_compile"
    keys = (f"{impl}_step_s", f"{impl}_fwd_bwd_4_s")
    if compiled and not s.compile:
        for key in (*keys, f"{impl}_autograd_saved_mb"):
            null(row, key, SKIP_COMPILE if s.quick else "--no-compile")
        return
    n = row["n"]
    try:
        pt = tf.torch_stepper(st, u.shape[0], compile=compiled)
    except Exception as e:
        for key in (*keys, f"{impl}_autograd_saved_mb"):
            null(row, key, f"failed: {type(e).__name__}: {e}")
        return
    warm = 3 if compiled else 1
    reason = skips.reason(keys[0], n)
    if reason:
        null(row, keys[0], reason)
    else:
        if not compiled:  # the honesty check: the same step (the two pressure solves differ within their rtol)
            try:
                with torch.no_grad():
                    a, b = pt(u), st(u)
                row["step_rel_diff_torch_vs_taichi"] = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                row["torch_cg_iterations"] = pt.projection.iterations
            except Exception as e:
                for key in ("step_rel_diff_torch_vs_taichi", "torch_cg_iterations"):
                    null(row, key, f"failed: {type(e).__name__}: {str(e)[:300]}")
        measure(row, keys[0], lambda: timed(fwd(pt, u), s, warmup=warm))
        skips.record(keys[0], n, row[keys[0]])
    if not compiled and "step_rel_diff_torch_vs_taichi" not in row:
        for key in ("step_rel_diff_torch_vs_taichi", "torch_cg_iterations"):
            null(row, key, "plain-PyTorch eager step not run: " + (reason or "see its null reason"))
    # autograd memory: measured in eager mode (saved-tensor hooks would change what torch.compile traces);
    # the compiled fwd+bwd is skipped when the eager one is predicted not to fit
    reason = skips.reason(keys[1], n, memory_key="torch_eager_fwd_bwd_4_s")
    saved: dict = {"why": reason} if reason else {} if not compiled else {"why": "measured for eager mode only"}
    if reason:
        null(row, keys[1], reason)
    else:
        measure(row, keys[1], lambda: timed(fwd_bwd(pt, u, UNROLL, None if compiled else saved), s, warmup=warm,
                                            repeats=max(1, s.repeats // 2 + 1)))
        skips.record(keys[1], n, row[keys[1]], saved.get("mb"))
    _saved(row, impl, saved)


def _saved(row: dict, impl: str, saved: dict) -> None:
    """``row[f"{impl}_autograd_saved_mb"]``: what :func:`benchmarks.harness.fwd_bwd` recorded, or null with the reason."""
    key = f"{impl}_autograd_saved_mb"
    if "mb" in saved:
        row[key] = saved["mb"]
    else:
        null(row, key, saved.get("why", "forward + backward not measured"))


def _phiflow_cells(row: dict, s: Settings, skips: Skips) -> None:
    n = row["n"]
    keys = ("phiflow_step_s", "phiflow_fwd_bwd_4_s", "phiflow_cg_iterations")
    reason = None
    if s.quick:
        reason = "skipped in --quick"
    elif not s.phiflow:
        reason = "--no-phiflow"
    elif not phiflow_smoke3d.available():
        reason = "PhiFlow 3.4 not installed (pip install phiflow==3.4.0 phiml==1.16.0)"
    else:
        reason = phiflow_smoke3d.unsupported_reason(n) or skips.reason("phiflow_step_s", n)
    if reason:
        for key in keys:
            null(row, key, reason)
        return
    try:
        out = phiflow_smoke3d.smoke3d_times(
            n, max(2, s.repeats), warmup_steps=WARMUP_STEPS, rtol=row["pressure_rtol"], budget_s=s.budget_s,
            max_call_s=s.max_call_s,
        )
    except Exception as e:
        print(f"  ! phiflow {n}³: {type(e).__name__}: {e}", file=sys.stderr)
        for key in keys:
            null(row, key, f"{'skipped' if isinstance(e, phiflow_smoke3d.TooSlow) else 'failed'}: "
                           f"{type(e).__name__}: {str(e)[:300]}")
        return
    row["phiflow_step_s"] = out["step_s"]
    skips.record("phiflow_step_s", n, out["step_s"])
    if out["fwd_bwd_4_s"] is None:
        null(row, "phiflow_fwd_bwd_4_s", out.get("fwd_bwd_skipped", "not measured"))
    else:
        row["phiflow_fwd_bwd_4_s"] = out["fwd_bwd_4_s"]
    row["phiflow_cg_iterations"] = out.get("cg_iterations")
    for key in ("cg_converged", "cg_iterations_backward", "cg_converged_backward", "max_abs_divergence_after_step",
                "trace_s", "wall_s"):
        row[f"phiflow_{key}"] = out.get(key)


# -------------------------------------------------------------------------------- tight pressure solve
def tight_solve(s: Settings, states: dict[int, torch.Tensor]) -> dict:
    """Iterations of the projection of one step with rtol :data:`TIGHT_RTOL` at ``tight_size³``, from the
    developed state of that size (developed here if the size had no row)."""
    n = s.tight_size
    out: dict[str, Any] = {"n": n, "grid": f"{n}³", "rtol": TIGHT_RTOL}
    try:
        options = SolveOptions(rtol=TIGHT_RTOL)
        st = smoke_plume_3d(n, pressure=options).stepper
        if n in states:
            u = states[n]
            out["state"] = f"the row's state after {WARMUP_STEPS} steps (rtol {st.flow.pressure.rtol:g} is only this step's)"
        else:
            _, u, _ = developed(n)
            out["state"] = f"developed here: {WARMUP_STEPS} steps of the default scene"
        with torch.no_grad():
            st(u)  # compile; then the measured step
            t = time.perf_counter()
            st(u)
            out["step_s"] = time.perf_counter() - t
        info = linear_solve.last_solve
        out.update(iterations=info.iterations, relative_residual=info.residual, converged=info.converged)
    except Exception as e:
        print(f"  ! tight solve {n}³: {type(e).__name__}: {e}", file=sys.stderr)
        for key in ("iterations", "relative_residual", "converged", "step_s"):
            null(out, key, f"failed: {type(e).__name__}: {str(e)[:300]}")
    print(f"tight solve {n}³ rtol {TIGHT_RTOL:g}: {out.get('iterations')} PCG iterations "
          f"(residual {out.get('relative_residual')}), step {fmt_s(out.get('step_s'))}", flush=True)
    return out


# --------------------------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` figure in kB (``VmRSS``, ``VmHWM``), ``None`` where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS (Linux ≥ 4.0: ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def memory_child(n: int, steps: int, every: int, threads: int | None) -> dict:
    """In a fresh process: peak RSS growth and wall time of a ``steps``-step forward + backward at ``n³``
    with ``checkpoint_every=every`` (0: every step stored), after a warm-up that compiles every kernel
    (a 2-step forward + backward in the same mode). The peak is reset after the warm-up (Taichi's kernel
    compilation alone peaks above a small run's graph), the growth measured from the RSS before the run;
    without ``/proc/self/clear_refs`` it falls back to ``ru_maxrss`` (growth over the warm-up's peak,
    as :mod:`benchmarks.bench_memory`). Run with ``MALLOC_MMAP_THRESHOLD_`` fixed by the parent so
    that freed tensors go back to the OS instead of staying in the heap."""
    import gc

    apply_threads(threads)
    tdp.init("cpu", "f32")  # peak RSS: the CPU arch's memory
    st, u, _ = developed(n)
    u0 = u.clone().requires_grad_()
    rollout(st, u0, 2, include_initial=False, checkpoint_every=min(every, 1)).sum().backward()
    del u0
    gc.collect()
    rss = _status_kb("VmRSS")
    reset = rss is not None and _reset_peak()
    base = rss if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    u0 = u.clone().requires_grad_()
    t = time.perf_counter()
    rollout(st, u0, steps, include_initial=False, checkpoint_every=every).sum().backward()
    seconds = time.perf_counter() - t
    peak = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "n": n,
        "steps": steps,
        "checkpoint_every": every,
        "seconds": seconds,
        "peak_rss_growth_mb": max(peak - base, 0) / 1024,  # a few kB below 0 happen on tiny runs (page accounting)
        "peak_rss_mb": peak / 1024,
        "baseline_rss_mb": base / 1024,
        "peak_method": "VmHWM after a reset (clear_refs) − VmRSS before" if reset else "ru_maxrss growth over the warm-up",
        "state_mb": u.numel() * u.element_size() / 2**20,
        "grad_finite": bool(torch.isfinite(u0.grad).all()),
    }


def bench_memory(s: Settings) -> dict:
    """Each ``checkpoint_every`` in {0, k} in its own subprocess (so its peak RSS is its own)."""
    out: dict[str, Any] = {"n": s.memory_size, "grid": f"{s.memory_size}³", "steps": s.memory_steps,
                           "method": "peak-RSS growth over the RSS before the run, after a 2-step warm-up (fresh "
                                     "subprocess per configuration, as benchmarks/bench_memory.py)", "rows": []}
    for every in (0, s.checkpoint_every):
        cmd = [sys.executable, "-m", "benchmarks.bench_smoke3d", "--memory-child", str(s.memory_size), str(s.memory_steps),
               str(every)] + (["--threads", str(s.threads)] if s.threads else [])
        row: dict[str, Any] = {"checkpoint_every": every}
        try:
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}  # tensors ≥ 1 MiB: mmap, freed to the OS
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=ROOT,
                                  env=env)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        except Exception as e:
            print(f"  ! memory checkpoint_every={every}: {type(e).__name__}: {e}", file=sys.stderr)
            for key in ("seconds", "peak_rss_growth_mb"):
                null(row, key, f"failed: {type(e).__name__}: {str(e)[:300]}")
        out["rows"].append(row)
        print(f"memory {s.memory_size}³ {s.memory_steps}-step fwd+bwd checkpoint_every={every}: peak "
              f"+{fmt_mb(row.get('peak_rss_growth_mb'))}, {fmt_s(row.get('seconds'))}", flush=True)
    a, b = (r.get("peak_rss_growth_mb") for r in out["rows"])
    if a is not None and b:
        out["memory_ratio_without_over_with"] = a / b
    else:
        null(out, "memory_ratio_without_over_with", "a peak not measured (or zero growth)")
    return out


# ------------------------------------------------------------------------------------------ reporting
def markdown(res: dict) -> str:
    """The tables of a result as Markdown."""
    lines = [
        machine_line(res["meta"]),
        "",
        f"3D smoke (`smoke_plume_3d`, after {WARMUP_STEPS} warm-up steps; fwd+bwd = loss summed over a {UNROLL}-step "
        "unroll, gradient w.r.t. the initial state; ratio = other time / taichi_dp time, > 1: taichi_dp faster):",
        "",
        "| grid | taichi_dp step / fwd+bwd | PCG its | torch eager | torch.compile | PhiFlow 3.4 | eager ratio | "
        "compile ratio | PhiFlow ratio | torch CG its | PhiFlow CG its | torch vs taichi step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        cell = lambda i, r=r: f"{fmt_s(r[f'{i}_step_s'])} / {fmt_s(r[f'{i}_fwd_bwd_4_s'])}"
        rat = lambda i, r=r: f"{fmt_ratio(r[f'{i}_over_taichi_step'])} / {fmt_ratio(r[f'{i}_over_taichi_fwd_bwd'])}"
        diff = r.get("step_rel_diff_torch_vs_taichi")
        lines.append(
            f"| {r['grid']} | {cell('taichi')} | {r['pcg_iterations']} | {cell('torch_eager')} | {cell('torch_compile')} | "
            f"{cell('phiflow')} | {rat('torch_eager')} | {rat('torch_compile')} | {rat('phiflow')} | "
            f"{r.get('torch_cg_iterations') or '—'} | {r.get('phiflow_cg_iterations') or '—'} | "
            f"{'—' if diff is None else f'{diff:.1e}'} |"
        )
    reasons = {}
    for r in res["rows"]:
        for key, why in r.get("null_reasons", {}).items():
            if "_over_taichi_" not in key:  # a ratio is null because one of its figures is
                reasons.setdefault(why, []).append(f"{r['grid']} {key}")
    if reasons:
        lines += ["", "Not measured:", ""] + [f"- {', '.join(where)}: {why}" for why, where in reasons.items()]
    t = res.get("tight_solve")
    if t:
        lines += ["", f"One pressure solve at {t['grid']} with rtol {t['rtol']:g} ({t.get('state', '')}): "
                      f"{t.get('iterations', '—')} PCG iterations, relative residual {t.get('relative_residual')}, "
                      f"step {fmt_s(t.get('step_s'))}."]
    mem = res.get("memory")
    if mem:
        lines += ["", f"Memory of a {mem['steps']}-step forward + backward at {mem['grid']} ({mem['method']}):", "",
                  "| checkpoint_every | peak RSS growth | time | one state |", "|---|---|---|---|"]
        for r in mem["rows"]:
            lines.append(f"| {r['checkpoint_every'] or 'off (every step stored)'} | "
                         f"{fmt_mb(r.get('peak_rss_growth_mb'))} | {fmt_s(r.get('seconds'))} | "
                         f"{fmt_mb(r.get('state_mb'))} |")
    return "\n".join(lines) + "\n"


def records(rows: list[dict]) -> list[dict]:
    """The rows as harness records: step and 4-step fwd+bwd seconds per implementation, pressure iterations
    (taichi_dp multigrid PCG, plain-PyTorch CG, PhiFlow CG)."""
    out: list[Record] = []
    for row in rows:
        out += records_from_row(row, "smoke3d", row["grid"], {"step_s": "s", "fwd_bwd_4_s": "s"})
        reasons = row.get("null_reasons", {})
        for impl, key in (("taichi", "pcg_iterations"), ("torch_eager", "torch_cg_iterations"),
                          ("phiflow", "phiflow_cg_iterations")):
            value = row.get(key)
            out.append(Record("smoke3d", row["grid"], "pressure_iterations", value, "", impl,
                              None if value is not None else reasons.get(key, "not measured")))
    return [r.as_dict() for r in out]


# ------------------------------------------------------------------------------------------------ main
def settings(args: argparse.Namespace, arch: str) -> Settings:
    quick = args.quick
    sizes = args.sizes or ([QUICK_SIZE] if quick else [32, 64, 128])
    return Settings(
        arch=arch,
        sizes=sizes,
        quick=quick,
        repeats=args.repeats or (2 if quick else 5),
        budget_s=0.3 if quick else 8.0,
        compile=not quick and not args.no_compile,
        phiflow=not args.no_phiflow,
        max_call_s=args.max_call_s,
        tight_size=args.tight_size or (max(sizes) if quick else TIGHT_SIZE),
        memory_size=args.memory_size or (max(sizes) if quick else MEMORY_SIZE),
        memory_steps=args.memory_steps or (4 if quick else MEMORY_STEPS),
        checkpoint_every=args.checkpoint_every or (2 if quick else CHECKPOINT_EVERY),
        threads=args.threads,
        precision=args.precision,
    )


def run(s: Settings, json_path: str | None = None) -> dict:
    """Run the benchmark; with ``json_path`` the partial result is written after every part
    (``meta.complete`` false until the end)."""

    def checkpoint() -> None:
        if json_path:
            write_json(json_path, res)

    tf.configure_compile()
    t_start = time.perf_counter()
    res: dict[str, Any] = {
        "suite": "taichi_dp benchmarks.bench_smoke3d",
        "meta": metadata(
            s.arch, s.precision, threads=s.threads, quick=s.quick, settings=dataclasses.asdict(s),
            scene="taichi_dp.scenes.smoke_plume_3d(n) (defaults: obstacle, flux density advection, "
                  "semi-Lagrangian velocity, mgpcg rtol 1e-4)",
            warmup_steps=WARMUP_STEPS, unroll=UNROLL,
        ),
        "rows": [],
    }
    memory_gb = res["meta"]["machine"]["memory_gb"] or 16.0
    skips = Skips(s.max_call_s, 0.6 * memory_gb * 1024)
    states: dict[int, torch.Tensor] = {}
    for n in s.sizes:
        res["rows"].append(bench_size(s, n, skips, states))
        checkpoint()
    res["tight_solve"] = tight_solve(s, states)
    states.clear()
    checkpoint()
    res["memory"] = bench_memory(s)
    res["records"] = records(res["rows"])
    close_meta(res["meta"], time.perf_counter() - t_start)
    checkpoint()
    return res


def main(argv: list[str] | None = None) -> dict | None:
    """Command-line entry point; returns the result dictionary (``None`` in a memory child)."""
    ap = parser(__doc__, sizes="grid sizes n (n³ cells; default 32 64 128)", min_size=QUICK_SIZE, markdown=True,
                quick=f"CI size: {QUICK_SIZE}³, few repeats, no torch.compile/PhiFlow",
                out="write every figure here as JSON (default for a full run: benchmarks/results/)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--no-phiflow", action="store_true", help="skip PhiFlow even when importable")
    ap.add_argument("--max-call-s", type=positive_float, default=120.0,
                    help="skip a measurement whose single call is predicted or measured to exceed this (default 120)")
    ap.add_argument("--tight-size", type=at_least(QUICK_SIZE), default=None,
                    help=f"grid of the rtol {TIGHT_RTOL:g} solve (default {TIGHT_SIZE})")
    ap.add_argument("--memory-size", type=at_least(QUICK_SIZE), default=None,
                    help=f"grid of the memory run (default {MEMORY_SIZE})")
    ap.add_argument("--memory-steps", type=at_least(1), default=None, help=f"steps of the memory run (default {MEMORY_STEPS})")
    ap.add_argument("--checkpoint-every", type=at_least(1), default=None,
                    help=f"checkpoint chunk (default {CHECKPOINT_EVERY})")
    ap.add_argument("--memory-child", type=int, nargs=3, default=None, help=argparse.SUPPRESS)
    args = parse(ap, argv)
    if args.memory_child is not None:
        print(json.dumps(memory_child(*args.memory_child, args.threads)))
        return None
    rt = start(args)
    s = settings(args, rt.arch)
    json_path, md_path = args.out, args.markdown
    if json_path is None and not s.quick:
        stem = RESULTS / f"smoke3d_{rt.arch}_{datetime.date.today().isoformat()}"
        json_path, md_path = str(stem.with_suffix(".json")), md_path or str(stem.with_suffix(".md"))
    res = run(s, json_path)
    finish(res, markdown(res), json_path, md_path)
    return res


if __name__ == "__main__":
    main()
