"""The 3D smoke workload in PhiFlow 3.4 (optional: ``pip install -e .[bench]``), for side-by-side timing.

The scene of :func:`taichi_dp.scenes.smoke_plume_3d` as closely as PhiFlow allows: a closed ``100³`` box
(velocity 0 on every wall: no-slip), inviscid, ``dt = 1`` on an ``n³`` grid; a solid sphere of radius 14
at (50, 50, 50) (``Obstacle``); a spherical source of radius 8 at (x, y, z) = (50, 12, 50) adding 0.2 per
unit time to the cells whose centre lies inside (a hard mask, as taichi_dp's); buoyancy 0.5 along +y. One
step in taichi_dp's order: the density advected by the current velocity, the source added (density
kept 0 inside the obstacle), the buoyancy ``0.5 ρ`` resampled to the staggered y faces and added, the
velocity self-advected semi-Lagrangian, projected by ``fluid.make_incompressible`` with plain CG to the
same relative tolerance (``‖r‖ ≤ rtol ‖b‖``, abs. tol 0; taichi_dp's 3D scenes use 1e-4). Float32,
PhiFlow's torch backend, the step ``math.jit_compile``-d, the gradient ``math.gradient`` of a loss over
4 jit-compiled steps (as :mod:`benchmarks.phiflow_karman`).

Differences that PhiFlow does not let us remove:

- density advection: taichi_dp's scene uses its conservative flux form (MC-limited upwind fluxes);
  PhiFlow has no such scheme for grids, so the density is advected with ``advect.mac_cormack`` (PhiFlow's
  own smoke demos' choice; taichi_dp's MacCormack is the interpolating alternative of the same cost class);
- obstacle: PhiFlow blocks the faces by a soft (fractional) mask in ``apply_boundary_conditions`` and a
  hard one in the pressure matrix; taichi_dp closes every face of a solid cell;
- the pressure solve: PhiFlow assembles a sparse matrix (traced once under jit) and runs CG on it;
  taichi_dp is matrix-free multigrid-preconditioned CG. That assembly limits PhiFlow 3.4 to
  :data:`MAX_CELLS` cells (32³ runs, 64³ does not; :func:`unsupported_reason`).

PhiFlow 3.4 pitfall found here: in a closed box with an obstacle ``make_incompressible`` makes the system
non-singular by appending a Lagrange-multiplier row and column of ones (``rank_deficiency=1``); plain CG
on that indefinite system *diverges* within ~10 iterations in most steps (residual up 1e5×; under
``jit_compile`` silently: the step returns the unconverged pressure and looks cheap). With
``Solve(rank_deficiency=0)`` PhiFlow keeps its right-hand-side balancing (the fluid-mean of the
divergence removed) and CG converges on the consistent singular system, so that is what runs here.
:func:`cg_report` checks the forward and gradient solves outside jit.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.harness import Record, apply_threads, close_meta, finish, metadata, parse, parser, side_by_side
from benchmarks.timing import median_seconds

EXTENT = 100.0
OBSTACLE = (50.0, 50.0, 50.0, 14.0)  # x, y, z, radius (the same point in every order)
SOURCE = (50.0, 12.0, 50.0, 8.0)  # x, y, z, radius
SOURCE_STRENGTH = 0.2
BUOYANCY = 0.5
DT = 1.0
RTOL = 1e-4
MAX_CG_ITERATIONS = 20000
MAX_CELLS = 46340
"""PhiFlow 3.4 builds the pressure matrix as a sparse ``cells × cells`` tensor and compresses it with a
32-bit flat index (``numpy.unravel_index`` in ``phiml.math._sparse.compress``): above 46340 cells
(``cells² ≥ 2³¹``; 35³ = 42875 is the largest cube below) it fails with "index -2147479552 is out of
bounds" (measured at 64³; the same limit as the karman workload's 256×512)."""


def unsupported_reason(n: int) -> str | None:
    """Why PhiFlow 3.4 cannot run the ``n³`` scene here (``None``: it can)."""
    if n**3 > MAX_CELLS:
        return (f"PhiFlow 3.4 overflows a 32-bit index building its pressure matrix above {MAX_CELLS} cells "
                f"({n}³ = {n**3}; phiml.math._sparse.compress), and its matrix-free CG cannot be jit-compiled "
                "with the torch backend ('JIT-compiling conjugate_gradient with PyTorch is not yet supported "
                "for arbitrary functions'; eagerly it took 10 s per step already at 16³)")
    return None


class TooSlow(RuntimeError):
    """A PhiFlow call exceeded the caller's time cap (the message says by how much)."""


