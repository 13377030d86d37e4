"""1D Burgers: the learned correction vs the bare source solver vs the 4× finer reference, live.

    python -m demos.burgers [--run runs/burgers] [--nu 0.004] [--headless --frames 64 --out runs/demo_burgers]

Without ``--run`` it uses ``runs/burgers`` (``python -m taichi_dp burgers --out runs/burgers``, ≈1 min on
2 cores) if present, else the small pretrained corrector shipped in ``models/pretrained/burgers_quick``.

A new random initial state (``--seed``) with a held-out viscosity is simulated side by side by the
reference, the source solver, and the source solver corrected by the run's NON and SOL networks; the
relative error of each is printed in the legend.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import models as models_pkg
import taichi_dp as tdp
from demos._render import FrameSink, figure_to_rgb, parser
from taichi_dp.learn.burgers_experiment import load_run, nu_feature, reference_data, source_solver
from taichi_dp.learn.hybrid import hybrid_step

COLOURS = {"reference": "black", "source": "tab:red", "NON": "tab:blue"}
PRETRAINED = Path(models_pkg.__file__).parent / "pretrained" / "burgers_quick"


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "runs/demo_burgers")
    p.add_argument(
        "--run",
        help="a 'python -m taichi_dp burgers' run folder (default: runs/burgers if it exists, else the "
        "pretrained corrector shipped in models/pretrained/burgers_quick)",
    )
    p.add_argument("--nu", type=float, default=0.004, help="viscosity (the run's held-out values: 0.002…0.045)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    tdp.init(args.arch, "f32")
    run = args.run or ("runs/burgers" if Path("runs/burgers/config.json").is_file() else str(PRETRAINED))
    try:
        cfg, models = load_run(run)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}\nTrain a run first: python -m taichi_dp burgers --out {args.run or 'runs/burgers'}", file=sys.stderr)
        return 2
    print(f"corrections from {run}: {', '.join(models)}")
    cfg.data.steps = args.frames
    data = reference_data(cfg, (args.nu,), 1, torch.Generator().manual_seed(args.seed))
    nu = data.nu
    solver, cond = source_solver(cfg, nu), {"nu": nu_feature(cfg, nu)}
    x = tdp.Grid.line(cfg.data.n, -1.0, 1.0).centers(0)
    states = {name: data.reference[:, 0].contiguous() for name in ("source", *models)}
    sink = FrameSink("taichi_dp · Burgers", args.out, args.headless)
    t = 0
    with torch.no_grad():
        while t < args.frames:
            ref = data.reference[0, t, 0]
            fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
            ax.plot(x, ref, color="black", lw=2.5, label="reference")
            for name, u in states.items():
                err = float((u[0, 0] - ref).norm() / ref.norm().clamp_min(1e-12))
                ax.plot(x, u[0, 0], color=COLOURS.get(name, "tab:green"), label=f"{name} (rel. error {err:.3f})")
            title = f"Burgers ν = {args.nu:g}, t = {t * cfg.data.dt:.2f}"
            ax.set(xlim=(-1, 1), ylim=(-1.2, 1.2), xlabel="x", ylabel="u", title=title)
            ax.legend(loc="lower left", fontsize=8)
            if not sink.show(figure_to_rgb(fig)):
                break
            if sink.paused:
                continue
            states = {name: hybrid_step(solver, models.get(name), u, cond) for name, u in states.items()}
            t += 1
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
