"""Place a disc in a channel so that the flow matches a target, by gradient descent through the solver.

    python -m demos.place_obstacle [--iterations 15] [--n 16] [--steps 10] [--headless --out runs/demo_place_obstacle]

A 1 × 2 channel (n × 2n cells, inflow 1 from the left, no-slip walls, open right side): the target is the
flow after ``steps`` steps with a disc of radius 0.2 at (y, x) = (0.4, 0.7); the disc starts at (0.58, 0.5).
Adam moves its centre with the gradient of the face-flux mismatch through every solver step, the disc being
a cut-cell obstacle whose face openings and wall distances depend on its centre
(``NavierStokes(cut_cells=CutCells.from_sdf(CircleSDF(centre, 0.2), grid))``). Each frame shows the loss
curve and the flux magnitude of the current flow with the current disc (white) and the target disc (dashed
cyan).
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import taichi_dp as tdp
from demos._render import FrameSink, figure_to_rgb, parser
from taichi_dp.grid.staggered import to_centred
from taichi_dp.learn.shape_optimization import EXTENT, PlacementConfig, PlacementResult, place_obstacle


def render(r: PlacementResult, cfg: PlacementConfig, iteration: int) -> np.ndarray:
    """Loss curve | flux magnitude of the current flow with the current and target discs, as an RGB frame."""
    fig = plt.figure(figsize=(12, 3.6), dpi=80)
    grid = fig.add_gridspec(1, 2, width_ratios=[1, 2.4], wspace=0.2, left=0.07, right=0.97, bottom=0.15)
    ax = fig.add_subplot(grid[0])
    ax.semilogy(r.losses, color="tab:blue")
    ax.set(xlabel="iteration", xlim=(0, max(cfg.iterations, 1)), title=f"iteration {iteration}: loss {r.losses[-1]:.2e}")
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(grid[1])
    speed = np.linalg.norm(to_centred(r.flux[None])[0].numpy(), axis=0)
    im = ax.imshow(speed, origin="lower", cmap="viridis", extent=(0.0, EXTENT[1], 0.0, EXTENT[0]), vmin=0.0, vmax=2.0)
    (y, x), (ty, tx) = r.centres[-1], cfg.target
    ax.add_patch(plt.Circle((x, y), cfg.radius, fill=False, color="white", lw=2))
    ax.add_patch(plt.Circle((tx, ty), cfg.radius, fill=False, color="cyan", lw=1.5, ls="--"))
    ax.set_title(f"|θv| after {cfg.steps} steps, disc at (y, x) = ({y:.3f}, {x:.3f})", fontsize=10)
    fig.colorbar(im, ax=ax, label="flux", fraction=0.03, pad=0.02)
    return figure_to_rgb(fig)


def main(argv: list[str] | None = None) -> int:
    d = PlacementConfig
    p = parser(__doc__.splitlines()[0], "runs/demo_place_obstacle")
    p.add_argument("--iterations", type=int, default=d.iterations, help=f"Adam iterations (default {d.iterations})")
    p.add_argument("--n", type=int, default=d.n, help=f"cells across the channel (default {d.n})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"solver steps unrolled (default {d.steps})")
    args = p.parse_args(argv)
    tdp.init(args.arch, "f64")  # the pressure solve's tolerance (1e-6) wants float64
    cfg = PlacementConfig(n=args.n, steps=args.steps, iterations=args.iterations)
    sink = FrameSink("taichi_dp · place an obstacle", args.out, args.headless)

    def on_iteration(it: int, r: PlacementResult) -> bool:
        return sink.hold(render(r, cfg, it))

    r = place_obstacle(cfg, callback=on_iteration, progress=False)
    if len(r.losses) == cfg.iterations + 1:
        sink.show(render(r, cfg, cfg.iterations))
    y, x = r.centres[-1]
    print(
        f"loss {r.losses[0]:.3e} -> {r.losses[-1]:.3e} ({r.reduction:.1e}x), disc at ({y:.4f}, {x:.4f}) "
        f"(target {cfg.target}), {r.seconds_per_iteration:.2f} s per iteration"
    )
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
