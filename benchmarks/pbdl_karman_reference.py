"""PhiFlow 3.4 reference for :func:`taichi_dp.scenes.pbdl_karman` (needs ``pip install -e .[bench]``).

    python -m benchmarks.pbdl_karman_reference [--out tests/data/pbdl_karman_phiflow.npz]

Writes ``v0`` and PhiFlow's velocities after steps 1 and 13 (32×64, batch 1, Re = 200, float64, CG
converged to 1e-12) in the taichi_dp staggered layout, for the open bottom (the book's ``OPEN``, the
default of ``pbdl_karman``) and for the closed one of :mod:`benchmarks.phiflow_karman` (``y- = 0``),
plus the versions and settings. The PhiFlow step is the one of :mod:`benchmarks.phiflow_karman`
(explicit diffusion → inflow → semi-Lagrangian advection → ``make_incompressible`` with
``Obstacle(Sphere)``), in float64 and with a converged solve. ``v0`` is the scene's default start plus
seeded noise (so every operator sees a non-trivial field).

Layout conversion (:func:`from_phiflow` / :func:`to_phiflow`): PhiFlow stores ``v_y`` on the faces
``y = 0..200`` (``y = h..200`` when the bottom is the constant 0 of ``y- = 0``) and ``v_x`` on the
interior faces ``x = h..100−h`` (the walls are the constant 0 of ``x = 0``); taichi_dp's
``(B, 2, H+1, W+1)`` tensor holds every face, channel 0 = ``v_y``, channel 1 = ``v_x``
(``taichi_dp.grid.staggered``).
"""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path

import numpy as np

from benchmarks.harness import parse, parser

RESOLUTION = (64, 32)  # (H, W) = (y, x)
REYNOLDS = 200.0
STEPS = (1, 13)
SEED = 0
NOISE = 0.05
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "pbdl_karman_phiflow.npz"


def available() -> bool:
    """Whether PhiFlow is importable."""
    try:
        import phi  # noqa: F401
    except ImportError:
        return False
    return True


def initial_velocity(
    resolution: tuple[int, int] = RESOLUTION, seed: int = SEED, noise: float = NOISE, open_bottom: bool = True
) -> np.ndarray:
    """``(1, 2, H+1, W+1)`` float64: ``pbdl_karman``'s default ``v0`` (``v_y = 1`` on the open faces, the
    sideways bump of amplitude 0.1 at y = 80) plus ``noise`` × seeded Gaussian noise on the open faces
    (the bottom ``v_y`` face is one of them unless ``open_bottom`` is false)."""
    h, w = resolution
    hy, hx = 200.0 / h, 100.0 / w
    v = np.zeros((2, h + 1, w + 1))
    v[0, 1:, :w] = 1.0
    y = (np.arange(h) + 0.5) * hy
    x = np.arange(w + 1) * hx
    v[1, :h] = 0.1 * np.exp(-((y[:, None] - 80.0) ** 2) / 200.0) * np.sin(np.pi * x[None, :] / 100.0)
    v += noise * np.random.default_rng(seed).standard_normal(v.shape)
    if not open_bottom:
        v[0, 0] = 0.0  # bottom face: PhiFlow's constant y- = 0
    v[0, :, w] = 0.0  # padding
    v[1, h] = 0.0  # padding
    v[1, :, 0] = v[1, :, w] = 0.0  # side walls: PhiFlow's constant x = 0
    return v[None]


def from_phiflow(v, resolution: tuple[int, int]) -> np.ndarray:
    """A PhiFlow ``StaggeredGrid`` (batch ≤ 1) → ``(1, 2, H+1, W+1)`` numpy array in taichi_dp's layout."""
    h, w = resolution
    out = np.zeros((1, 2, h + 1, w + 1))
    vy = v.vector["y"].values.numpy("y,x")  # H + 1 faces with an open bottom, H with y- = 0
    out[0, 0, h + 1 - vy.shape[0] :, :w] = vy
    out[0, 1, :h, 1:w] = v.vector["x"].values.numpy("y,x")
    return out