def available() -> bool:
    """Whether PhiFlow is importable."""
    try:
        import phi  # noqa: F401
    except ImportError:
        return False
    return True


def build(n: int, rtol: float = RTOL, *, suppress: bool = False) -> dict[str, Any]:
    """The scene on an ``n³`` grid: initial velocity and density at rest, the jit-compiled ``step(v, s)``,
    the un-jitted ``step_eager``, the jit-compiled 4-step ``grad(v, s)`` (of ``Σ`` velocity + density over
    the 4 states, w.r.t. both initial fields). ``suppress``: CG convergence failures return their partial
    result instead of raising (for :func:`cg_report`)."""
    import warnings

    import numpy as np
    from phi.torch.flow import (
        ZERO_GRADIENT,
        Box,
        CenteredGrid,
        Field,
        Obstacle,
        Solve,
        Sphere,
        StaggeredGrid,
        advect,
        extrapolation,
        fluid,
        math,
        resample,
        spatial,
        vec,
    )
    from phiml.math import Diverged, NotConverged

    warnings.filterwarnings("ignore")  # PhiFlow's tracing and rank-deficiency chatter
    bounds = Box(x=EXTENT, y=EXTENT, z=EXTENT)
    h = EXTENT / n
    c = (np.arange(n) + 0.5) * h
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    sx, sy, sz, sr = SOURCE
    src = (SOURCE_STRENGTH * (((x - sx) ** 2 + (y - sy) ** 2 + (z - sz) ** 2) <= sr**2)).astype(np.float32)
    source = CenteredGrid(math.tensor(src, spatial("z,y,x")), ZERO_GRADIENT, x=n, y=n, z=n, bounds=bounds)
    v0 = StaggeredGrid(0, 0, x=n, y=n, z=n, bounds=bounds)  # extrapolation 0: closed, no-slip
    s0 = CenteredGrid(0, ZERO_GRADIENT, x=n, y=n, z=n, bounds=bounds)
    ox, oy, oz, orad = OBSTACLE
    obstacle = Obstacle(Sphere(x=ox, y=oy, z=oz, radius=orad))
    # cells whose centre is outside the obstacle (PhiFlow's own `accessible` mask of make_incompressible)
    open_cells = Field(s0.geometry, ~obstacle.geometry, extrapolation.ZERO).with_extrapolation(ZERO_GRADIENT)
    solve = Solve("CG", rtol, 0, max_iterations=MAX_CG_ITERATIONS, rank_deficiency=0,
                  suppress=(Diverged, NotConverged) if suppress else ())

    def step_eager(v, s):
        s = (advect.mac_cormack(s, v, DT) + DT * source) * open_cells
        v = v + DT * resample(s * vec(x=0, y=BUOYANCY, z=0), to=v)
        v = advect.semi_lagrangian(v, v, DT)
        v, _ = fluid.make_incompressible(v, obstacle, solve)
        return v, s

    step = math.jit_compile(step_eager)

    def loss(v, s):
        total = 0
        for _ in range(4):
            v, s = step(v, s)
            total = total + math.sum(v.values) + math.sum(s.values)
        return total

    return {
        "v0": v0,
        "s0": s0,
        "step": step,
        "step_eager": step_eager,
        "grad": math.gradient(loss, "v,s", get_output=False),
        "math": math,
    }


def cg_report(scene: dict[str, Any], v: Any, s: Any, n: int, rtol: float = RTOL) -> dict[str, Any]:
    """Outside jit (where PhiFlow checks convergence): CG iterations and convergence of one step's
    pressure solve from ``(v, s)`` and of the gradient solves of one step's backward; the largest
    divergence left in the fluid."""
    from phi.torch.flow import field, math

    eager = build(n, rtol, suppress=True)["step_eager"]
    with math.SolveTape() as tape:
        v1, _ = eager(v, s)
    fwd = tape[0]

    def one(v, s):
        v, s = eager(v, s)
        return math.sum(v.values) + math.sum(s.values)

    with math.SolveTape() as gtape:
        math.gradient(one, "v,s", get_output=False)(v, s)
    grads = list(gtape)  # the forward solve of the differentiated step, then the adjoint solve(s)
    div = field.divergence(v1)
    return {
        "cg_iterations": int(fwd.iterations.max),
        "cg_converged": bool(fwd.converged.all),
        "cg_iterations_backward": [int(g.iterations.max) for g in grads[1:]] or None,
        "cg_converged_backward": all(bool(g.converged.all) for g in grads[1:]) if grads[1:] else None,
        "max_abs_divergence_after_step": float(math.max(abs(div.values))),
    }


