"""A buoyant smoke plume in a closed box.

    python -m demos.smoke [--n 64] [--advection flux] [--headless --frames 60 --out runs/demo_smoke]

With a window: the left mouse button injects smoke and pushes it along the drag direction, the right
button draws solid obstacles, ``m`` cycles the density advection (conservative flux form / MacCormack / semi-Lagrangian),
``r`` resets, Space pauses, Esc quits. Headless, the plume from the fixed source is written as frames.
"""

from __future__ import annotations

import dataclasses
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import taichi_dp as tdp
from demos._render import FrameSink, figure_to_rgb, parser
from taichi_dp.grid.geometry import disc
from taichi_dp.scenes import smoke_plume
from taichi_dp.solvers import pack_smoke, unpack_smoke
from taichi_dp.solvers.smoke import DENSITY_SCHEMES


def render(state: torch.Tensor, stepper, t: int) -> object:
    _, rho = unpack_smoke(state)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=100)
    im = ax.imshow(
        rho[0, 0].cpu(), origin="lower", cmap="magma", vmin=0.0, vmax=max(1.0, float(rho.max())), extent=(0, 100, 0, 100)
    )
    solid = stepper.flow.fluid[0, 0].cpu() < 0.5
    if bool(solid.any()):
        ax.contour(solid.float(), levels=[0.5], colors="cyan", extent=(0, 100, 0, 100))
    fig.colorbar(im, ax=ax, label="smoke density")
    ax.set(title=f"smoke plume, step {t} ({stepper.density_advection})", xlabel="x", ylabel="y")
    return figure_to_rgb(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "runs/demo_smoke")
    p.add_argument("--n", type=int, default=64, help="cells per side (default 64)")
    p.add_argument("--advection", default="flux", choices=list(DENSITY_SCHEMES))
    args = p.parse_args(argv)
    tdp.init(args.arch, "f32")
    scene = smoke_plume(args.n, density_advection=args.advection)
    stepper, state0 = scene.stepper, scene.state0
    state, sink, t = state0, FrameSink("taichi_dp · smoke", args.out, args.headless), 0
    grid = stepper.grid
    while t < args.frames:
        if not sink.show(render(state, stepper, t)):
            break
        if sink.gui is not None:  # interaction (window only)
            import taichi as ti

            gui = sink.gui
            mx, my = gui.get_cursor_pos()  # window fraction; the image maps onto the plot area roughly
            y, x = 100.0 * my, 100.0 * mx
            if gui.is_pressed(ti.GUI.LMB):
                v, rho = unpack_smoke(state)
                blob = 1.0 - disc(grid, (y, x), 6.0)
                state = pack_smoke(v, rho + 0.5 * blob)
            if gui.is_pressed(ti.GUI.RMB):
                fluid = stepper.flow.fluid * disc(grid, (y, x), 4.0)
                stepper = dataclasses.replace(stepper, flow=dataclasses.replace(stepper.flow, fluid=fluid.contiguous()))
            if gui.is_pressed("m"):
                other = DENSITY_SCHEMES[(DENSITY_SCHEMES.index(stepper.density_advection) + 1) % len(DENSITY_SCHEMES)]
                stepper = dataclasses.replace(stepper, density_advection=other)
            if gui.is_pressed("r"):
                state, t = state0, 0
        if sink.paused:
            continue
        with torch.no_grad():
            state = stepper(state)
        t += 1
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