def to_phiflow(a: np.ndarray, boundary, bounds):
    """``(1, 2, H+1, W+1)`` numpy array (taichi_dp layout) → PhiFlow ``StaggeredGrid``."""
    from phi.torch.flow import StaggeredGrid, dual, math, spatial

    h, w = a.shape[2] - 1, a.shape[3] - 1
    lo = 1 if isinstance(boundary["y-"], int | float) else 0  # the bottom face is stored unless y- is a constant
    vy = math.tensor(np.ascontiguousarray(a[0, 0, lo:, :w].T), spatial("x,y"))
    vx = math.tensor(np.ascontiguousarray(a[0, 1, :h, 1:w].T), spatial("x,y"))
    return StaggeredGrid(math.stack({"x": vx, "y": vy}, dual(vector="x,y")), boundary, x=w, y=h, bounds=bounds)


def phiflow_rollout(
    v0: np.ndarray, steps: int, reynolds: float = REYNOLDS, tolerance: float = 1e-12, open_bottom: bool = True
) -> list[np.ndarray]:
    """PhiFlow 3.4's karman step (float64, CG to ``tolerance`` rel. and abs.) applied ``steps`` times to
    ``v0`` ``(1, 2, H+1, W+1)``; returns the ``steps`` velocities in taichi_dp's layout. The bottom side
    is open (``y- = ZERO_GRADIENT``, the book's ``OPEN``) or, with ``open_bottom=False``, the constant
    ``y- = 0`` of :mod:`benchmarks.phiflow_karman`, which stops the through-flow: no divergence-free
    field carries flux across a closed bottom, so the first projection cancels the inflow."""
    from phi.torch.flow import ZERO_GRADIENT, Box, Obstacle, Solve, Sphere, StaggeredGrid, advect, diffuse, fluid, math, vec

    warnings.filterwarnings("ignore")
    math.set_global_precision(64)
    h, w = v0.shape[2] - 1, v0.shape[3] - 1
    bounds = Box(x=100, y=200)
    bc = {"x": 0, "y-": ZERO_GRADIENT if open_bottom else 0, "y+": ZERO_GRADIENT}
    obstacle = Obstacle(Sphere(x=50, y=50, radius=10))
    inflow = StaggeredGrid(Box(x=(0, 100), y=(0, 5)), bc, x=w, y=h, bounds=bounds)
    nu = 20.0 / reynolds
    solve = Solve("CG", tolerance, tolerance, max_iterations=100000)

    def step(v):
        v = diffuse.explicit(v, nu, 1.0)
        v = v * (1 - inflow) + inflow * vec(x=0, y=1)
        v = advect.semi_lagrangian(v, v, 1.0)
        v, _ = fluid.make_incompressible(v, obstacle, solve)
        return v

    v = to_phiflow(v0, bc, bounds)
    out = []
    for _ in range(steps):
        v = step(v)
        out.append(from_phiflow(v, (h, w)))
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (the harness's parser; ``--out`` here is the ``.npz`` written, not JSON)."""
    ap = parser(__doc__, arches=None, precisions=None, threads=False, repeats=False, quick=None, out=None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the .npz to write (default {DEFAULT_OUT})")
    args = parse(ap, argv)
    import phi
    import phiml

    arrays = {}
    for name, open_bottom in (("open", True), ("closed", False)):
        v0 = initial_velocity(open_bottom=open_bottom)
        states = phiflow_rollout(v0, max(STEPS), open_bottom=open_bottom)
        arrays[f"{name}_v0"] = v0
        arrays.update({f"{name}_v{k}": states[k - 1] for k in STEPS})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        steps=np.array(STEPS),
        **arrays,
        reynolds=REYNOLDS,
        seed=SEED,
        noise=NOISE,
        resolution=np.array(RESOLUTION),
        versions=np.array(f"phiflow {phi.__version__}, phiml {phiml.__version__}"),
        created=np.array(datetime.date.today().isoformat()),
    )
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes): steps {STEPS}, phiflow {phi.__version__}, phiml {phiml.__version__}"
    )


if __name__ == "__main__":
    main()