def smoke3d_times(
    n: int,
    repeats: int = 3,
    *,
    warmup_steps: int = 10,
    rtol: float = RTOL,
    budget_s: float = 30.0,
    max_call_s: float | None = None,
    fwd_bwd: bool = True,
    report: bool = True,
) -> dict[str, Any]:
    """Median seconds of one jit-compiled step and of forward + backward through 4 steps, after
    ``warmup_steps`` steps from rest (the first traces the jit). Up to ``repeats`` timed runs, fewer when
    they would exceed ``budget_s``. ``max_call_s``: raise :class:`TooSlow` when a warm step already takes
    longer (the forward + backward is ~10–30 steps); the fwd+bwd is skipped (``None``, reason in
    ``fwd_bwd_skipped``) when the step time predicts more than ``max_call_s`` for it. ``report``: also
    :func:`cg_report` on the developed state."""
    t0 = time.perf_counter()
    scene = build(n, rtol)
    step, grad = scene["step"], scene["grad"]
    v, s = scene["v0"], scene["s0"]
    t_trace = time.perf_counter()
    v, s = step(v, s)
    out: dict[str, Any] = {"n": n, "trace_s": time.perf_counter() - t_trace}
    for i in range(1, warmup_steps):
        t = time.perf_counter()
        v, s = step(v, s)
        dt = time.perf_counter() - t
        if i == 1 and max_call_s is not None and dt > max_call_s:
            raise TooSlow(f"one PhiFlow step took {dt:.0f} s at {n}³ (> {max_call_s:.0f} s cap)")

    def timed(fn, first_warmup: int) -> float:
        first = median_seconds(fn, 1, warmup=first_warmup)
        k = max(1, min(repeats, int(budget_s / max(first, 1e-9))))
        return first if k < 2 else median_seconds(fn, k, warmup=0)

    out["step_s"] = timed(lambda: step(v, s), 0)
    out["fwd_bwd_4_s"] = None
    predicted = 20 * out["step_s"]  # measured 15-30 steps' worth at 16³-32³ (4 steps + their adjoint solves)
    if not fwd_bwd:
        out["fwd_bwd_skipped"] = "not requested"
    elif max_call_s is not None and predicted > max_call_s:
        out["fwd_bwd_skipped"] = (f"predicted ~{predicted:.0f} s per call (20 × the {out['step_s']:.1f} s step) "
                                  f"> {max_call_s:.0f} s cap")
    else:
        out["fwd_bwd_4_s"] = timed(lambda: grad(v, s), 1)
    if report:
        out.update(cg_report(scene, v, s, n, rtol))
    out["wall_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> dict:
    """Command line (:mod:`benchmarks.harness`): ``python -m benchmarks.phiflow_smoke3d [--sizes 16 32]
    [--repeats 3] [--quick] [--out PATH]``, every figure of :func:`smoke3d_times` per size; returns the result."""
    ap = parser(__doc__, arches=None, sizes="grid sizes n (n³ cells; default 16 32)", min_size=8,
                quick="CI size: 12³, 1 repeat, 2 warm-up steps, no gradient")
    args = parse(ap, argv)
    if not available():
        raise SystemExit("PhiFlow 3.4 is not installed: pip install -e '.[bench]'")
    apply_threads(args.threads)
    t0 = time.perf_counter()
    meta = metadata("phiflow (torch backend, cpu)", args.precision, threads=args.threads, quick=args.quick)
    rows, recs = [], []
    for n in args.sizes or ([12] if args.quick else [16, 32]):
        reason = unsupported_reason(n)
        if reason:
            rows.append({"n": n, "skipped": reason})
            recs.append(Record("smoke3d", f"{n}³", "step_s", None, "s", "phiflow", reason))
            continue
        out = smoke3d_times(n, args.repeats or (1 if args.quick else 3), warmup_steps=2 if args.quick else 10,
                            fwd_bwd=not args.quick)
        rows.append(out)
        recs.append(Record("smoke3d", f"{n}³", "step_s", out["step_s"], "s", "phiflow"))
        recs.append(Record("smoke3d", f"{n}³", "fwd_bwd_4_s", out["fwd_bwd_4_s"], "s", "phiflow",
                           out.get("fwd_bwd_skipped")))
        recs.append(Record("smoke3d", f"{n}³", "pressure_iterations", out.get("cg_iterations"), "", "phiflow"))
    close_meta(meta, time.perf_counter() - t0)
    res = {"suite": "taichi_dp benchmarks.phiflow_smoke3d", "meta": meta, "rows": rows,
           "records": [r.as_dict() for r in recs]}
    finish(res, side_by_side(recs), args.out)
    return res


if __name__ == "__main__":
    main()
