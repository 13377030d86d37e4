"""A buoyant 3D smoke plume rising around a spherical obstacle, volume-rendered.

    python -m demos.smoke3d [--n 32] [--buoyancy 0.5] [--no-obstacle] [--headless --frames 64 --out runs/demo_smoke3d]

The scene is :func:`taichi_dp.scenes.smoke_plume_3d`: a closed 100³ box, smoke injected by a spherical
source near the floor, buoyancy lifting it along +y around a solid sphere in the middle. Each frame ray-marches
the density (emission–absorption, lit from above) seen from the front (along z, y up) and from
above (along y). Window keys: ``r`` resets, Space pauses, Esc quits. Headless, the frames are written as
PNG files plus an MP4 (or GIF).
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

import taichi_dp as tdp
from demos._render import FrameSink, figure_to_rgb, parser, volume_rgb
from taichi_dp.scenes import smoke_plume_3d
from taichi_dp.solvers import unpack_smoke
from taichi_dp.solvers.smoke import DENSITY_SCHEMES

ABSORPTION = 0.25  # optical depth per unit density per 1/100 of the box: the look is the same at every n


def render(rho: np.ndarray, solid: np.ndarray | None, title: str) -> np.ndarray:
    """Front (from +z, y up) and top (from +y) volume renderings of a ``(D, H, W)`` = (z, y, x) density."""
    k = ABSORPTION * 100.0 / rho.shape[0]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.8), dpi=90)
    views = [("front (from +z)", 0, "y", (0, 100, 0, 100)), ("top (from +y)", 1, "z", (0, 100, 100, 0))]  # z grows down
    for ax, (name, axis, vertical, extent) in zip(axes, views):
        origin = "lower" if extent[3] > extent[2] else "upper"
        ax.imshow(volume_rgb(rho, solid, k, axis, light=1), origin=origin, extent=extent, interpolation="bilinear")
        ax.set(title=name, xticks=[0, 100], yticks=[0, 100], xlabel="x", ylabel=vertical)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.86, wspace=0.2)
    return figure_to_rgb(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "runs/demo_smoke3d")
    p.add_argument("--n", type=int, default=32, help="cells per side (default 32)")
    p.add_argument("--buoyancy", type=float, default=0.5, help="buoyancy (default 0.5)")
    p.add_argument("--advection", default="flux", choices=list(DENSITY_SCHEMES), help="density advection (default flux)")
    p.add_argument("--no-obstacle", dest="obstacle", action="store_false", help="no sphere in the middle")
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")  # one line, no usage block
    args = p.parse_args(argv)
    if args.frames < 1:
        p.error(f"--frames must be >= 1, got {args.frames}")
    try:  # an unavailable --arch, or a scene parameter out of range
        tdp.init(args.arch, "f32")
        scene = smoke_plume_3d(args.n, args.buoyancy, obstacle=args.obstacle, density_advection=args.advection)
    except (RuntimeError, TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stepper, state = scene.stepper, scene.state0
    solid = stepper.flow.fluid[0, 0].cpu().numpy() < 0.5 if args.obstacle else None
    h = 100.0 / args.n  # cell size (the box is 100³)
    sink, t = FrameSink("taichi_dp · 3D smoke", args.out, args.headless), 0
    while t < args.frames:
        rho = unpack_smoke(state)[1][0, 0].cpu().numpy()
        if not sink.show(render(rho, solid, f"3D smoke plume, {args.n}³ cells, step {t}: ∫ρ dV = {float(rho.sum()) * h**3:.0f}")):
            break
        if sink.gui is not None and sink.gui.is_pressed("r"):
            state, t = scene.state0, 0
        if sink.paused:
            continue
        with torch.no_grad():
            state = stepper(state)
        t += 1
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
