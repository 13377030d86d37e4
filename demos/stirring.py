"""A paddle stirring a closed box (a moving rigid body in the flow).

    python -m demos.stirring [--n 64] [--omega 3.14] [--headless --frames 60 --out runs/demo_stirring]

The rod turns about the centre of the box (taichi_dp.scenes.stirring_rod); the picture is the vorticity
with the rod in grey. With a window: ``r`` resets, Space pauses, Esc quits. Headless, the frames are
written as PNG files and a video. Each frame advances ``--every`` steps (default 2), the pressure solve
warm-started from the previous step's pressure.
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import taichi_dp as tdp
from demos._render import FrameSink, figure_to_rgb, parser
from taichi_dp.grid.staggered import to_centred
from taichi_dp.scenes.moving import stirring_rod
from taichi_dp.solvers.moving import MovingBodies, unpack_moving


def vorticity(v: torch.Tensor, h: float) -> torch.Tensor:
    """``∂v_y/∂x − ∂v_x/∂y`` (counter-clockwise positive) at the cell centres, ``(H, W)``, by central
    differences of the centred velocity ``v`` ``(1, 2, H+1, W+1)`` (staggered, ``(v_y, v_x)``)."""
    c = to_centred(v)[0]
    dvy_dx = torch.gradient(c[0], spacing=h, dim=1)[0]
    dvx_dy = torch.gradient(c[1], spacing=h, dim=0)[0]
    return dvy_dx - dvx_dy


def render(v: torch.Tensor, stepper: MovingBodies, n: int) -> object:
    grid = stepper.grid
    w = vorticity(v, grid.spacing[0]).cpu()
    solid = (stepper.fluid_at(n)[0, 0] < 0.5).cpu()
    w[solid] = float("nan")
    limit = max(1.0, float(w[~solid].abs().quantile(0.99)))
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=100)
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("0.45")
    im = ax.imshow(w, origin="lower", cmap=cmap, vmin=-limit, vmax=limit, extent=(0, 1, 0, 1))
    fig.colorbar(im, ax=ax, label="vorticity (counter-clockwise > 0)")
    ax.set(title=f"stirring rod, t = {n * stepper.dt:.2f}", xlabel="x", ylabel="y")
    return figure_to_rgb(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "runs/demo_stirring")
    p.add_argument("--n", type=int, default=64, help="cells per side (default 64)")
    p.add_argument("--omega", type=float, default=3.141592653589793, help="angular velocity, rad per time (default π)")
    p.add_argument("--every", type=int, default=2, help="steps per frame (default 2)")
    args = p.parse_args(argv)
    if args.every < 1:
        p.error(f"--every must be >= 1, got {args.every}")
    tdp.init(args.arch, "f32")
    scene = stirring_rod(args.n, omega=args.omega)
    stepper = scene.stepper
    v0, _ = unpack_moving(scene.state0)
    v, n, pressure, frame = v0, 0, None, 0
    sink = FrameSink("taichi_dp · stirring rod", args.out, args.headless)
    while frame < args.frames:
        if not sink.show(render(v, stepper, n)):
            break
        if sink.gui is not None and sink.gui.is_pressed("r"):
            v, n, pressure = v0, 0, None
        if sink.paused:
            continue
        with torch.no_grad():
            for _ in range(args.every):
                v, pressure = stepper.step_with_pressure_at(v, n, pressure)
                n += 1
        frame += 1
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
