"""Steer a smoke blob to a target by gradient descent through the Navier–Stokes solver, live.

    python -m demos.control [--iterations 60] [--n 32] [--steps 12] [--headless --frames 40 --out runs/demo_control]

The PBDL "Navier–Stokes forward and inverse" setup: a Gaussian smoke blob at rest at (y, x) = (30, 30) in
a closed 100 × 100 box (32 × 32 cells, dt = 1, weak buoyancy) should be centred at (62, 68) after 12
steps. Adam optimises the initial velocity (starting at rest) through all 12 smoke-solver steps
(advection, buoyancy, pressure projection). Each frame shows the loss curve and the density trajectory
of the current estimate next to the target; arrows are the estimated initial velocity.
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
from taichi_dp.learn.inverse import ControlResult, SmokeControlConfig, smoke_control

EXTENT = (0.0, 100.0, 0.0, 100.0)


def render(r: ControlResult, cfg: SmokeControlConfig, iteration: int) -> np.ndarray:
    """Loss curve | density at t = 0, T/2, T | target, as an RGB frame."""
    fig = plt.figure(figsize=(14, 3.5), dpi=80)
    grid = fig.add_gridspec(1, 6, width_ratios=[1.3, 1, 1, 1, 1, 0.06], wspace=0.3, left=0.065, right=0.95, bottom=0.14)
    ax = fig.add_subplot(grid[0])
    ax.semilogy(r.losses, color="tab:blue")
    ax.set(xlabel="iteration", xlim=(0, max(cfg.iterations, 1)), title=f"iteration {iteration}: loss {r.losses[-1]:.2e}")
    ax.set_ylabel(f"MSE to target at step {cfg.steps}")
    ax.grid(alpha=0.3)
    times = (0, cfg.steps // 2, cfg.steps)
    panels = [(f"density, step {t}", r.density[t]) for t in times] + [(f"target at step {cfg.steps}", r.target)]
    vmax = max(1.0, float(r.target.max()))
    for k, (title, rho) in enumerate(panels):
        ax = fig.add_subplot(grid[k + 1])
        im = ax.imshow(rho.numpy(), origin="lower", cmap="magma", vmin=0.0, vmax=vmax, extent=EXTENT)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if k == 0:  # the current initial-velocity estimate (centred, every other cell)
            c = to_centred(r.velocity[None])[0].numpy()
            xy = (np.arange(cfg.n) + 0.5) * 100.0 / cfg.n
            ax.quiver(xy[1::3], xy[1::3], c[1, 1::3, 1::3], c[0, 1::3, 1::3], color="cyan", scale=60.0, width=0.01)
            ax.set_title(title + " + initial velocity", fontsize=10)
        if k >= len(panels) - 2:
            ax.plot(*cfg.target[::-1], "c+", ms=12)
    fig.colorbar(im, cax=fig.add_subplot(grid[5]), label="smoke density")
    return figure_to_rgb(fig)


def main(argv: list[str] | None = None) -> int:
    d = SmokeControlConfig
    p = parser(__doc__.splitlines()[0], "runs/demo_control")
    p.set_defaults(frames=40)
    p.add_argument("--iterations", type=int, default=d.iterations, help=f"Adam iterations (default {d.iterations})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    p.add_argument("--n", type=int, default=d.n, help=f"cells per side (default {d.n})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"solver steps unrolled (default {d.steps})")
    args = p.parse_args(argv)
    tdp.init(args.arch, "f32")
    cfg = SmokeControlConfig(n=args.n, steps=args.steps, iterations=args.iterations, lr=args.lr)
    marks = set(np.linspace(0, cfg.iterations, max(args.frames, 1)).round().astype(int).tolist())
    sink = FrameSink("taichi_dp · smoke control", args.out, args.headless)

    def on_iteration(it: int, r: ControlResult) -> bool:
        if it not in marks:
            return True
        return sink.hold(render(r, cfg, it))

    r = smoke_control(cfg, callback=on_iteration, progress=False)
    finished = len(r.losses) == cfg.iterations + 1
    if finished and cfg.iterations in marks:
        sink.show(render(r, cfg, cfg.iterations))
    print(f"loss {r.losses[0]:.3e} -> {r.losses[-1]:.3e} ({r.reduction:.1e}x) in {r.seconds:.1f} s")
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
