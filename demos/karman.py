"""The Karman wake live: reference | source | source + learned correction, coloured by vorticity.

    python -m demos.karman [--run runs/karman] [--re 300] [--headless --frames 60 --out runs/demo_karman]

Without ``--run`` it uses ``runs/karman`` (``python -m taichi_dp train karman``, the README main job) if
present, else the small pretrained corrector shipped in ``models/pretrained/karman_quick``.

The reference runs the run's finer solver; the source and the corrected solver run on the 32×64 grid
from the same (downsampled) start. The relative L1 error of each coarse panel against the reference is
printed on it. Window keys: Space pause, ``r`` reset, ``c`` toggle the correction (SOL ↔ NON),
up/down arrows raise/lower the Reynolds number by 25 %, ``s`` saves a screenshot, Esc quits.
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
from taichi_dp.grid.staggered import to_centred
from taichi_dp.learn.hybrid import hybrid_step
from taichi_dp.learn.karman_data import downsample_staggered
from taichi_dp.learn.karman_experiment import load_run, re_feature
from taichi_dp.scenes import karman
from taichi_dp.solvers import Repeated


def vorticity(v: torch.Tensor, h: float) -> torch.Tensor:
    """Centred vorticity ∂v_x/∂y − ∂v_y/∂x of a staggered velocity, ``(H, W)`` of sample 0."""
    c = to_centred(v)[0]
    return (torch.gradient(c[1], dim=0)[0] - torch.gradient(c[0], dim=1)[0]) / h


class Wake:
    """Reference, source and corrected simulations of one Reynolds number."""

    def __init__(self, cfg, models: dict, re: float, warmup: int) -> None:
        self.cfg, self.models, self.re = cfg, models, re
        data = cfg.data.train
        f = data.factor
        ref = karman(scale=data.scale * f, reynolds=torch.tensor([re]), dt=1.0 / f, perturbation=data.perturbation)
        self.fine_step, self.factor = Repeated(ref.stepper, f), f  # one coarse step of the reference
        self.coarse = karman(scale=data.scale, reynolds=torch.tensor([re])).stepper
        self.cond = {"re": re_feature(cfg, torch.tensor([re]))}
        with torch.no_grad():
            v = ref.state0
            for _ in range(warmup):
                v = self.fine_step(v)
        self.fine = v
        start = downsample_staggered(v, f)
        self.source, self.corrected = start.clone(), start.clone()

    def step(self, correction: str) -> None:
        with torch.no_grad():
            self.fine = self.fine_step(self.fine)
            self.source = self.coarse(self.source)
            self.corrected = hybrid_step(self.coarse, self.models[correction], self.corrected, self.cond)


def render(w: Wake, correction: str, t: int):
    ref = downsample_staggered(w.fine, w.factor)
    h = w.coarse.grid.spacing[0]
    panels = [("reference", ref), ("source", w.source), (f"+ {correction}", w.corrected)]
    fig, axes = plt.subplots(1, 3, figsize=(9, 5.4), dpi=90)
    for ax, (name, v) in zip(axes, panels):
        im = ax.imshow(vorticity(v, h).cpu(), origin="lower", cmap="RdBu_r", vmin=-0.25, vmax=0.25, extent=(0, 100, 0, 200))
        err = "" if name == "reference" else f"\nL1 error {float((v - ref).abs().sum() / ref.abs().sum()):.4f}"
        ax.set_title(name + err, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.7, label="vorticity")
    fig.suptitle(f"Karman wake, Re = {w.re:.0f}, step {t}")
    return figure_to_rgb(fig)


PRETRAINED = Path(models_pkg.__file__).parent / "pretrained" / "karman_quick"


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "runs/demo_karman")
    p.add_argument(
        "--run",
        help="a 'python -m taichi_dp train karman' run folder (default: runs/karman if it exists, else the "
        "pretrained corrector shipped in models/pretrained/karman_quick)",
    )
    p.add_argument("--re", type=float, default=300.0, help="Reynolds number (default 300)")
    p.add_argument("--warmup", type=int, help="reference steps before the panels start (default: the run's data warm-up)")
    args = p.parse_args(argv)
    tdp.init(args.arch, "f32")
    run = args.run or ("runs/karman" if Path("runs/karman/config.json").is_file() else str(PRETRAINED))
    try:
        cfg, models = load_run(run)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}\nTrain a run first: python -m taichi_dp train karman --out {run}", file=sys.stderr)
        return 2
    print(f"corrections from {run}: {', '.join(models)}")
    args.warmup = cfg.data.train.warmup if args.warmup is None else args.warmup
    variants = list(models)  # e.g. ["NON", "SOL-4"]: "c" cycles through them
    correction = next((v for v in variants if "SOL" in v), variants[-1])
    re, t = args.re, 0
    wake = Wake(cfg, models, re, args.warmup)
    sink = FrameSink("taichi_dp · Karman wake", args.out, args.headless)
    while t < args.frames:
        frame = render(wake, correction, t)
        if not sink.show(frame):
            break
        if sink.gui is not None:
            import taichi as ti
            from PIL import Image

            gui = sink.gui
            if gui.is_pressed("c"):
                correction = variants[(variants.index(correction) + 1) % len(variants)]
            if gui.is_pressed(ti.GUI.UP) or gui.is_pressed(ti.GUI.DOWN) or gui.is_pressed("r"):
                re = re * 1.25 if gui.is_pressed(ti.GUI.UP) else re / 1.25 if gui.is_pressed(ti.GUI.DOWN) else args.re
                wake, t = Wake(cfg, models, re, args.warmup), 0
            if gui.is_pressed("s"):
                shot = Path(args.out) / f"screenshot_{t:04d}.png"
                shot.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(frame).save(shot)
                print(f"saved {shot}")
        if sink.paused:
            continue
        wake.step(correction)
        t += 1
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
