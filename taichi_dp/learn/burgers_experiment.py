"""Solver-in-the-loop on 1D Burgers: a coarse solver corrected towards a 4× finer reference.

Source solver: 32 periodic cells on [−1, 1], explicit diffusion + semi-Lagrangian advection (the PBDL
book's scheme), dt = 1/32. Reference: 4× finer in space and time with MacCormack advection and implicit
diffusion, averaged back onto the coarse cells. Random smooth initial states steepen into shocks; the
viscosity varies per trajectory and conditions the network. Training viscosities and held-out test
viscosities (inside the training range: interpolation; outside on both sides: extrapolation) never
overlap, and test initial states are new draws.

This module is the experiment's hooks on the shared skeleton (:mod:`taichi_dp.learn.experiment`): data,
source solver, conditioning, model, report paragraph and a plot of states. Variants (default NON and SOL-8:
the same network, optimiser, schedule and number of updates), protocols, seeds, training, evaluation and the
run folder are the skeleton's.

Configuration sections (``taichi_dp/presets/burgers_{default,quick}.toml``): ``data`` (grid, refinement,
trajectory length, data seed, ``data.train`` / ``data.test`` viscosities and initial states per
viscosity), ``model``, ``train`` (:class:`~taichi_dp.learn.experiment.TrainSection`), ``eval`` (horizons).

Also here: the ``burgers-inverse`` command's configuration and run folder (:func:`run_inverse`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from models import ResidualCNN

from ..grid import Boundary, Grid
from ..runtime import ensure_init
from ..scenes import random_sines
from ..solvers import Burgers, Repeated
from . import config as config_io
from . import experiment, io
from .experiment import EvalSection, Experiment, Metric, TrainSection, Trajectories, relative_l1, relative_l2

TRAIN_NUS = (0.003, 0.0055, 0.01, 0.018, 0.032)
TEST_NUS = (0.002, 0.004, 0.0075, 0.014, 0.024, 0.045)  # two outside the training range, four inside
TEST_SEED_OFFSET = 2**32  # the test initial states are drawn with seed data.seed + this (new draws)


@dataclass
class BurgersDataSet:
    """One reference data set: viscosities and random initial states per viscosity."""

    nus: tuple[float, ...] = TRAIN_NUS
    states: int = 16


@dataclass
class BurgersDataSection:
    """The ``data`` section: the grids, the trajectory length, the data seed and the two data sets."""

    n: int = 32  # coarse cells on [-1, 1]
    factor: int = 4  # reference refinement in space and time
    dt: float = 1.0 / 32
    steps: int = 64  # trajectory length in coarse steps (t = 2)
    seed: int = 0  # initial states: train drawn with this seed, test with seed + 2**32
    train: BurgersDataSet = field(default_factory=lambda: BurgersDataSet(TRAIN_NUS, 16))
    test: BurgersDataSet = field(default_factory=lambda: BurgersDataSet(TEST_NUS, 8))


@dataclass
class BurgersModel:
    """The ``model`` section: :class:`models.ResidualCNN` conditioned on the normalised log-viscosity."""

    width: int = 32
    blocks: int = 2
    kernel_size: int = 5


def _train() -> TrainSection:
    return TrainSection(variants=("NON", "SOL-8"), protocols=("updates",), iterations=600, seconds=60.0, batch_size=32, lr=1e-3)


@dataclass
class BurgersExperimentConfig:
    """Everything that defines a run (serialised to ``config.json``); the defaults are the ``default``
    preset (~1 minute on 2 CPU cores)."""

    data: BurgersDataSection = field(default_factory=BurgersDataSection)
    model: BurgersModel = field(default_factory=BurgersModel)
    train: TrainSection = field(default_factory=_train)
    eval: EvalSection = field(default_factory=lambda: EvalSection(horizons=(64,)))

    @classmethod
    def preset(cls, name: str) -> BurgersExperimentConfig:
        """The shipped preset ``name`` (``default``, ``quick``: ``taichi_dp/presets/burgers_<name>.toml``)."""
        return BurgersExperiment.preset(name)

    def validate(self) -> None:
        """``ValueError`` naming the field for an unusable configuration (before anything is written)."""
        d = self.data
        for name in ("n", "factor", "steps"):
            experiment.check_int(f"data.{name}", getattr(d, name), 1)
        experiment.check_int("data.seed", d.seed, 0)
        experiment.check_positive("data.dt", d.dt)
        for split in ("train", "test"):
            ds: BurgersDataSet = getattr(d, split)
            if not ds.nus or not all(math.isfinite(v) and v > 0 for v in ds.nus):
                raise ValueError(f"data.{split}.nus must be non-empty finite viscosities > 0, got {ds.nus}")
            experiment.check_int(f"data.{split}.states", ds.states, 1)
        for name in ("width", "blocks", "kernel_size"):
            experiment.check_int(f"model.{name}", getattr(self.model, name), 1)
        self.train.validate(d.steps + 1, "data.steps")
        self.eval.validate(d.steps, "data.steps")


@dataclass
class BurgersData:
    """Coarse-grid trajectories ``(S, T+1, 1, n)`` with their viscosities ``(S,)``."""

    reference: torch.Tensor
    nu: torch.Tensor


def _periodic_line(n: int) -> tuple[Grid, Boundary]:
    return Grid.line(n, -1.0, 1.0), Boundary.periodic(1)


def source_solver(cfg: BurgersExperimentConfig, nu: torch.Tensor) -> Burgers:
    """The coarse solver to be corrected, with one viscosity per batch element."""
    grid, bc = _periodic_line(cfg.data.n)
    return Burgers(grid, bc, nu=nu, dt=cfg.data.dt, diffusion="explicit", advection="semi_lagrangian")


def reference_data(cfg: BurgersExperimentConfig, nus: tuple[float, ...], per_nu: int, generator: torch.Generator) -> BurgersData:
    """Simulate ``per_nu`` random initial states per viscosity on the fine grid for ``cfg.data.steps`` coarse
    steps and average them onto the coarse grid."""
    rt = ensure_init()
    d = cfg.data
    grid, bc = _periodic_line(d.n * d.factor)
    nu = torch.tensor(nus, dtype=rt.dtype, device=rt.device).repeat_interleave(per_nu)
    fine = Burgers(grid, bc, nu=nu, dt=d.dt / d.factor, diffusion="implicit", advection="maccormack", cg_rtol=1e-8)
    step = Repeated(fine, d.factor)  # one coarse step of the fine solver
    u = random_sines(grid, nu.shape[0], generator=generator)
    frames = [F.avg_pool1d(u, d.factor)]
    with torch.no_grad():
        for _ in range(d.steps):
            u = step(u)
            frames.append(F.avg_pool1d(u, d.factor))
    return BurgersData(torch.stack(frames, dim=1).contiguous(), nu)


def nu_feature(cfg: BurgersExperimentConfig, nu: torch.Tensor) -> torch.Tensor:
    """Normalised log-viscosity: −1 … 1 across the training range."""
    lo, hi = math.log(min(cfg.data.train.nus)), math.log(max(cfg.data.train.nus))
    return (torch.log(nu) - 0.5 * (lo + hi)) / (0.5 * (hi - lo))


class BurgersExperiment(Experiment):
    """The Burgers hooks (see the module docstring)."""

    name = "burgers"
    command = "burgers"
    config_class = BurgersExperimentConfig
    default_preset = "default"
    title = "Burgers solver-in-the-loop"
    parameter = "ν"
    metrics: ClassVar[Mapping[str, Metric]] = {"l2": relative_l2, "l1": relative_l1}

    def make_data(self, split: str, *, cache: str | Path, progress: bool) -> Trajectories:
        d = self.cfg.data
        ds: BurgersDataSet = getattr(d, split)
        seed = d.seed if split == "train" else d.seed + TEST_SEED_OFFSET
        data = reference_data(self.cfg, ds.nus, ds.states, torch.Generator().manual_seed(seed))
        group = torch.arange(len(ds.nus)).repeat_interleave(ds.states)
        return Trajectories(reference=data.reference, params=data.nu, values=tuple(ds.nus), group=group)

    def source(self, params: torch.Tensor) -> Burgers:
        return source_solver(self.cfg, params)

    def condition(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"nu": nu_feature(self.cfg, params)}

    def make_model(self, seed: int) -> ResidualCNN:
        rt = ensure_init()
        m = self.cfg.model
        torch.manual_seed(seed)
        model = ResidualCNN(1, 1, conditioning=("nu",), width=m.width, blocks=m.blocks, kernel_size=m.kernel_size)
        return model.to(dtype=rt.dtype, device=rt.device)

    def train_values(self) -> tuple[float, ...]:
        return self.cfg.data.train.nus

    def describe(self, rt: Any) -> str:
        d = self.cfg.data
        return (
            f"Coarse grid {d.n} cells, reference {d.factor}× finer in space and time, {d.steps}-step rollouts "
            f"(dt = {d.dt:g}); train ν = {list(d.train.nus)}, {d.train.states} initial states each; "
            f"test ν = {list(d.test.nus)}, {d.test.states} new initial states each."
        )

    def plots(self, folder: Path, test: Trajectories, trajectories: dict[str, torch.Tensor]) -> list[str]:
        """``states.png``: the reference and every rollout at three times, for one test trajectory of the
        smallest viscosity (extrapolation)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        idx = int(torch.argmin(test.params))
        x = _periodic_line(self.cfg.data.n)[0].centers(0)
        steps = test.steps
        times = sorted({max(steps // 4, 1), max(steps // 2, 1), steps})
        fig, axes = plt.subplots(1, len(times), figsize=(4 * len(times), 3.2), sharey=True, squeeze=False)
        for a, t in zip(axes[0], times):
            a.plot(x, test.reference[idx, t, 0].cpu(), "k-", lw=2, label="reference")
            for name, traj in trajectories.items():
                a.plot(x, traj[idx, t - 1, 0], "-", label=name)
            a.set(title=f"t = {t * self.cfg.data.dt:.2f} (ν = {float(test.params[idx]):g})", xlabel="x")
        axes[0, 0].set_ylabel("u")
        axes[0, 0].legend(fontsize=8)
        io.save_figure(folder / "states.png", fig)
        return ["states.png"]

    def legacy_weights(self, out: Path, variant: str) -> Path | None:
        """First-layout run folders keep ``checkpoints/non.pt`` and ``checkpoints/sol<k>.pt``."""
        m = re.fullmatch(r"NON|SOL-([1-9]\d*)", variant)
        if m is None:
            return None
        return Path(out) / "checkpoints" / ("non.pt" if variant == "NON" else f"sol{m.group(1)}.pt")

    @classmethod
    def migrate(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """A ``config.json`` of the first schema (flat fields, ``unroll``, ``seed``, ``train`` = the trainer's
        settings) in the current one; a current one unchanged."""
        if "train_nus" not in raw:
            return raw
        try:
            t = raw["train"]
            return {
                "experiment": raw.get("experiment", cls.name),
                "data": {
                    "n": raw["n"],
                    "factor": raw["factor"],
                    "dt": raw["dt"],
                    "steps": raw["steps"],
                    "seed": raw["seed"],
                    "train": {"nus": raw["train_nus"], "states": raw["train_states"]},
                    "test": {"nus": raw["test_nus"], "states": raw["test_states"]},
                },
                "model": {"width": raw["width"], "blocks": raw["blocks"], "kernel_size": 5},
                "train": {
                    "variants": ["NON", f"SOL-{raw['unroll']}"],
                    "protocols": ["updates"],
                    "seeds": [t["seed"]],
                    "iterations": t["iterations"],
                    "seconds": 60.0 if t.get("max_seconds") is None else t["max_seconds"],
                    "batch_size": t["batch_size"],
                    "lr": t["lr"],
                    "lr_final_factor": t["lr_final_factor"],
                    "save_every": t["checkpoint_every"],
                    "unroll_checkpoint": 0,
                },
                "eval": {"horizons": [raw["steps"]]},
                **{k: raw[k] for k in ("arch", "precision") if k in raw},
            }
        except (KeyError, TypeError) as e:
            raise ValueError(f"a burgers configuration of the first schema lacks {e}") from None

    @classmethod
    def flag_overrides(cls, flags: Mapping[str, Any], cfg: Any) -> dict[str, Any]:
        """The shared ``train`` flags, plus ``--unroll K`` (every ``SOL-k`` of ``train.variants`` becomes
        ``SOL-K``) and ``--seed S`` (``data.seed`` and ``train.seeds = [S]``: one seed for the data, the
        initialisation and the sampling)."""
        out = super().flag_overrides(flags, cfg)
        if flags.get("unroll") is not None:
            variants = out.get("train.variants", cfg.train.variants)
            if isinstance(variants, str):
                variants = config_io.parse_value("train.variants", tuple[str, ...], variants)
            out["train.variants"] = tuple(re.sub(r"SOL-\d+", f"SOL-{flags['unroll']}", v) for v in variants)
        if flags.get("seed") is not None:
            out.update({"data.seed": flags["seed"], "train.seeds": (flags["seed"],)})
        return out


def evaluate(
    cfg: BurgersExperimentConfig, data: BurgersData, models: Mapping[str, torch.nn.Module | None]
) -> dict[str, torch.Tensor]:
    """Roll every model (``None``: the bare source) out from the initial states of ``data``; returns the
    ``(S, T)`` relative L2 errors per model (step 0 excluded)."""
    exp = BurgersExperiment(cfg)
    test = Trajectories(data.reference, data.nu, tuple(data.nu.tolist()), torch.arange(len(data.nu)))
    return {name: e["l2"] for name, e in exp.rollouts(models, test).items()}


def run(
    cfg: BurgersExperimentConfig,
    out: str | Path,
    *,
    cache: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    log: str = "none",
) -> dict:
    """Generate the data, train every variant × protocol × seed, evaluate on held-out viscosities and write
    the run folder (:func:`taichi_dp.learn.experiment.run`: the run-folder and resume rules; ``cache`` is
    unused: the data are regenerated from ``data.seed``). Returns the metrics."""
    return experiment.run(BurgersExperiment(cfg), out, progress=progress, resume=resume, log=log)


def evaluate_run(run_dir: str | Path, *, progress: bool = True, log: str = "none") -> dict:
    """Re-evaluate a burgers run folder from its checkpoints (:func:`taichi_dp.learn.experiment.evaluate_run`)."""
    return experiment.evaluate_run(run_dir, progress=progress, log=log, expected=BurgersExperiment)


def load_run(
    run_dir: str | Path, protocol: str | None = None, seed: int | None = None
) -> tuple[BurgersExperimentConfig, dict[str, ResidualCNN]]:
    """The configuration and trained correctors (``{"NON": ..., "SOL-k": ...}``) of a finished
    ``python -m taichi_dp burgers`` run folder (first protocol and seed unless given). Raises
    ``FileNotFoundError``/``ValueError`` naming the missing or corrupt file."""
    return experiment.load_run(run_dir, BurgersExperiment, protocol, seed)


# ----------------------------------------------------------------------------------------------- burgers-inverse


@dataclass
class InverseConfig:
    """The ``burgers-inverse`` command: Adam on the initial state through 16 solver steps."""

    iterations: int = 300
    lr: float = 0.02

    def validate(self) -> None:
        """``ValueError`` naming the field for an unusable configuration."""
        experiment.check_int("iterations", self.iterations, 1)
        experiment.check_positive("lr", self.lr)


def configure_inverse(
    *, config: str | Path | None = None, flags: Mapping[str, Any] | None = None, overrides: Sequence[str] = ()
) -> tuple[InverseConfig, dict[str, Any]]:
    """``(configuration, recorded runtime)`` of ``burgers-inverse``: the defaults, then the file ``config``
    (TOML or a run folder's ``config.json``), then the flags ``iterations``/``lr``, then ``key=value``."""
    raw = config_io.load_file(config) if config is not None else {}
    body, meta = config_io.split_meta(raw)
    if meta.get("experiment", "burgers-inverse") != "burgers-inverse":
        raise ValueError(f"config file {config} is for experiment {meta['experiment']!r}, not 'burgers-inverse'")
    cfg = config_io.from_dict(InverseConfig, body)
    cfg = config_io.apply_overrides(cfg, {k: flags[k] for k in ("iterations", "lr") if (flags or {}).get(k) is not None})
    cfg = config_io.apply_overrides(cfg, overrides)
    cfg.validate()
    return cfg, {k: meta[k] for k in config_io.RUNTIME_KEYS if k in meta}


def run_inverse(cfg: InverseConfig, out: str | Path, *, progress: bool = True, resume: bool = False) -> dict:
    """Recover Burgers' initial state from its state at step 16 and write the run folder ``out``
    (``config.json``, ``metrics.json``, ``plots/inverse.png``; the run-folder rules of every experiment:
    an existing run is refused unless ``resume`` with the same configuration, which recomputes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .inverse import burgers_inverse

    cfg.validate()
    rt = ensure_init()
    out = Path(out)
    config = {"experiment": "burgers-inverse", **config_io.to_dict(cfg), "arch": rt.arch, "precision": rt.precision}
    if not io.check_run_folder(out, config, "burgers-inverse", resume=resume):
        io.write_json(out / "config.json", config)
    r = burgers_inverse(cfg.iterations, cfg.lr, progress=progress)
    metrics = {"losses": r.losses, "reduction": r.reduction, "seconds": r.seconds}
    io.write_json(out / "metrics.json", metrics)
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
    ax[0].semilogy(r.losses)
    ax[0].set(xlabel="iteration", ylabel="loss at step 16", title=f"loss reduced {r.reduction:.1e}×")
    x = [-1 + (i + 0.5) * 2 / r.observed.shape[0] for i in range(r.observed.shape[0])]
    ax[1].plot(x, r.observed, "k-", lw=2, label="observation (step 16)")
    ax[1].plot(x, r.reached, "--", color="tab:green", label="reached from estimate")
    ax[1].set(xlabel="x", title="state at step 16")
    ax[1].legend()
    ax[2].plot(x, r.initial_true, "k-", lw=2, label="true u0 = -sin(πx)")
    ax[2].plot(x, r.initial_estimate, "-", color="tab:green", label="recovered u0")
    ax[2].set(xlabel="x", title="initial state")
    ax[2].legend()
    io.save_figure(out / "plots" / "inverse.png", fig)
    return metrics
