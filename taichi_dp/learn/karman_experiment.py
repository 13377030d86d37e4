"""Solver-in-the-loop on the Karman wake: the PBDL "reducing numerical errors" study, with a fair protocol.

Source: the 32×64 :func:`~taichi_dp.scenes.karman` solver. Reference: the same scene ``factor``× finer in
space and time (4× as in the book), flux-averaged onto the source faces (:mod:`taichi_dp.learn.karman_data`).
The hybrid step is ``v ← solver(v); v ← v + Δ(v, Re)`` with ``Δ`` a network on centred velocities
(conditioned on the normalised log-Reynolds number) applied to the free staggered faces
(:class:`~taichi_dp.learn.hybrid.StaggeredCorrection`, optionally re-projected).

This module is the experiment's hooks on the shared skeleton (:mod:`taichi_dp.learn.experiment`): data,
source solver, conditioning, model, report paragraph, vorticity plots and images. Variants (``NON``,
``PRE-k``, ``SOL-k``, ``NON+SOL-k``), protocols (``updates``: equal gradient updates; ``wall``: equal
wall-clock time), seeds, horizons, training, evaluation and the run folder are the skeleton's.

Configuration sections (``taichi_dp/presets/karman_{quick,medium,paper,tiny}.toml``): ``data.train`` /
``data.test`` (:class:`~taichi_dp.learn.karman_data.KarmanDataConfig`), ``model`` (:class:`KarmanModel`),
``train`` (:class:`~taichi_dp.learn.experiment.TrainSection`), ``eval`` (horizons).

Run folder: ``config.json``, ``metrics.json``, ``report.md``, ``plots/`` (error over time, vorticity strip),
``checkpoints/<protocol>/seed<s>/<variant>.pt`` (model weights) and ``…/<variant>.<stage>.state.pt``
(trainer states for ``resume``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from models import ResidualCNN, UNet

from ..runtime import ensure_init
from ..scenes import karman
from ..solvers import NavierStokes
from . import experiment, flow_metrics, io
from .experiment import EvalSection, Experiment, TrainSection, Trajectories
from .experiment_log import RunLog, colour_image
from .hybrid import StaggeredCorrection
from .karman_data import KarmanDataConfig, load_or_generate

_RE_ALL = (90.0, 125.5, 175.1, 244.3, 340.8, 475.4, 663.1, 925.0, 1290.4, 1800.0)  # log-uniform, unsteady wake
TRAIN_RE = tuple(r for i, r in enumerate(_RE_ALL) if i not in (0, 3, 6, 9))  # six training values
TEST_RE = (90.0, 244.3, 663.1, 1800.0)  # below, inside, inside, above the training range
MIN_SHEDDING_STEPS = 250  # 2.5 shedding periods of the source wake (St ≈ 0.19: ~105 steps per period)
MODEL_WIDTH = {"unet": 10, "cnn": 21}  # ~46k parameters each (--model sets the kind and its width)


def _data(reynolds: tuple[float, ...], steps: int, warmup: int = 100) -> KarmanDataConfig:
    """4× reference, strong symmetry-breaking start (the street is developed after ~100 steps)."""
    return KarmanDataConfig(reynolds, factor=4, warmup=warmup, steps=steps, perturbation=1.0)


@dataclass
class KarmanData:
    """The ``data`` section: the training and the test reference data sets."""

    train: KarmanDataConfig = field(default_factory=lambda: _data(TRAIN_RE, 60))
    test: KarmanDataConfig = field(default_factory=lambda: _data(TEST_RE, 100))


@dataclass
class KarmanModel:
    """The ``model`` section. ``kind="unet"``: :class:`models.UNet` (``blocks`` levels; width 10 → 46.4k
    parameters); ``"cnn"``: the book's :class:`models.ResidualCNN` (5×5, ``blocks`` residual blocks; width 21
    → 46.8k). Measured on the quick preset (2 CPU cores, 150 s per variant): U-Net 7.8× / 5.2× lower error
    than the source (NON / SOL-4), CNN 2.6× / 2.0× (a U-Net update costs half as much and it sees the whole
    wake)."""

    kind: str = "unet"
    width: int = 10
    blocks: int = 2
    padding_mode: str = "zeros"  # convolution padding: walls/inflow are fixed values; "replicate" is ~9× slower on CPU
    reproject: bool = False  # project the corrected velocity onto divergence-free fields


def _train() -> TrainSection:
    return TrainSection(
        variants=("NON", "SOL-4"), protocols=("wall",), iterations=400, seconds=150.0, batch_size=4, lr=1e-3, save_every=50
    )


@dataclass
class KarmanExperimentConfig:
    """Everything that defines a study; serialised to ``config.json``. The defaults are the ``quick`` preset
    (the README main job: 2 CPU cores, ≤ 15 minutes including data generation; NON vs SOL-4 at equal wall
    time, one seed, 100-step test rollouts on four held-out Reynolds numbers)."""

    data: KarmanData = field(default_factory=KarmanData)
    model: KarmanModel = field(default_factory=KarmanModel)
    train: TrainSection = field(default_factory=_train)
    eval: EvalSection = field(default_factory=lambda: EvalSection(horizons=(100,)))

    @classmethod
    def preset(cls, name: str) -> KarmanExperimentConfig:
        """The shipped preset ``name`` (``quick``, ``medium``, ``paper``, ``tiny``: ``taichi_dp/presets/karman_<name>.toml``)."""
        return KarmanExperiment.preset(name)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field for an inconsistent configuration (before any work)."""
        for split in ("train", "test"):
            d: KarmanDataConfig = getattr(self.data, split)
            name = f"data.{split}"
            if not d.reynolds or not all(math.isfinite(r) and r > 0 for r in d.reynolds):
                raise ValueError(f"{name}.reynolds must be non-empty finite numbers > 0, got {d.reynolds}")
            for key, minimum in (("scale", 1), ("factor", 1), ("warmup", 0), ("steps", 1)):
                experiment.check_int(f"{name}.{key}", getattr(d, key), minimum)
            if not math.isfinite(d.perturbation):
                raise ValueError(f"{name}.perturbation must be a finite number, got {d.perturbation}")
        if self.data.test.scale != self.data.train.scale:
            raise ValueError(f"data.test.scale must equal data.train.scale = {self.data.train.scale}, got {self.data.test.scale}")
        if self.model.kind not in MODEL_WIDTH:
            raise ValueError(f"model.kind must be 'cnn' or 'unet', got {self.model.kind!r}")
        experiment.check_int("model.width", self.model.width, 1)
        experiment.check_int("model.blocks", self.model.blocks, 1)
        if self.model.padding_mode not in ("zeros", "replicate", "reflect", "circular"):
            raise ValueError(f"model.padding_mode must be zeros, replicate, reflect or circular, got {self.model.padding_mode!r}")
        self.train.validate(self.data.train.steps + 1, "data.train.steps")
        self.eval.validate(self.data.test.steps, "data.test.steps")


