"""Recover Burgers' initial state from a later observation by gradient descent through the solver, live.

    python -m demos.burgers_inverse [--iterations 200] [--headless --frames 40 --out runs/demo_burgers_inverse]

The PBDL setup: 128 periodic cells, dt = 1/32, the observation is the state at step 16 of
u0 = −sin(πx); Adam starts from u0 = 0. Each frame shows the loss curve, the current initial-state
estimate and the state it reaches at step 16.
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import taichi_dp as tdp
from demos._render import FrameSink, figure_to_rgb, parser
from taichi_dp.scenes import pbdl_burgers
from taichi_dp.solvers import rollout


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "runs/demo_burgers_inverse")
    p.add_argument("--iterations", type=int, default=200, help="optimisation steps (default 200)")
    p.add_argument("--lr", type=float, default=0.02)
    args = p.parse_args(argv)
    tdp.init(args.arch, "f32")
    scene = pbdl_burgers()
    with torch.no_grad():
        observed = rollout(scene.stepper, scene.state0, 16)[:, -1]
    u0 = torch.zeros_like(scene.state0, requires_grad=True)
    opt = torch.optim.Adam([u0], lr=args.lr)
    x = scene.stepper.grid.centers(0)
    every = max(1, args.iterations // max(args.frames, 1))
    sink, losses = FrameSink("taichi_dp · Burgers inverse problem", args.out, args.headless), []
    for it in range(args.iterations):
        reached = rollout(scene.stepper, u0, 16, include_initial=False)[:, -1]
        loss = torch.mean((reached - observed) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if it % every == 0 or it == args.iterations - 1:
            fig, ax = plt.subplots(1, 3, figsize=(12, 3.4), dpi=90)
            ax[0].semilogy(losses)
            ax[0].set(xlabel="iteration", title=f"loss at step 16: {losses[-1]:.2e}")
            ax[1].plot(x, scene.state0[0, 0], "k-", lw=2, label="true u0")
            ax[1].plot(x, u0.detach()[0, 0], color="tab:green", label="estimate")
            ax[1].set(ylim=(-1.3, 1.3), title="initial state")
            ax[1].legend(fontsize=8)
            ax[2].plot(x, observed[0, 0], "k-", lw=2, label="observation")
            ax[2].plot(x, reached.detach()[0, 0], color="tab:green", label="reached")
            ax[2].set(ylim=(-1.3, 1.3), title="state at step 16")
            ax[2].legend(fontsize=8)
            if not sink.show(figure_to_rgb(fig)):
                break
    print(f"loss {losses[0]:.3e} -> {losses[-1]:.3e} ({losses[0] / max(losses[-1], 1e-300):.1e}x)")
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
