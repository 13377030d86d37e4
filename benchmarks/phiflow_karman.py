"""The karman workload in PhiFlow 3.4 (optional: ``pip install -e .[bench]``), for side-by-side timing.

Same scene as :func:`taichi_dp.scenes.karman`: domain 100 (x) × 200 (y), cylinder r = 10 at (50, 50),
inflow band y < 5 forced to (0, 1), no-slip side walls, open top, dt = 1, ν = 20/Re; explicit
diffusion → inflow → semi-Lagrangian advection → pressure projection with plain CG (rel. tol 1e-3,
abs. tol 0), jit-compiled. Known PhiFlow 3.4 pitfalls avoided: phiml pinned to 1.16.0; the inflow band
is a finite box (``Box(y=(None, 5))`` evaluates to 1 everywhere); 256×512 overflows a 32-bit index
while PhiFlow builds its pressure matrix, so callers skip it.

On its own (command line, metadata, output: :mod:`benchmarks.harness`)::

    python -m benchmarks.phiflow_karman [--scales 1 2 4] [--repeats 3] [--quick] [--out|--json out.json]
"""

from __future__ import annotations

import time

from benchmarks.harness import Record, apply_threads, close_meta, finish, metadata, parse, parser, side_by_side
from benchmarks.timing import median_seconds


def available() -> bool:
    """Whether PhiFlow is importable."""
    try:
        import phi  # noqa: F401
    except ImportError:
        return False
    return True


def karman_times(nx: int, ny: int, repeats: int = 3, reynolds: float = 200.0) -> tuple[float, float]:
    """Median seconds of one jit-compiled step and of forward+backward through 4 steps."""
    import warnings

    from phi.torch.flow import (
        ZERO_GRADIENT,
        Box,
        Noise,
        Obstacle,
        Solve,
        Sphere,
        StaggeredGrid,
        advect,
        diffuse,
        fluid,
        math,
        vec,
    )

    warnings.filterwarnings("ignore")
    bounds = Box(x=100, y=200)
    bc = {"x": 0, "y-": ZERO_GRADIENT, "y+": ZERO_GRADIENT}  # open bottom (the book's OPEN): "y-": 0 would close it and
    # the first projection would cancel the through-flow (a flow at rest; found by tests/test_pbdl_karman.py's author)
    v0 = StaggeredGrid(Noise(vector="x,y", scale=20), bc, x=nx, y=ny, bounds=bounds) * 0.1 + StaggeredGrid(
        vec(x=0, y=1), bc, x=nx, y=ny, bounds=bounds
    )
    obstacle = Obstacle(Sphere(x=50, y=50, radius=10))
    inflow = StaggeredGrid(Box(x=(0, 100), y=(0, 5)), bc, x=nx, y=ny, bounds=bounds)
    nu = 20.0 / reynolds

    @math.jit_compile
    def step(v):
        v = diffuse.explicit(v, nu, 1.0)
        v = v * (1 - inflow) + inflow * vec(x=0, y=1)
        v = advect.semi_lagrangian(v, v, 1.0)
        v, _ = fluid.make_incompressible(v, obstacle, Solve("CG", 1e-3, 0, max_iterations=3000))
        return v

    def loss(v):
        total = 0
        for _ in range(4):
            v = step(v)
            total = total + math.sum(v.values**2)
        return total

    grad = math.gradient(loss, "v", get_output=False)
    v = v0
    for _ in range(5):  # develop the flow like the taichi_dp benchmark
        v = step(v)

    return median_seconds(lambda: step(v), repeats), median_seconds(lambda: grad(v), max(1, repeats // 2))


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point: PhiFlow's karman step and 4-step fwd+bwd per scale; returns the result."""
    ap = parser(__doc__, arches=None, threads=True, sizes="grid scales s (32·s × 64·s; default 1 2 4)",
                sizes_flags=("--scales", "--sizes"), quick="CI size: scale 1, 1 repeat")
    args = parse(ap, argv)
    if not available():
        raise SystemExit("PhiFlow 3.4 is not installed: pip install -e '.[bench]'")
    apply_threads(args.threads)
    t0 = time.perf_counter()
    meta = metadata("phiflow (torch backend, cpu)", args.precision, threads=args.threads, quick=args.quick)
    recs = []
    for scale in args.sizes or ([1] if args.quick else [1, 2, 4]):
        nx, ny = 32 * scale, 64 * scale
        step, fwd_bwd = karman_times(nx, ny, args.repeats or (1 if args.quick else 3))
        recs += [Record("karman", f"{nx}x{ny}", "step_s", step, "s", "phiflow"),
                 Record("karman", f"{nx}x{ny}", "fwd_bwd_4_s", fwd_bwd, "s", "phiflow")]
    close_meta(meta, time.perf_counter() - t0)
    res = {"suite": "taichi_dp benchmarks.phiflow_karman", "meta": meta, "records": [r.as_dict() for r in recs]}
    finish(res, side_by_side(recs), args.out)
    return res


if __name__ == "__main__":
    main()