def re_feature(cfg: KarmanExperimentConfig, re_: torch.Tensor) -> torch.Tensor:
    """The network's Reynolds-number input: ``log Re`` mapped linearly so the training range is [−1, 1]."""
    lo, hi = math.log(min(cfg.data.train.reynolds)), math.log(max(cfg.data.train.reynolds))
    return (torch.log(re_) - 0.5 * (lo + hi)) / (0.5 * (hi - lo))


class KarmanExperiment(Experiment):
    """The Karman wake's hooks (see the module docstring)."""

    name = "karman"
    command = "train karman"
    config_class = KarmanExperimentConfig
    default_preset = "quick"
    title = "Karman wake: solver-in-the-loop vs supervised corrections"
    parameter = "Re"

    def __init__(self, cfg: KarmanExperimentConfig) -> None:
        super().__init__(cfg)
        self._base: NavierStokes | None = None

    @property
    def base(self) -> NavierStokes:
        """The source stepper at the data's scale (its viscosity is replaced per batch by :meth:`source`)."""
        if self._base is None:
            self._base = karman(scale=self.cfg.data.train.scale).stepper
        return self._base

    def make_data(self, split: str, *, cache: str | Path, progress: bool) -> Trajectories:
        rt = ensure_init()
        data_cfg: KarmanDataConfig = getattr(self.cfg.data, split)
        data = load_or_generate(data_cfg, cache, progress=progress)
        s = data["velocity"].shape[0]
        return Trajectories(
            reference=data["velocity"].to(rt.dtype).to(rt.device),
            params=data["reynolds"].to(rt.dtype).to(rt.device),
            values=tuple(float(r) for r in data_cfg.reynolds),
            group=torch.arange(s),
        )

    def source(self, params: torch.Tensor) -> NavierStokes:
        """The source solver with one Reynolds number per batch element (same mask tensor: cached multigrid)."""
        base = self.base
        return dataclasses.replace(base, nu=(20.0 / params).to(base.fluid.dtype))

    def condition(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"re": re_feature(self.cfg, params)}

    def make_model(self, seed: int) -> StaggeredCorrection:
        """A fresh (zero-output) correction network with initialisation seed ``seed``."""
        rt = ensure_init()
        m, base = self.cfg.model, self.base
        torch.manual_seed(seed)
        if m.kind == "cnn":
            net = ResidualCNN(2, 2, conditioning=("re",), width=m.width, blocks=m.blocks, padding_mode=m.padding_mode)
        else:
            net = UNet(2, conditioning=("re",), width=m.width, levels=m.blocks, padding_mode=m.padding_mode)
        return StaggeredCorrection(
            net.to(dtype=rt.dtype, device=rt.device), base.grid, base.boundary, base.fluid, reproject=m.reproject
        )

    def train_values(self) -> tuple[float, ...]:
        return self.cfg.data.train.reynolds

    def describe(self, rt: Any) -> str:
        d, m = self.cfg.data, self.cfg.model
        return (
            f"Source 32·{d.train.scale}×64·{d.train.scale} (dt = 1), reference {d.train.factor}× finer in space and time; "
            f"train Re {list(d.train.reynolds)}; test Re {list(d.test.reynolds)}; model {m.kind} (width {m.width}"
            f"{', re-projected' if m.reproject else ''})."
        )

    diagnostic_labels: ClassVar[Mapping[str, str]] = {
        "strouhal": "Shedding frequency: Strouhal number St = f·D/U (transverse velocity 2.5 D behind the cylinder,"
        " whole rollout; a period is ~100 steps, so it needs rollouts of >= 250 steps)",
        "spectrum_distance": "Vorticity spectrum: mean |log10(P / P_reference)| over streamwise wavenumbers"
        " (last 100 steps; 0 = the reference's spectrum)",
        "energy_ratio": "Kinetic energy over the last 100 steps ÷ the reference's (1 = right energy; < 1 = damped)",
    }

    def diagnostics(self, traj: torch.Tensor, test: Trajectories) -> dict[str, torch.Tensor]:
        """Per trajectory: the Strouhal number of the shedding (:func:`~taichi_dp.learn.flow_metrics.shedding_frequency`
        over the whole rollout), the distance of the streamwise vorticity spectrum to the reference's and the
        kinetic energy relative to the reference's (both over the last 100 steps); NaN where undefined. The
        Strouhal number needs rollouts of at least :data:`MIN_SHEDDING_STEPS` steps (2.5 shedding periods)."""
        ref = test.reference[:, 1:].float().cpu()
        window = min(100, traj.shape[1])
        _, spec = flow_metrics.vorticity_spectrum(traj, frames=window)
        _, ref_spec = flow_metrics.vorticity_spectrum(ref, frames=window)
        energy = flow_metrics.kinetic_energy(traj[:, -window:]).mean(1)
        ref_energy = flow_metrics.kinetic_energy(ref[:, -window:]).mean(1)
        out = {}
        if traj.shape[1] >= MIN_SHEDDING_STEPS:
            out["strouhal"] = flow_metrics.strouhal(flow_metrics.shedding_frequency(traj, frames=traj.shape[1]))
        out["spectrum_distance"] = flow_metrics.spectrum_distance(spec, ref_spec)
        out["energy_ratio"] = energy / ref_energy
        return out

    def plots(self, folder: Path, test: Trajectories, trajectories: dict[str, torch.Tensor]) -> list[str]:
        """``vorticity_strip.png`` (reference, source and every corrected rollout at a few steps, the last one
        included, for the highest test Reynolds number), ``spectra.png`` (streamwise vorticity spectra over
        the last 100 steps) and ``kinetic_energy.png`` (over time), one panel per test Reynolds number."""
        return [self._strip(folder, test, trajectories), *self._physics_plots(folder, test, trajectories)]

    def _physics_plots(self, folder: Path, test: Trajectories, trajectories: dict[str, torch.Tensor]) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ref = test.reference[:, 1:].float().cpu()
        rows = {"reference": ref, **trajectories}
        window = min(100, ref.shape[1])
        group = test.group.cpu()
        n = len(test.values)
        figs = {
            "spectra.png": plt.subplots(1, n, figsize=(4 * n, 3.6), squeeze=False),
            "kinetic_energy.png": plt.subplots(1, n, figsize=(4 * n, 3.6), squeeze=False),
        }
        for name, traj in rows.items():
            style = {"reference": dict(color="k", lw=2), "source": dict(color="0.4", lw=1.6, ls="--")}.get(name, dict(lw=1.1))
            k, spec = flow_metrics.vorticity_spectrum(traj, frames=window)
            energy = flow_metrics.kinetic_energy(traj)
            for g in range(n):
                sel = group == g
                figs["spectra.png"][1][0, g].loglog(k[1:], spec[sel].mean(0)[1:], label=name, **style)
                figs["kinetic_energy.png"][1][0, g].plot(range(1, traj.shape[1] + 1), energy[sel].mean(0), label=name, **style)
        for file, (fig, axes) in figs.items():
            for g, value in enumerate(test.values):
                ax = axes[0, g]
                ax.set_title(f"Re = {value:g} ({self.regime(value)})", fontsize=9)
                ax.grid(alpha=0.3, which="both")
                if file == "spectra.png":
                    ax.set(xlabel="streamwise wavenumber (cycles per cell)", ylabel="vorticity power")
                else:
                    ax.set(xlabel="step", ylabel="kinetic energy")
            axes[0, 0].legend(fontsize=7)
            io.save_figure(folder / file, fig)
        return list(figs)

    def _strip(self, folder: Path, test: Trajectories, trajectories: dict[str, torch.Tensor]) -> str:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        s = len(test.values) - 1
        times = _strip_times(test.steps)
        rows = {"reference": test.reference[s, 1:].float().cpu(), **{n: t[s] for n, t in trajectories.items()}}
        vmax = float(flow_metrics.vorticity(rows["reference"][times]).abs().max())
        fig, axes = plt.subplots(len(times), len(rows), figsize=(1.6 * len(rows) + 1, 2.9 * len(times)), squeeze=False)
        for j, (name, traj) in enumerate(rows.items()):
            for i, t in enumerate(times):
                a = axes[i, j]
                im = a.imshow(flow_metrics.vorticity(traj[t]).numpy(), origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                a.set_xticks([])
                a.set_yticks([])
                if i == 0:
                    a.set_title(name, fontsize=8)
                if j == 0:
                    a.set_ylabel(f"step {t + 1}")
        fig.colorbar(im, ax=axes, shrink=0.6, label="vorticity")
        fig.suptitle(f"Re = {test.values[s]:g} ({self.regime(test.values[s])})")
        io.save_figure(folder / "vorticity_strip.png", fig)
        return "vorticity_strip.png"

    def log_images(self, log: RunLog, test: Trajectories, source: torch.Tensor, corrected: torch.Tensor, step: int) -> None:
        """``vorticity/{reference,source,corrected}`` strips of the highest test Re (the steps of the plot)."""
        s = len(test.values) - 1
        times = _strip_times(source.shape[1])
        reference = test.reference[s, 1:].float().cpu()
        vmax = float(flow_metrics.vorticity(reference[times]).abs().max())
        for name, traj in (("reference", reference), ("source", source[s]), ("corrected", corrected[s])):
            log.image(f"vorticity/{name}", _vorticity_strip(traj, times, vmax), step)

    @classmethod
    def migrate(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """A ``config.json`` of the first schema (``train``/``test`` data at the top level, ``optim``,
        ``wall_seconds``, ...) in the current one; a current one unchanged."""
        if "optim" not in raw:
            return raw
        try:
            optim = raw["optim"]
            return {
                "experiment": raw.get("experiment", cls.name),
                "data": {"train": raw["train"], "test": raw["test"]},
                "model": {
                    "kind": raw["model"],
                    "width": raw["width"],
                    "blocks": raw["blocks"],
                    "padding_mode": raw.get("padding_mode", "zeros"),
                    "reproject": raw.get("reproject", False),
                },
                "train": {
                    "variants": raw["variants"],
                    "protocols": raw["protocols"],
                    "seeds": raw["seeds"],
                    "iterations": optim["iterations"],
                    "seconds": raw["wall_seconds"],
                    "batch_size": optim["batch_size"],
                    "lr": optim["lr"],
                    "lr_final_factor": optim["lr_final_factor"],
                    "save_every": raw["save_every"],
                    "unroll_checkpoint": raw["checkpoint_every"],
                },
                "eval": {"horizons": raw["horizons"]},
                **{k: raw[k] for k in ("arch", "precision") if k in raw},
            }
        except (KeyError, TypeError) as e:
            raise ValueError(f"a karman configuration of the first schema lacks {e}") from None

    @classmethod
    def flag_overrides(cls, flags: Mapping[str, Any], cfg: Any) -> dict[str, Any]:
        """The shared ``train`` flags, plus ``--model KIND`` (``model.kind`` and its standard
        ``model.width``) and ``--reproject`` (``model.reproject``)."""
        out = super().flag_overrides(flags, cfg)
        if flags.get("model") is not None:
            out.update({"model.kind": flags["model"], "model.width": MODEL_WIDTH.get(flags["model"], cfg.model.width)})
        if flags.get("reproject"):
            out["model.reproject"] = True
        return out


# ----------------------------------------------------------------------------------------------- vorticity


def _strip_times(steps: int) -> list[int]:
    """The rollout steps (0-based indices into a trajectory of ``steps`` states) shown in the vorticity strips."""
    return sorted({min(t, steps - 1) for t in (9, 49, 99, steps - 1)})


def _vorticity_strip(traj: torch.Tensor, times: list[int], vmax: float) -> torch.Tensor:
    """The vorticity of ``traj[t]`` for each of ``times`` side by side (white gaps): an RGB image ``(3, H, W)``."""
    tiles = [colour_image(flow_metrics.vorticity(traj[t].float()), vmax) for t in times]
    gap = torch.ones(3, tiles[0].shape[1], 2)
    return torch.cat([x for tile in tiles for x in (tile, gap)][:-1], dim=2)


# ----------------------------------------------------------------------------------------------- entry points


def run(
    cfg: KarmanExperimentConfig,
    out: str | Path,
    *,
    cache: str | Path = "runs/cache",
    progress: bool = True,
    resume: bool = False,
    log: str = "none",
) -> dict:
    """Generate (or load from ``cache``) the data, train every variant × protocol × seed, evaluate, write the
    run folder (:func:`taichi_dp.learn.experiment.run`: the run-folder and resume rules); returns the metrics."""
    return experiment.run(KarmanExperiment(cfg), out, cache=cache, progress=progress, resume=resume, log=log)


def evaluate_run(run_dir: str | Path, *, cache: str | Path = "runs/cache", progress: bool = True, log: str = "none") -> dict:
    """Re-evaluate a karman run folder from its checkpoints (:func:`taichi_dp.learn.experiment.evaluate_run`)."""
    return experiment.evaluate_run(run_dir, cache=cache, progress=progress, log=log, expected=KarmanExperiment)


def load_config(run_dir: str | Path) -> KarmanExperimentConfig:
    """The configuration of a karman run folder (first-schema folders migrated); ``FileNotFoundError`` /
    ``ValueError`` naming the file otherwise."""
    return experiment.load_experiment(run_dir, KarmanExperiment).cfg


def load_run(
    run_dir: str | Path, protocol: str | None = None, seed: int | None = None
) -> tuple[KarmanExperimentConfig, dict[str, StaggeredCorrection]]:
    """Configuration and trained corrections ``{variant: StaggeredCorrection}`` of a finished run folder
    (first protocol and seed unless given); ``FileNotFoundError``/``ValueError`` naming the missing or
    corrupt file otherwise."""
    return experiment.load_run(run_dir, KarmanExperiment, protocol, seed)


def datagen(
    cfg: KarmanExperimentConfig, cache: str | Path, *, progress: bool = True, format: str = "pt"
) -> list[tuple[str, KarmanDataConfig, Path, dict]]:
    """Generate (or verify) the cached train and test data of ``cfg`` in ``cache``, in ``format`` (``"pt"``,
    ``"zarr"`` or ``"netcdf"``; a store needs the ``data`` extra): ``[(split, data configuration, cache
    file, data), ...]`` (``python -m taichi_dp datagen karman [--format zarr]``)."""
    from . import karman_data

    out = []
    for split in ("train", "test"):
        data_cfg = getattr(cfg.data, split)
        data = karman_data.load_or_generate(data_cfg, cache, progress=progress, format=format)
        out.append((split, data_cfg, karman_data.cache_path(data_cfg, cache, format), data))
    return out
