"""One skeleton for every solver-in-the-loop experiment: data → variants → training → evaluation → report.

An experiment is a small subclass of :class:`Experiment` that fills a few hooks (in the spirit of
Exponax's stepper base class): its configuration class, how to make the reference data
(:meth:`~Experiment.make_data`), the source solver for a batch of physical parameters
(:meth:`~Experiment.source`), the network's conditioning (:meth:`~Experiment.condition`), a fresh model
(:meth:`~Experiment.make_model`), a paragraph for the report and optional extra plots and images.
Everything else is shared and lives here, once:

- the configuration sections every experiment has, with the same meaning: ``data`` (the reference data
  sets, ``data.train``/``data.test``), ``model``, ``train`` (:class:`TrainSection`: variants, protocols,
  seeds, the budget and the optimiser) and ``eval`` (:class:`EvalSection`: horizons); loading from a preset,
  a file, flags and ``key=value`` overrides (:meth:`Experiment.configure`, :mod:`taichi_dp.learn.config`);
- variants as data: a variant name is stages joined by ``+`` (``NON``, ``PRE-4``, ``SOL-16``,
  ``NON+SOL-16``); each stage kind is an entry of :data:`LOSSES` (a new kind is a new entry, see
  :class:`LossKind`), and the stages share the budget equally;
- the windows of ``k + 1`` consecutive reference frames that SOL-k trains on (:func:`windows`);
- the run-folder rules (:func:`run`): an existing folder is refused unless ``resume`` with the same
  configuration (every differing field named), trainer states and weights under
  ``checkpoints/<protocol>/seed<s>/``, TensorBoard sub-runs ``<protocol>/seed<s>/<variant>``,
  ``metrics.json``, ``report.md`` and ``plots/``;
- evaluation with pluggable metrics (:attr:`Experiment.metrics`: name → ``fn(pred, ref) -> (S, T)``),
  summarised per horizon, per test case, per seed (:func:`evaluate_run`), rollouts that survive divergence
  (:func:`guarded_rollout`; the fraction still finite and the step where a variant's error crosses the
  source's are reported), and physics diagnostics per experiment (:meth:`Experiment.diagnostics`);
- a budget sweep (``train.sweep``): the swept variants trained at fractions of the wall-clock budget, for
  learning curves at equal cost; the autograd memory of one update of each variant (:func:`update_memory`);
- the report's verdict: NON's error ÷ the best SOL variant's per protocol, horizon and test case, with the
  seeds SOL wins (:func:`comparisons`), and where the learning curves cross.

A study (several variants, both protocols, several seeds and horizons, more metrics) is therefore a
configuration file plus, at most, metric functions.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..runtime import ensure_init
from ..solvers import rollout
from . import config as config_io
from . import distributed, io
from .autograd_memory import peak_saved_bytes
from .experiment_log import ExperimentLog, RunLog, make_log
from .flow_metrics import crossing_step, finite_steps
from .hybrid import hybrid_step, non_loss, sol_loss
from .metrics import relative_errors
from .trainer import TrainConfig, TrainResult, train

PROTOCOLS = ("updates", "wall")
"""``updates``: every variant gets ``train.iterations`` updates; ``wall``: ``train.seconds`` of training each."""

EXPERIMENTS = {
    "karman": "taichi_dp.learn.karman_experiment:KarmanExperiment",
    "burgers": "taichi_dp.learn.burgers_experiment:BurgersExperiment",
}
"""The registered experiments (``config.json`` ``"experiment"`` → class), imported on first use."""


# ----------------------------------------------------------------------------------------------- sections


def check_int(name: str, value: Any, minimum: int) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is a finite number ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass
class TrainSection:
    """The ``train`` section of every experiment: what is trained (variants × protocols × seeds) and how
    (the budget and Adam with cosine decay from ``lr`` to ``lr * lr_final_factor``)."""

    variants: tuple[str, ...] = ("NON", "SOL-4")
    protocols: tuple[str, ...] = ("updates",)  # see PROTOCOLS
    seeds: tuple[int, ...] = (0,)  # initialisation and sampling seed of each repetition
    iterations: int = 600  # updates per variant ('updates' protocol)
    seconds: float = 150.0  # wall-clock seconds of training per variant ('wall' protocol)
    batch_size: int = 32
    lr: float = 1e-3
    lr_final_factor: float = 0.01
    save_every: int = 0  # trainer-state checkpoints every this many updates (resume); 0: at the end only
    unroll_checkpoint: int = 0  # gradient checkpointing of SOL unrolls in chunks of this many steps (0: off)
    sweep: tuple[float, ...] = ()  # budget sweep: fractions of `seconds` (learning curves at equal cost)
    sweep_variants: tuple[str, ...] = ()  # the variants of the budget sweep (a subset of `variants`)

    def validate(self, frames: int, frames_name: str, kinds: Mapping[str, LossKind] | None = None) -> None:
        """``ValueError`` naming ``train.<field>`` for an unusable section; ``frames``: the number of frames of
        a training trajectory (named ``frames_name`` in the message), which every unroll must fit."""
        if not self.variants:
            raise ValueError(f"train.variants must not be empty, got {self.variants}")
        for v in self.variants:
            k = max(k for _, k in parse_variant(v, kinds))
            if k + 1 > frames:
                raise ValueError(f"train.variants: {v} needs {k + 1} consecutive frames but {frames_name} is {frames - 1}")
        if not self.protocols:
            raise ValueError(f"train.protocols must not be empty, got {self.protocols}")
        for p in self.protocols:
            if p not in PROTOCOLS:
                raise ValueError(f"train.protocols: {p!r} is not 'updates' or 'wall'")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"train.seeds must be a non-empty list of integers >= 0, got {self.seeds}")
        for name in ("variants", "protocols", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"train.{name} must not repeat a value, got {values}")
        check_int("train.iterations", self.iterations, 1)
        check_int("train.batch_size", self.batch_size, 1)
        check_int("train.save_every", self.save_every, 0)
        check_int("train.unroll_checkpoint", self.unroll_checkpoint, 0)
        check_positive("train.seconds", self.seconds)
        check_positive("train.lr", self.lr)
        for f in self.sweep:
            check_positive("train.sweep (a fraction of train.seconds)", f)
        if len(set(self.sweep)) != len(self.sweep):
            raise ValueError(f"train.sweep must not repeat a value, got {self.sweep}")
        if bool(self.sweep) != bool(self.sweep_variants):
            raise ValueError(
                f"train.sweep {self.sweep} and train.sweep_variants {self.sweep_variants}: give both (fractions of "
                f"train.seconds and the variants to train at each) or neither"
            )
        for v in self.sweep_variants:
            if v not in self.variants:
                raise ValueError(f"train.sweep_variants: {v!r} is not one of train.variants {self.variants}")
        if len(set(self.sweep_variants)) != len(self.sweep_variants):
            raise ValueError(f"train.sweep_variants must not repeat a value, got {self.sweep_variants}")
        if not (math.isfinite(self.lr_final_factor) and self.lr_final_factor >= 0):
            raise ValueError(f"train.lr_final_factor must be a finite number >= 0, got {self.lr_final_factor!r}")

    def budget(self, protocol: str, seed: int) -> TrainConfig:
        """The trainer settings of one variant under ``protocol`` (``updates``, ``wall`` or a budget-sweep
        protocol ``wall-<fraction>x``) with sampling seed ``seed``."""
        common = dict(batch_size=self.batch_size, lr=self.lr, lr_final_factor=self.lr_final_factor, seed=seed)
        if protocol == "updates":
            return TrainConfig(iterations=self.iterations, checkpoint_every=self.save_every, **common)
        seconds = self.seconds * sweep_fraction(protocol)
        return TrainConfig(iterations=10**9, checkpoint_every=self.save_every, max_seconds=seconds, **common)

    def sweep_protocols(self) -> dict[float, str]:
        """``{fraction: protocol}`` of the budget sweep; the fraction 1 is the ``wall`` protocol when that runs."""
        return {f: "wall" if f == 1 and "wall" in self.protocols else sweep_protocol(f) for f in self.sweep}

    def jobs(self) -> list[tuple[str, int, str]]:
        """Every training run ``(protocol, seed, variant)``: each protocol × seed × variant, then the budget
        sweep's extra runs (its fraction 1 reuses the ``wall`` runs)."""
        out = [(p, s, v) for p in self.protocols for s in self.seeds for v in self.variants]
        for p in self.sweep_protocols().values():
            out += [(p, s, v) for s in self.seeds for v in self.sweep_variants if (p, s, v) not in out]
        return out


def sweep_protocol(fraction: float) -> str:
    """The protocol name of a budget-sweep run with ``fraction`` × ``train.seconds``: ``wall-0.25x``."""
    return f"wall-{fraction:g}x"


def sweep_fraction(protocol: str) -> float:
    """The fraction of ``train.seconds`` of a wall-clock protocol (``wall``: 1; ``wall-<f>x``: f)."""
    if protocol == "wall":
        return 1.0
    m = re.fullmatch(r"wall-([0-9.e+-]+)x", protocol)
    if m is None:
        raise ValueError(f"protocol must be 'updates', 'wall' or 'wall-<fraction>x', got {protocol!r}")
    return float(m.group(1))


@dataclass
class EvalSection:
    """The ``eval`` section: rollouts from the first frame of every test trajectory, errors averaged over the
    first ``h`` steps for each horizon ``h``."""

    horizons: tuple[int, ...] = (100,)

    def validate(self, steps: int, steps_name: str) -> None:
        """``ValueError`` naming ``eval.horizons`` unless they are non-empty, >= 1 and <= ``steps``."""
        if not self.horizons or min(self.horizons) < 1 or max(self.horizons) > steps:
            raise ValueError(f"eval.horizons {self.horizons} must be non-empty, >= 1 and <= {steps_name} = {steps}")
        if len(set(self.horizons)) != len(self.horizons):
            raise ValueError(f"eval.horizons must not repeat a value, got {self.horizons}")


# ----------------------------------------------------------------------------------------------- data


@dataclass
class Trajectories:
    """Reference trajectories ``reference`` ``(S, T+1, *state)`` with one physical parameter per trajectory
    ``params`` ``(S,)`` (runtime dtype and device). ``values`` are the configured parameter values and
    ``group`` ``(S,)`` the index into ``values`` of each trajectory (the rows of the report)."""

    reference: torch.Tensor
    params: torch.Tensor
    values: tuple[float, ...]
    group: torch.Tensor

    @property
    def steps(self) -> int:
        """Recorded steps ``T`` of each trajectory."""
        return self.reference.shape[1] - 1


def window_count(reference: torch.Tensor, k: int) -> int:
    """The number of windows of ``k + 1`` consecutive frames in trajectories ``(S, T+1, ...)``."""
    return reference.shape[0] * (reference.shape[1] - k)


def windows(reference: torch.Tensor, k: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(trajectory index (B,), frames (B, k+1, ...))`` of the windows ``idx`` (in
    ``[0, window_count(reference, k))``) of ``k + 1`` consecutive frames: window ``i`` starts at frame
    ``i % (T+1-k)`` of trajectory ``i // (T+1-k)``."""
    idx = idx.to(reference.device)
    per = reference.shape[1] - k
    traj, start = idx // per, idx % per
    offsets = start[:, None] + torch.arange(k + 1, device=reference.device)[None, :]
    return traj, reference[traj[:, None], offsets]


# ----------------------------------------------------------------------------------------------- variants

BatchLoss = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossKind:
    """One kind of training stage: ``make(experiment, k, model, data) -> (batch_loss(indices), samples)``;
    ``unroll``: whether the stage is written ``KIND-k`` (``k >= 1``) or plain ``KIND`` (``k = 1``)."""

    make: Callable[[Experiment, int, nn.Module, Trajectories], tuple[BatchLoss, int]]
    unroll: bool


def supervised_loss(exp: Experiment, k: int, model: nn.Module, data: Trajectories) -> tuple[BatchLoss, int]:
    """NON (``k = 1``) and PRE-k: the uncorrected source is run ``j = 1..k`` steps from every reference frame
    ``r_t`` (pre-computed once, no solver gradient) and the model learns ``‖s_j + Δ(s_j) − r_{t+j}‖²``."""
    ref, params = data.reference, data.params
    starts = ref.shape[1] - k
    with torch.no_grad():
        r0 = ref[:, :starts].reshape(-1, *ref.shape[2:]).contiguous()
        src = rollout(exp.source(params.repeat_interleave(starts)), r0, k, include_initial=False)  # (S·starts, k, ...)
    tgt = torch.stack([ref[:, j : j + starts] for j in range(1, k + 1)], dim=2).reshape(src.shape)
    src, tgt = src.reshape(-1, *ref.shape[2:]), tgt.reshape(-1, *ref.shape[2:])
    p_all = params.repeat_interleave(starts * k)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(src.device)
        return non_loss(model, src[idx], tgt[idx], exp.condition(p_all[idx]))

    return batch_loss, src.shape[0]


def unrolled_loss(exp: Experiment, k: int, model: nn.Module, data: Trajectories) -> tuple[BatchLoss, int]:
    """SOL-k: ``k`` hybrid steps from ``r_t`` with gradients through every solver step, against
    ``r_{t+1..t+k}`` (the windows of :func:`windows`)."""

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        traj, frames = windows(data.reference, k, idx)
        p = data.params[traj]
        return sol_loss(exp.source(p), model, frames, exp.condition(p), checkpoint_every=exp.cfg.train.unroll_checkpoint)

    return batch_loss, window_count(data.reference, k)


LOSSES: dict[str, LossKind] = {
    "NON": LossKind(lambda exp, k, model, data: supervised_loss(exp, 1, model, data), unroll=False),
    "PRE": LossKind(supervised_loss, unroll=True),
    "SOL": LossKind(unrolled_loss, unroll=True),
}
"""The stage kinds every experiment knows (an experiment may extend its own :attr:`Experiment.losses`)."""

_STAGE = re.compile(r"^([A-Z][A-Z0-9_]*)(?:-([1-9]\d*))?$")


def parse_variant(name: str, kinds: Mapping[str, LossKind] | None = None) -> list[tuple[str, int]]:
    """The stages ``[(kind, k), ...]`` of a variant name (``"NON+SOL-16"`` → ``[("NON", 1), ("SOL", 16)]``);
    ``ValueError`` naming it when a stage is not a known kind (with its ``-k`` where one is needed)."""
    kinds = LOSSES if kinds is None else kinds
    stages = []
    for part in name.split("+") if isinstance(name, str) else [None]:
        m = _STAGE.match(part or "")
        kind = kinds.get(m.group(1)) if m else None
        if kind is None or (kind.unroll != (m.group(2) is not None)):
            forms = ", ".join(f"{n}-k" if kinds[n].unroll else n for n in kinds)
            raise ValueError(f"train.variants: {name!r} is not a variant: stages joined by '+', each one of {forms} (k >= 1)")
        stages.append((m.group(1), int(m.group(2) or 1)))
    return stages


def variant_stem(variant: str) -> str:
    """The file stem of a variant's checkpoints: ``NON+SOL-16`` → ``non_sol-16``."""
    return variant.lower().replace("+", "_")


def update_memory(exp: Experiment, variant: str, data: Trajectories) -> dict[str, float]:
    """Memory autograd keeps for one update of ``variant`` (a batch of ``train.batch_size`` samples of
    ``data``, the largest over its stages), in MiB: ``stored`` with the configured
    ``train.unroll_checkpoint``, ``stored_without_checkpointing``, and ``peak`` (``stored`` plus, when
    checkpointing, the estimated chunk that backward recomputes: ``stored_without · chunk / k``). See
    :mod:`taichi_dp.learn.autograd_memory`."""
    model = exp.make_model(0)
    train_cfg = exp.cfg.train
    configured = train_cfg.unroll_checkpoint
    out = {"stored": 0.0, "stored_without_checkpointing": 0.0, "peak": 0.0}
    try:
        for kind, k in parse_variant(variant, exp.losses):
            measured = {}
            for every in sorted({configured, 0}):
                train_cfg.unroll_checkpoint = every
                batch_loss, samples = exp.losses[kind].make(exp, k, model, data)
                idx = torch.arange(train_cfg.batch_size) % samples
                measured[every] = peak_saved_bytes(functools.partial(batch_loss, idx)) / 2**20
            stored, without = measured[configured], measured[0]
            recomputed = without * min(configured, k) / k if configured and stored < without else 0.0  # a checkpointed unroll
            peak = stored + recomputed
            for key, value in (("stored", stored), ("stored_without_checkpointing", without), ("peak", peak)):
                out[key] = max(out[key], value)
    finally:
        train_cfg.unroll_checkpoint = configured
        model.zero_grad(set_to_none=True)
    return out


# ----------------------------------------------------------------------------------------------- metrics

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def relative_l1(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-trajectory, per-step relative L1 error ``(S, T)`` (the PBDL book's metric)."""
    return relative_errors(pred, ref, 1)


def relative_l2(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-trajectory, per-step relative L2 error ``(S, T)``."""
    return relative_errors(pred, ref, 2)


# ----------------------------------------------------------------------------------------------- the base


class Experiment:
    """The hooks of one experiment around a configuration ``cfg`` (see the module docstring).

    Class attributes a subclass sets: ``name`` (``config.json``'s ``"experiment"``, the preset prefix),
    ``command`` (the command line that makes its run folders), ``config_class``, ``default_preset``,
    ``title``, ``parameter`` (the per-trajectory physical parameter, e.g. ``"Re"``), and optionally
    ``metrics`` (the first one is the report's headline), ``losses``, ``diagnostic_labels`` (with
    :meth:`diagnostics`) and ``resume_free``.
    """

    name: ClassVar[str] = ""
    command: ClassVar[str] = ""
    config_class: ClassVar[type]
    default_preset: ClassVar[str] = "quick"
    title: ClassVar[str] = ""
    parameter: ClassVar[str] = ""
    metrics: ClassVar[Mapping[str, Metric]] = {"l1": relative_l1, "l2": relative_l2}
    losses: ClassVar[Mapping[str, LossKind]] = LOSSES
    diagnostic_labels: ClassVar[Mapping[str, str]] = {}  # :meth:`diagnostics` name -> the report's heading
    resume_free: ClassVar[tuple[str, ...]] = ("train.save_every",)  # may change on --resume (not the result)

    def __init__(self, cfg: Any) -> None:
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"cfg must be a {self.config_class.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg

    # ---- hooks every experiment fills

    def make_data(self, split: str, *, cache: str | Path, progress: bool) -> Trajectories:
        """The reference trajectories of ``split`` (``"train"`` or ``"test"``), runtime dtype and device."""
        raise NotImplementedError

    def source(self, params: torch.Tensor) -> Any:
        """The source solver (a stepper) with one physical parameter per batch element ``params`` ``(B,)``."""
        raise NotImplementedError

    def condition(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network's conditioning inputs for the parameters ``params`` ``(B,)``."""
        raise NotImplementedError

    def make_model(self, seed: int) -> nn.Module:
        """A fresh model with initialisation seed ``seed`` (runtime dtype and device)."""
        raise NotImplementedError

    def train_values(self) -> tuple[float, ...]:
        """The parameter values of the training data (a test value inside their range is interpolation)."""
        raise NotImplementedError

    def describe(self, rt: Any) -> str:
        """The report's paragraph about the set-up (below its title)."""
        return ""

    # ---- optional hooks

    def validate(self) -> None:
        """``ValueError`` naming the field of an unusable configuration (before anything is written)."""
        self.cfg.validate()

    def plots(self, folder: Path, test: Trajectories, trajectories: dict[str, torch.Tensor]) -> list[str]:
        """Extra figures written into ``folder`` (file names returned for the report); ``trajectories``:
        name → rollout ``(S, T, ...)`` (CPU float32) of ``"source"`` and every ``"variant (protocol)"``."""
        return []

    def log_images(self, log: RunLog, test: Trajectories, source: torch.Tensor, corrected: torch.Tensor, step: int) -> None:
        """Images of one trained model's rollout ``corrected`` next to ``source`` for the experiment log."""

    def legacy_weights(self, out: Path, variant: str) -> Path | None:
        """Where a run folder of an older layout keeps the weights of ``variant`` (``None``: nowhere)."""
        return None

    @classmethod
    def migrate(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """A configuration dict of an older schema in the current one (unchanged when it is current)."""
        return raw

    @classmethod
    def flag_overrides(cls, flags: Mapping[str, Any], cfg: Any) -> dict[str, Any]:
        """The configuration keys the command-line flags in ``flags`` (argparse's names; ``None``/``False``:
        not given) set, ``{dotted key: value}``, given the configuration ``cfg`` from the file. The base
        class maps the ``train`` flags every experiment has."""
        mapping = {
            "variants": "train.variants",
            "protocols": "train.protocols",
            "seeds": "train.seeds",
            "iterations": "train.iterations",
            "seconds": "train.seconds",
            "checkpoint_every": "train.save_every",
        }
        return {key: flags[flag] for flag, key in mapping.items() if flags.get(flag) is not None}

    # ---- configuration

    @classmethod
    def configure(
        cls,
        *,
        preset: str | None = None,
        config: str | Path | None = None,
        flags: Mapping[str, Any] | None = None,
        overrides: Sequence[str] = (),
    ) -> tuple[Any, dict[str, Any]]:
        """``(configuration, runtime)`` from, in increasing precedence: the preset ``preset`` (default
        :attr:`default_preset`) or the file ``config`` (TOML, or a run folder's ``config.json``), the
        command-line ``flags`` (:meth:`flag_overrides`), and the ``key=value`` ``overrides``. The result is
        validated. ``runtime``: the ``arch``/``precision`` recorded in the file (a ``config.json``), if any.

        Raises:
            ValueError: both ``preset`` and ``config``; a file of another experiment; an unknown key or a
                bad value (named); an invalid configuration.
        """
        if preset is not None and config is not None:
            raise ValueError(f"--preset {preset} and --config {config}: give one of them (flags and KEY=VALUE override either)")
        path = Path(config) if config is not None else config_io.preset_file(cls.name, preset or cls.default_preset)
        raw = cls.migrate(config_io.load_file(path))
        body, meta = config_io.split_meta(raw)
        if meta.get("experiment", cls.name) != cls.name:
            raise ValueError(f"config file {path} is for experiment {meta['experiment']!r}, not {cls.name!r}")
        try:
            cfg = config_io.from_dict(cls.config_class, body)
        except ValueError as e:
            raise ValueError(f"config file {path}: {e}") from None
        if flags:
            cfg = config_io.apply_overrides(cfg, cls.flag_overrides(flags, cfg))
        if overrides:
            cfg = config_io.apply_overrides(cfg, overrides)
        cls(cfg).validate()
        return cfg, {k: meta[k] for k in config_io.RUNTIME_KEYS if k in meta}

    @classmethod
    def preset(cls, name: str) -> Any:
        """The configuration of the shipped preset ``name`` (``taichi_dp/presets/<experiment>_<name>.toml``)."""
        return cls.configure(preset=name)[0]

    def config_json(self, rt: Any) -> dict[str, Any]:
        """What ``config.json`` holds: the experiment name, the configuration, the arch and precision."""
        return {"experiment": self.name, **config_io.to_dict(self.cfg), "arch": rt.arch, "precision": rt.precision}

    # ---- shared pieces

    def train_variant(
        self,
        variant: str,
        protocol: str,
        seed: int,
        data: Trajectories,
        *,
        state_dir: Path | None = None,
        progress: bool = True,
        log: RunLog | None = None,
    ) -> tuple[nn.Module, TrainResult]:
        """Train one variant under one protocol with one seed; ``state_dir`` holds its resumable trainer
        states (one per stage); ``log`` records the training curve (all stages as one curve). A variant of
        ``n`` stages gives each ``1/n`` of the budget; stage ``i`` samples with seed ``seed + 10000 i``."""
        model = self.make_model(seed)
        net = distributed.wrap(model)  # DDP in a torchrun job (gradients all-reduced over ranks), else the model
        budget = self.cfg.train.budget(protocol, seed)
        stages = parse_variant(variant, self.losses)
        n = len(stages)
        if n > 1:
            budget = (
                dataclasses.replace(budget, iterations=budget.iterations // n)
                if protocol == "updates"
                else dataclasses.replace(budget, max_seconds=budget.max_seconds / n)
            )
        total = TrainResult()
        for i, (kind, k) in enumerate(stages):
            loss, samples = self.losses[kind].make(self, k, net, data)
            path = None if state_dir is None else state_dir / f"{variant_stem(variant)}.{i}.state.pt"
            callback = None if log is None else log.training_callback(offset=total.iterations)
            optim = dataclasses.replace(budget, seed=seed + 10_000 * i)
            desc = f"{variant} ({protocol}, seed {seed})"
            r = train(net, loss, samples, optim, desc=desc, progress=progress, checkpoint=path, callback=callback)
            total.losses += r.losses
            total.seconds += r.seconds
            total.iterations += r.iterations
        return model, total

    def loss(self, stage: str, model: nn.Module, data: Trajectories) -> tuple[BatchLoss, int]:
        """``(batch_loss(indices), number of samples)`` of one training stage (e.g. ``"SOL-4"``) of ``model``
        on ``data`` (what :meth:`train_variant` minimises; benchmarks time it)."""
        ((kind, k),) = parse_variant(stage, self.losses)
        return self.losses[kind].make(self, k, model, data)

    def rollouts(self, models: Mapping[str, nn.Module | None], test: Trajectories) -> dict[str, dict[str, torch.Tensor]]:
        """Roll every model (``None``: the bare source) out from frame 0 of every test trajectory:
        ``{name: {metric: (S, T) errors, ..., "finite": (S, T) bool, "traj": (S, T, ...) float32}}`` (CPU).
        ``finite[s, t]``: every value of trajectory ``s`` is finite up to step ``t``. From the first
        non-finite state on, a rollout's error counts as 1 (the relative error of predicting zero: no
        information left), so a diverged rollout cannot look good by being left out."""
        solver, cond = self.source(test.params), self.condition(test.params)
        ref = test.reference
        out = {}
        with torch.no_grad():
            for name, model in models.items():
                traj = guarded_rollout(solver, model, ref[:, 0].contiguous(), test.steps, cond)
                finite = finite_steps(traj).cpu()
                out[name] = {m: torch.where(finite, fn(traj, ref[:, 1:]).cpu(), 1.0) for m, fn in self.metrics.items()}
                out[name]["finite"] = finite
                out[name]["traj"] = traj.float().cpu()
        return out

    def diagnostics(self, traj: torch.Tensor, test: Trajectories) -> dict[str, torch.Tensor]:
        """Physics of rollouts beyond the error, one number per trajectory: ``{name: (S,)}`` (NaN where
        undefined) for ``traj`` ``(S, T, ...)`` (CPU float32; the reference itself is passed too, to report
        its values). The base class has none; :attr:`diagnostic_labels` names them for the report."""
        return {}

    def regime(self, value: float) -> str:
        """``"interpolation"`` inside the range of the training parameters, ``"extrapolation"`` outside."""
        lo, hi = min(self.train_values()), max(self.train_values())
        return "interpolation" if lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9) else "extrapolation"


def guarded_rollout(
    solver: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module | None,
    u0: torch.Tensor,
    steps: int,
    conditioning: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """:func:`~taichi_dp.learn.hybrid.hybrid_rollout` without gradients that survives divergence: a trajectory
    whose state stops being finite is NaN from that step on while the others go on (the solvers refuse
    non-finite input, so a diverged state is replaced by its initial one before the next step and its
    frames are overwritten). Identical to the plain rollout while every state is finite. ``(B, T, ...)``."""
    frames = []
    dead = torch.zeros(u0.shape[0], dtype=torch.bool, device=u0.device)
    u = u0
    with torch.no_grad():
        for _ in range(steps):
            if dead.any():
                u = torch.where(dead.view(-1, *[1] * (u.dim() - 1)), u0, u).contiguous()
            u = hybrid_step(solver, model, u, conditioning)
            dead |= ~torch.isfinite(u).flatten(1).all(1)
            frames.append(torch.where(dead.view(-1, *[1] * (u.dim() - 1)), float("nan"), u))
    return torch.stack(frames, dim=1)


# ----------------------------------------------------------------------------------------------- run folders


def experiment_class(name: str) -> type[Experiment]:
    """The registered experiment ``name`` (:data:`EXPERIMENTS`); ``ValueError`` naming the known ones."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {', '.join(EXPERIMENTS)}, got {name!r}")
    module, attr = EXPERIMENTS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def _commands() -> str:
    return " or ".join(f"'python -m taichi_dp {experiment_class(n).command}'" for n in EXPERIMENTS)


def load_experiment(run_dir: str | Path, expected: type[Experiment] | None = None) -> Experiment:
    """The experiment (with its configuration) of a run folder, from its verified ``config.json`` (older
    schemas are migrated); ``FileNotFoundError``/``ValueError`` naming the file otherwise. ``expected``:
    the experiment class the folder must belong to."""
    return read_run(run_dir, expected)[0]


def read_run(run_dir: str | Path, expected: type[Experiment] | None = None) -> tuple[Experiment, dict[str, Any]]:
    """``(experiment, recorded runtime {"arch", "precision"})`` of a run folder (see :func:`load_experiment`)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        what = f"'python -m taichi_dp {expected.command}'" if expected is not None else _commands()
        raise FileNotFoundError(f"{path} not found: is {run_dir} a {what} run folder?")
    raw = io.read_run_config(run_dir, expected.command if expected is not None else "train karman")
    name = raw.get("experiment")
    if expected is not None and name != expected.name:
        raise ValueError(f"{path} is corrupt or from another experiment: experiment is {name!r}, not {expected.name!r}")
    if name not in EXPERIMENTS:
        raise ValueError(f"{path} is from experiment {name!r}: eval re-evaluates {', '.join(EXPERIMENTS)} run folders")
    cls = experiment_class(name)
    try:
        body, meta = config_io.split_meta(cls.migrate(raw))
        exp = cls(config_io.from_dict(cls.config_class, body))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path} is corrupt or from another experiment: {e}") from None
    return exp, {k: meta[k] for k in config_io.RUNTIME_KEYS if k in meta}


def checkpoint_dir(out: Path, protocol: str, seed: int) -> Path:
    """The folder of one protocol and seed's weights and trainer states: ``checkpoints/<protocol>/seed<s>``."""
    return Path(out) / "checkpoints" / protocol / f"seed{seed}"


def weights_file(out: Path, protocol: str, seed: int, variant: str) -> Path:
    """The weights file (``{"model", "losses", "seconds"}``) of one trained variant."""
    return checkpoint_dir(out, protocol, seed) / f"{variant_stem(variant)}.pt"


def state_files(exp: Experiment, out: Path, protocol: str, seed: int, variant: str) -> list[Path]:
    """The trainer-state files of one variant (one per stage), as :meth:`Experiment.train_variant` names them."""
    stages = len(parse_variant(variant, exp.losses))
    return [checkpoint_dir(out, protocol, seed) / f"{variant_stem(variant)}.{i}.state.pt" for i in range(stages)]


def _state_finished(state: dict) -> bool:
    optim = state.get("config") or {}
    budget = optim.get("max_seconds")
    return len(state["losses"]) >= optim.get("iterations", math.inf) or (budget is not None and state["seconds"] >= budget)


def _rebuild_weights(exp: Experiment, out: Path, protocol: str, seed: int, variant: str, reason: Exception) -> dict:
    """Rewrite a damaged weights file from the variant's finished trainer states (the same model, losses and
    seconds); ``ValueError``/``FileNotFoundError`` naming the file when that is impossible."""
    file = weights_file(out, protocol, seed, variant)
    states = []
    for path in state_files(exp, out, protocol, seed, variant):
        if not path.is_file():
            raise type(reason)(f"{reason} (and it cannot be rebuilt: trainer state {path} is missing)") from None
        state = io.load_checkpoint(path)
        if not _state_finished(state):
            raise ValueError(f"{reason} (and it cannot be rebuilt: trainer state {path} is unfinished)") from None
        states.append(state)
    blob = {
        "model": states[-1]["model"],
        "losses": [v for s in states for v in s["losses"]],
        "seconds": sum(float(s["seconds"]) for s in states),
    }
    if distributed.is_main():
        io.save_checkpoint(file, blob)
    warnings.warn(f"{reason}; rebuilt {file} from its trainer state(s)", RuntimeWarning, stacklevel=3)
    return blob


def _load_weights(exp: Experiment, out: Path, protocol: str, seed: int, variant: str, *, rebuild: bool) -> tuple[Path, dict]:
    """``(file, verified weights)`` of one variant; a damaged file is rebuilt from the intact trainer states
    when ``rebuild`` (``rebuild=False``: read-only, the error says how to rebuild it). A folder of an older
    layout is read from :meth:`Experiment.legacy_weights`."""
    file = weights_file(out, protocol, seed, variant)
    if not file.is_file():
        legacy = exp.legacy_weights(out, variant)
        if legacy is not None and legacy.is_file():
            return legacy, io.load_checkpoint(legacy)
    try:
        return file, io.load_checkpoint(file)
    except ValueError as e:  # damaged (IntegrityError) or unreadable
        if not any(p.is_file() for p in state_files(exp, out, protocol, seed, variant)):
            raise
        if not rebuild:
            raise ValueError(f"{e} ('python -m taichi_dp eval {out}' rebuilds it from its trainer state)") from None
        return file, _rebuild_weights(exp, out, protocol, seed, variant, e)


def _finished(exp: Experiment, out: Path, protocol: str, seed: int, variant: str) -> bool:
    """Whether a variant finished in an earlier session (its weights file verifies, or was rebuilt)."""
    if not weights_file(out, protocol, seed, variant).is_file():
        return False
    _load_weights(exp, out, protocol, seed, variant, rebuild=True)
    return True


def load_model(
    exp: Experiment, out: Path, protocol: str, seed: int, variant: str, *, rebuild: bool = True
) -> tuple[nn.Module, dict]:
    """``(trained model in eval mode, weights dict)`` of one variant of the run folder ``out``."""
    file, state = _load_weights(exp, Path(out), protocol, seed, variant, rebuild=rebuild)
    model = exp.make_model(seed)
    try:
        model.load_state_dict(state["model"])
        if not state["losses"]:
            raise KeyError("losses is empty")
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"{file} does not fit the run's model: {e}") from None
    return model.eval(), state


def log_name(protocol: str, seed: int, variant: str) -> str:
    """The TensorBoard sub-run of one trained model: ``<protocol>/seed<s>/<variant>``."""
    return f"{protocol}/seed{seed}/{variant}"


def run(
    exp: Experiment,
    out: str | Path,
    *,
    cache: str | Path = "runs/cache",
    progress: bool = True,
    resume: bool = False,
    log: str = "none",
) -> dict:
    """Make the data, train every variant × protocol × seed, evaluate, write the run folder; returns the
    metrics also written to ``metrics.json``.

    An existing run folder is an error (``FileExistsError``) unless ``resume``, which needs the configuration
    (arch and precision included) it was started with (``ValueError`` naming each differing field; only
    :attr:`Experiment.resume_free` fields may differ), loads the variants that finished and continues the
    others from their trainer states. ``log="tensorboard"`` also writes training curves, validation errors
    and images to ``out/tensorboard/<protocol>/seed<s>/<variant>`` (rank 0 only); it is not part of
    ``config.json`` (it does not change the result), so a resumed run may log differently.
    """
    exp.validate()
    explog = make_log(log if distributed.is_main() else "none", out)  # a missing package: reported before any work
    rt = ensure_init()
    out = Path(out)
    fresh = not io.check_run_folder(out, exp.config_json(rt), exp.command, resume=resume, free=exp.resume_free)
    distributed.barrier()  # every rank has checked the folder before rank 0 writes into it
    if distributed.is_main() and fresh:
        io.write_json(out / "config.json", exp.config_json(rt))
    t0 = time.perf_counter()
    train_data = exp.make_data("train", cache=cache, progress=progress)
    test_data = exp.make_data("test", cache=cache, progress=progress)
    datagen_s = time.perf_counter() - t0
    cfg = exp.cfg
    with explog:
        for protocol, seed, variant in cfg.train.jobs():
            if resume and _finished(exp, out, protocol, seed, variant):
                continue  # finished in an earlier session
            model, result = exp.train_variant(
                variant,
                protocol,
                seed,
                train_data,
                state_dir=checkpoint_dir(out, protocol, seed),
                progress=progress,
                log=explog.run(log_name(protocol, seed, variant)) if explog.enabled else None,
            )
            if distributed.is_main():
                blob = {"model": model.state_dict(), "losses": result.losses, "seconds": result.seconds}
                io.save_checkpoint(weights_file(out, protocol, seed, variant), blob)
        if not distributed.is_main():
            return {}  # rank 0 evaluates and writes the report
        with distributed.single_process():
            cost = {v: update_memory(exp, v, train_data) for v in cfg.train.variants}
            return _evaluate(exp, out, test_data, progress=progress, datagen_seconds=datagen_s, explog=explog, memory=cost)


def evaluate_run(
    run_dir: str | Path,
    *,
    cache: str | Path = "runs/cache",
    progress: bool = True,
    log: str | ExperimentLog = "none",
    expected: type[Experiment] | None = None,
) -> dict:
    """Evaluate every trained variant × protocol × seed of a run folder (of any registered experiment, or of
    ``expected``) on its test data and (re)write ``metrics.json``, ``report.md`` and ``plots/``; returns the
    metrics. A damaged weights file is rebuilt from its trainer states. ``log``: a kind of
    :func:`~taichi_dp.learn.experiment_log.make_log`, or an open log (left open)."""
    exp = load_experiment(run_dir, expected)
    own = isinstance(log, str)
    explog = make_log(log, run_dir) if isinstance(log, str) else log
    try:
        test = exp.make_data("test", cache=cache, progress=progress)
        return _evaluate(exp, Path(run_dir), test, progress=progress, datagen_seconds=None, explog=explog)
    finally:
        if own:
            explog.close()


def load_run(
    run_dir: str | Path, expected: type[Experiment] | None = None, protocol: str | None = None, seed: int | None = None
) -> tuple[Any, dict[str, nn.Module]]:
    """``(configuration, {variant: trained model})`` of a finished run folder (first protocol and seed unless
    given); read-only: a damaged file is an error naming it (``FileNotFoundError``/``ValueError``)."""
    exp = load_experiment(run_dir, expected)
    train_cfg = exp.cfg.train
    protocol = protocol or train_cfg.protocols[0]
    seed = train_cfg.seeds[0] if seed is None else seed
    models = {v: load_model(exp, Path(run_dir), protocol, seed, v, rebuild=False)[0] for v in train_cfg.variants}
    return exp.cfg, models


def _evaluate(
    exp: Experiment,
    out: Path,
    test: Trajectories,
    *,
    progress: bool,
    datagen_seconds: float | None,
    explog: ExperimentLog,
    memory: Mapping[str, Mapping[str, float]] | None = None,
) -> dict:
    cfg = exp.cfg
    errors: dict[str, dict] = {}
    training: dict[str, dict] = {}
    losses: dict[str, list[float]] = {}
    trajectories = {}
    physics: dict[str, Any] = {"reference": exp.diagnostics(test.reference[:, 1:].float().cpu(), test)}
    source = exp.rollouts({"source": None}, test)["source"]
    source["physics"] = exp.diagnostics(source["traj"], test)
    trajectories["source"] = source["traj"]
    groups: dict[tuple[str, int], list[str]] = {}
    for protocol, seed, variant in cfg.train.jobs():
        groups.setdefault((protocol, seed), []).append(variant)
    for (protocol, seed), variants in groups.items():
        trained = {}
        for variant in variants:
            trained[variant], state = load_model(exp, out, protocol, seed, variant)
            training.setdefault(protocol, {}).setdefault(variant, []).append(
                {
                    "seed": seed,
                    "iterations": len(state["losses"]),
                    "seconds": float(state["seconds"]),
                    "final_loss": float(state["losses"][-1]),
                }
            )
            if seed == cfg.train.seeds[0] and protocol in cfg.train.protocols:
                losses[f"{variant} ({protocol})"] = [float(x) for x in state["losses"]]
        for variant, e in exp.rollouts(trained, test).items():
            e["physics"] = exp.diagnostics(e["traj"], test)
            if seed == cfg.train.seeds[0] and protocol in cfg.train.protocols:
                trajectories[f"{variant} ({protocol})"] = e["traj"]
            if explog.enabled:
                steps = training[protocol][variant][-1]["iterations"]
                run_log = explog.run(log_name(protocol, seed, variant))
                run_log.scalars(_validation_scalars(exp, test, e, source), steps)
                exp.log_images(run_log, test, source["traj"], e["traj"], steps)
            del e["traj"]
            errors.setdefault(protocol, {}).setdefault(variant, []).append(e)
    metrics = summarize(exp, test, source, errors, training, physics["reference"])
    if memory is None and (out / "metrics.json").is_file():  # re-evaluation: keep the measured memory
        try:
            memory = io.read_json(out / "metrics.json").get("memory")
        except ValueError:
            memory = None
    if memory:
        metrics["memory"] = {k: dict(v) for k, v in memory.items()}
    if datagen_seconds is not None:
        metrics["datagen_seconds"] = datagen_seconds
    io.write_json(out / "metrics.json", metrics)
    figures = ["error_over_time.png", *_error_plot(exp, out / "plots", metrics, losses)]
    figures += _horizon_plot(exp, out / "plots", metrics)
    figures += _sweep_plot(exp, out / "plots", metrics)
    figures += exp.plots(out / "plots", test, trajectories)
    io.write_text(out / "report.md", report(exp, metrics, figures))
    return metrics


# ----------------------------------------------------------------------------------------------- metrics.json


def _group_means(test: Trajectories, per_traj: torch.Tensor) -> torch.Tensor:
    """Means of ``per_traj`` ``(..., S)`` over the trajectories of each test value: ``(..., G)``."""
    group = test.group.cpu()
    return torch.stack([per_traj[..., group == g].mean(-1) for g in range(len(test.values))], dim=-1)


def _spread(per_seed: torch.Tensor) -> dict:
    """``{"mean", "min", "max", "per_seed"}`` of per-seed values (NaN-aware: a seed whose value is undefined
    is left out of the mean; all undefined gives NaN)."""
    ok = per_seed[torch.isfinite(per_seed)]
    nan = float("nan")
    return {
        "mean": float(ok.mean()) if ok.numel() else nan,
        "min": float(ok.min()) if ok.numel() else nan,
        "max": float(ok.max()) if ok.numel() else nan,
        "per_seed": per_seed.tolist(),
    }


def _finite_fraction(per_seed: list[dict], h: int) -> float:
    """The fraction of rollouts (trajectories × seeds) still finite after ``h`` steps."""
    return float(torch.stack([e["finite"][:, h - 1] for e in per_seed]).float().mean())


def _nan_group_means(test: Trajectories, per_traj: torch.Tensor) -> torch.Tensor:
    """NaN-aware :func:`_group_means`."""
    group = test.group.cpu()
    return torch.stack([per_traj[..., group == g].nanmean(-1) for g in range(len(test.values))], dim=-1)


def summarize(
    exp: Experiment,
    test: Trajectories,
    source: dict,
    errors: dict,
    training: dict,
    reference_physics: Mapping[str, torch.Tensor] | None = None,
) -> dict:
    """The ``metrics.json`` of a run: every metric averaged over each horizon, per test value (``per_test``)
    and over all of them (``mean``; ``min``/``max``/``per_seed`` over seeds), for the bare source and every
    protocol × variant; training cost; error over time; the best variant at the first horizon. Also, for
    every protocol × variant: ``stability`` (the fraction of rollouts still finite at each horizon, and per
    test value the ``crossing`` step at which the seed-mean headline error first exceeds the source's for
    10 consecutive steps, 0: never), ``physics`` (:meth:`Experiment.diagnostics` per test value, with the
    reference's and the source's), and the budget ``sweep`` (``train.sweep``: errors at each fraction of
    ``train.seconds``)."""
    horizons = exp.cfg.eval.horizons
    names = list(exp.metrics)
    main = [p for p in errors if p in exp.cfg.train.protocols]

    def summary(per_seed: list[dict], h: int, metric: str) -> dict:
        per_test = _group_means(test, torch.stack([e[metric][:, :h].mean(1) for e in per_seed]))  # (seeds, G)
        overall = per_test.mean(1)
        return {
            "mean": float(overall.mean()),
            "min": float(overall.min()),
            "max": float(overall.max()),
            "per_seed": overall.tolist(),
            "per_test": per_test.mean(0).tolist(),
        }

    def physics(per_seed: list[dict]) -> dict:
        out = {}
        for name in per_seed[0]["physics"]:
            per_test = _nan_group_means(test, torch.stack([e["physics"][name] for e in per_seed]))  # (seeds, G)
            out[name] = {**_spread(per_test.nanmean(1)), "per_test": per_test.nanmean(0).tolist()}
        return out

    key = names[0]
    src_curves = _group_means(test, source[key].T).T  # (G, T)
    values = [float(v) for v in test.values]
    m: dict = {
        "experiment": exp.name,
        "parameter": exp.parameter,
        "test_values": values,
        "regime": [exp.regime(v) for v in values],
        "horizons": list(horizons),
        "metrics": names,
        "source": {str(h): {k: summary([source], h, k) for k in names} for h in horizons},
        "variants": {},
        "training": training,
        "error_over_time": {k: {"source": source[k].mean(0).tolist()} for k in names},
        "stability": {"source": {str(h): _finite_fraction([source], h) for h in horizons}},
        "physics": {
            "reference": {n: _nan_group_means(test, v).tolist() for n, v in (reference_physics or {}).items()},
            "source": {n: _nan_group_means(test, v).tolist() for n, v in source.get("physics", {}).items()},
            "variants": {},
        },
    }
    for protocol, by_variant in errors.items():
        for variant, per_seed in by_variant.items():
            by_h = {str(h): {k: summary(per_seed, h, k) for k in names} for h in horizons}
            if protocol not in main:
                continue  # a budget-sweep run: summarised in "sweep" below
            m["variants"].setdefault(protocol, {})[variant] = by_h
            for k in names:
                curve = torch.stack([e[k].mean(0) for e in per_seed]).mean(0)
                m["error_over_time"][k][f"{variant} ({protocol})"] = curve.tolist()
            mean_curves = torch.stack([_group_means(test, e[key].T).T for e in per_seed]).mean(0)  # (G, T)
            m["stability"].setdefault(protocol, {})[variant] = {
                "finite": {str(h): _finite_fraction(per_seed, h) for h in horizons},
                "crossing": crossing_step(mean_curves, src_curves, persist=10).tolist(),
            }
            if per_seed[0].get("physics"):
                m["physics"]["variants"].setdefault(protocol, {})[variant] = physics(per_seed)
    if exp.cfg.train.sweep:
        sweep: dict = {"seconds": exp.cfg.train.seconds, "fractions": list(exp.cfg.train.sweep), "variants": {}}
        for fraction, protocol in sorted(exp.cfg.train.sweep_protocols().items()):
            for variant in exp.cfg.train.sweep_variants:
                runs = training[protocol][variant]
                sweep["variants"].setdefault(variant, []).append(
                    {
                        "fraction": fraction,
                        "protocol": protocol,
                        "seconds": sum(r["seconds"] for r in runs) / len(runs),
                        "updates": sum(r["iterations"] for r in runs) / len(runs),
                        "errors": {
                            str(h): {k: summary(errors[protocol][variant], h, k) for k in names} for h in horizons
                        },
                    }
                )
        m["sweep"] = sweep
    h, key = str(horizons[0]), names[0]
    best = min(
        ((p, v, s[h][key]["mean"]) for p, vs in m["variants"].items() for v, s in vs.items()), key=lambda x: x[2], default=None
    )
    if best is not None:
        m["best"] = {
            "protocol": best[0],
            "variant": best[1],
            "metric": key,
            "value": best[2],
            "reduction": m["source"][h][key]["mean"] / best[2],
        }
    return m


def _validation_scalars(exp: Experiment, test: Trajectories, e: dict, source: dict) -> dict[str, float]:
    """``val/<metric>_h<h>`` (mean over the test values), its ``_interpolation``/``_extrapolation`` means,
    the bare source's ``val/source_<metric>_h<h>`` and ``val_per_test/<metric>_h<h>_<parameter><value>``."""
    values = {}
    regimes = [exp.regime(v) for v in test.values]
    for h in exp.cfg.eval.horizons:
        for metric in exp.metrics:
            per_test = _group_means(test, e[metric][:, :h].mean(1))
            values[f"val/{metric}_h{h}"] = float(per_test.mean())
            values[f"val/source_{metric}_h{h}"] = float(_group_means(test, source[metric][:, :h].mean(1)).mean())
            for regime in ("interpolation", "extrapolation"):
                sel = [i for i, r in enumerate(regimes) if r == regime]
                if sel:
                    values[f"val/{metric}_h{h}_{regime}"] = float(per_test[sel].mean())
            for v, x in zip(test.values, per_test.tolist()):
                values[f"val_per_test/{metric}_h{h}_{exp.parameter}{v:g}"] = x
    return values


# ----------------------------------------------------------------------------------------------- report


def report(exp: Experiment, m: dict, figures: Sequence[str] = ()) -> str:
    """The Markdown report of a finished run (``metrics.json`` → ``report.md``)."""
    cfg, rt = exp.cfg, ensure_init()
    seeds = len(cfg.train.seeds)
    key, others = m["metrics"][0], m["metrics"][1:]
    label = {"l1": "relative L1", "l2": "relative L2"}
    budgets = ", ".join(
        f"'{p}' = {cfg.train.iterations} updates per variant"
        if p == "updates"
        else f"'{p}' = {cfg.train.seconds:g} s per variant"
        for p in cfg.train.protocols
    )
    lines = [
        f"# {exp.title}",
        "",
        exp.describe(rt),
        "",
        f"Budgets: {budgets}; batch {cfg.train.batch_size}, Adam lr {cfg.train.lr:g} cosine; {seeds} seed(s); "
        f"arch={rt.arch}, {rt.precision}.",
        "",
    ]
    for h in cfg.eval.horizons:
        hs = str(h)
        for protocol, by_variant in m["variants"].items():
            names = list(by_variant)
            lines += [
                f"## Mean {label.get(key, key)} error over {h} steps, protocol '{protocol}'"
                + (" (mean over seeds; [min, max])" if seeds > 1 else ""),
                "",
                f"| test {exp.parameter} | regime | source | " + " | ".join(names) + " |",
                "|---|---|---|" + "---|" * len(names),
            ]
            for i, (v, g) in enumerate(zip(m["test_values"], m["regime"])):
                row = [f"{m['source'][hs][key]['per_test'][i]:.4f}"] + [
                    f"{by_variant[n][hs][key]['per_test'][i]:.4f}" for n in names
                ]
                lines.append(f"| {v:g} | {g} | " + " | ".join(row) + " |")

            def cell(s: dict) -> str:
                return f"**{s['mean']:.4f}**" + (f" [{s['min']:.4f}, {s['max']:.4f}]" if seeds > 1 else "")

            src = m["source"][hs][key]["mean"]
            lines.append(
                "| **all** | | " + " | ".join([cell(m["source"][hs][key])] + [cell(by_variant[n][hs][key]) for n in names]) + " |"
            )
            lines.append(
                "| reduction vs source | | 1× | "
                + " | ".join(f"{src / by_variant[n][hs][key]['mean']:.2f}×" for n in names)
                + " |"
            )
            for other in others:
                lines.append(
                    f"| {label.get(other, other)} (all) | | "
                    + " | ".join(
                        [f"{m['source'][hs][other]['mean']:.4f}"] + [f"{by_variant[n][hs][other]['mean']:.4f}" for n in names]
                    )
                    + " |"
                )
            lines.append("")
    lines += _study_sections(exp, m)
    memory = m.get("memory") or {}
    lines += [
        "## Training cost",
        "",
        "| protocol | variant | updates (per seed) | wall time | per update | final loss |"
        + (" autograd memory per update |" if memory else ""),
        "|---|---|---|---|---|---|" + ("---|" if memory else ""),
    ]
    for protocol, by_variant in m["training"].items():
        for n, runs in by_variant.items():
            its = [r["iterations"] for r in runs]
            sec = sum(r["seconds"] for r in runs) / len(runs)
            per_update = 1000 * sec / max(sum(its) / len(its), 1)
            loss = sum(r["final_loss"] for r in runs) / len(runs)
            mem = memory.get(n)
            cell = "" if not memory else f" {_memory_cell(mem)} |" if mem else " |"
            lines.append(
                f"| {protocol} | {n} | {', '.join(map(str, its))} | {sec:.1f} s | {per_update:.1f} ms | {loss:.3e} |{cell}"
            )
    if memory:
        lines += [
            "",
            f"Autograd memory: the peak of the tensors saved for backward in one update of batch {cfg.train.batch_size}"
            + (
                f"; unrolls checkpointed in chunks of {cfg.train.unroll_checkpoint} steps (stored + one recomputed chunk,"
                " estimated), without checkpointing in brackets"
                if cfg.train.unroll_checkpoint
                else ""
            )
            + ".",
        ]
    if "best" in m:
        b = m["best"]
        lines += [
            "",
            f"Best: {b['variant']} ({b['protocol']}), {b['reduction']:.2f}× lower {label.get(key, key)} error than the"
            f" source over {cfg.eval.horizons[0]} steps.",
        ]
    lines += [""] + [f"![{Path(f).stem.replace('_', ' ')}](plots/{f})" for f in figures] + [""]
    return "\n".join(lines)


def _memory_cell(mem: Mapping[str, float]) -> str:
    cell = f"{mem['peak']:.1f} MiB"
    if mem["stored_without_checkpointing"] > mem["stored"]:
        cell += f" ({mem['stored_without_checkpointing']:.1f} MiB)"
    return cell


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def _sol_variants(names: Sequence[str], kinds: Mapping[str, LossKind]) -> list[str]:
    return [n for n in names if any(kind == "SOL" for kind, _ in parse_variant(n, kinds))]


def comparisons(exp: Experiment, m: dict) -> list[dict]:
    """SOL against NON in every protocol × horizon: for each, the SOL variant (a variant with a SOL stage)
    with the lowest mean headline error, ``ratio`` = NON's error / its error (> 1: SOL is better) overall
    and ``per_test``, and ``seeds_won``: the seeds in which it beats NON (same seed). Empty without NON or
    without a SOL variant."""
    key = m["metrics"][0]
    out = []
    for protocol, by_variant in m["variants"].items():
        sols = _sol_variants(list(by_variant), exp.losses)
        if "NON" not in by_variant or not sols:
            continue
        for h in m["horizons"]:
            hs = str(h)
            non = by_variant["NON"][hs][key]
            best = min(sols, key=lambda v: by_variant[v][hs][key]["mean"])
            sol = by_variant[best][hs][key]
            out.append(
                {
                    "protocol": protocol,
                    "horizon": h,
                    "variant": best,
                    "ratio": _ratio(non["mean"], sol["mean"]),
                    "per_test": [_ratio(a, b) for a, b in zip(non["per_test"], sol["per_test"])],
                    "seeds_won": sum(a > b for a, b in zip(non["per_seed"], sol["per_seed"])),
                    "seeds": len(non["per_seed"]),
                }
            )
    return out


def _study_sections(exp: Experiment, m: dict) -> list[str]:
    """The report's answer to "when does SOL pay?": the SOL/NON verdict per protocol, horizon and test
    value; stability (finite rollouts, crossing steps); physics diagnostics; the budget sweep."""
    p = exp.parameter
    lines: list[str] = []
    rows = comparisons(exp, m)
    if rows:
        wins = [(r, i) for r in rows for i, x in enumerate(r["per_test"]) if x > 1]
        losses_ = [(r, i) for r in rows for i, x in enumerate(r["per_test"]) if x <= 1]
        total = len(wins) + len(losses_)
        lines += [
            "## When does training through the solver pay?",
            "",
            "Error of NON ÷ error of the best SOL variant (> 1: SOL is more accurate), mean over seeds; "
            "'seeds' counts the seeds whose SOL run beats the NON run of the same seed.",
            "",
            "| protocol | horizon | best SOL | " + " | ".join(f"{p} {v:g}" for v in m["test_values"]) + " | all | seeds |",
            "|---|---|---|" + "---|" * (len(m["test_values"]) + 2),
        ]
        for r in rows:
            lines.append(
                f"| {r['protocol']} | {r['horizon']} | {r['variant']} | "
                + " | ".join(f"{x:.2f}×" for x in r["per_test"])
                + f" | **{r['ratio']:.2f}×** | {r['seeds_won']}/{r['seeds']} |"
            )
        lines += ["", f"SOL beats NON in {len(wins)} of {total} (protocol, horizon, {p}) cases.", ""]
        for protocol in dict.fromkeys(r["protocol"] for r in rows):
            mine = [r for r in rows if r["protocol"] == protocol]
            won = [
                f"{r['horizon']} steps ({r['ratio']:.2f}×, {r['seeds_won']}/{r['seeds']} seeds)" for r in mine if r["ratio"] > 1
            ]
            lost = [f"{r['horizon']} steps ({1 / r['ratio']:.2f}× worse)" for r in mine if r["ratio"] <= 1]
            what = "equal updates" if protocol == "updates" else "equal wall-clock time"
            lines.append(
                f"- At {what} ('{protocol}'), over all test values: "
                + (f"SOL is ahead at {', '.join(won)}" if won else "SOL is never ahead")
                + (f"; NON is ahead at {', '.join(lost)}" if lost else "")
                + "."
            )
            for regime in ("interpolation", "extrapolation"):
                idx = [i for i, g in enumerate(m["regime"]) if g == regime]
                if idx:
                    at = ", ".join(f"{m['test_values'][i]:g}" for i in idx)
                    cells = "; ".join(
                        f"{r['horizon']} steps " + " / ".join(f"{r['per_test'][i]:.2f}×" for i in idx) for r in mine
                    )
                    lines.append(f"  - {regime.capitalize()} ({p} {at}): {cells}.")
        lines.append("")
    stab = m.get("stability", {})
    if any(k != "source" for k in stab):
        hs = [str(h) for h in m["horizons"]]
        lines += [
            "## Stability",
            "",
            f"Rollouts still finite at each horizon (fraction of test trajectories × seeds), and per test {p} the step at "
            "which the variant's mean error first exceeds the uncorrected source's for 10 consecutive steps "
            "('never': not within the rollout).",
            "",
            "| protocol | variant | " + " | ".join(f"finite @{h}" for h in hs) + " | "
            + " | ".join(f"crossing {p} {v:g}" for v in m["test_values"]) + " |",
            "|---|---|" + "---|" * (len(hs) + len(m["test_values"])),
            "| | source | " + " | ".join(f"{stab['source'][h]:.2f}" for h in hs) + " |" + " |" * len(m["test_values"]),
        ]
        for protocol, by_variant in stab.items():
            if protocol == "source":
                continue
            for v, st in by_variant.items():
                crossing = [str(c) if c else "never" for c in st["crossing"]]
                finite = " | ".join(f"{st['finite'][h]:.2f}" for h in hs)
                lines.append(f"| {protocol} | {v} | {finite} | " + " | ".join(crossing) + " |")
        lines.append("")
    phys = m.get("physics", {})
    if phys.get("reference"):
        labels = exp.diagnostic_labels
        for name, ref_values in phys["reference"].items():
            lines += [
                f"## {labels.get(name, name)}",
                "",
                "| | " + " | ".join(f"{p} {v:g}" for v in m["test_values"]) + " | all [min, max over seeds] |",
                "|---|" + "---|" * (len(m["test_values"]) + 1),
                "| reference | " + " | ".join(f"{x:.4g}" for x in ref_values) + " | |",
                "| source | " + " | ".join(f"{x:.4g}" for x in phys["source"][name]) + " | |",
            ]
            for protocol, by_variant in phys["variants"].items():
                for v, d in by_variant.items():
                    x = d[name]
                    lines.append(
                        f"| {v} ({protocol}) | " + " | ".join(f"{y:.4g}" for y in x["per_test"])
                        + f" | {x['mean']:.4g} [{x['min']:.4g}, {x['max']:.4g}] |"
                    )
            lines.append("")
    sweep = m.get("sweep")
    if sweep:
        key = m["metrics"][0]
        lines += [
            "## Budget sweep: learning curves at equal cost",
            "",
            f"Mean {key} error (over seeds; [min, max]) after training for a fraction of {sweep['seconds']:g} s.",
            "",
            "| fraction | " + " | ".join(f"{v} (updates, error @{h})" for v in sweep["variants"] for h in m["horizons"]) + " |",
            "|---|" + "---|" * (len(sweep["variants"]) * len(m["horizons"])),
        ]
        for i, f in enumerate(sorted(sweep["fractions"])):
            cells = []
            for points in sweep["variants"].values():
                pt = points[i]
                for h in m["horizons"]:
                    e = pt["errors"][str(h)][key]
                    cells.append(f"{pt['updates']:.0f}, {e['mean']:.4f} [{e['min']:.4f}, {e['max']:.4f}]")
            lines.append(f"| {f:g}× ({f * sweep['seconds']:g} s) | " + " | ".join(cells) + " |")
        lines += ["", *_sweep_verdict(m, sweep, key), ""]
    return lines


def _sweep_verdict(m: dict, sweep: dict, key: str) -> list[str]:
    """Sentences: where the learning curves of NON and the SOL variant of the sweep cross (if they do)."""
    names = list(sweep["variants"])
    sols = [v for v in names if "SOL" in v]
    if "NON" not in names or not sols:
        return []
    out = []
    for sol in sols:
        for h in m["horizons"]:
            ratios = [
                _ratio(a["errors"][str(h)][key]["mean"], b["errors"][str(h)][key]["mean"])
                for a, b in zip(sweep["variants"]["NON"], sweep["variants"][sol])
            ]
            fr = [pt["fraction"] for pt in sweep["variants"]["NON"]]
            desc = ", ".join(f"{r:.2f}× at {f:g}×" for f, r in zip(fr, ratios))
            cross = [
                f"between {fr[i]:g}× and {fr[i + 1]:g}× of the budget"
                for i in range(len(ratios) - 1)
                if (ratios[i] > 1) != (ratios[i + 1] > 1)
            ]
            lead = "SOL ahead" if all(r > 1 for r in ratios) else "NON ahead" if all(r <= 1 for r in ratios) else None
            out.append(
                f"{h} steps, NON ÷ {sol} error: {desc}; "
                + (f"the curves cross {' and '.join(cross)}." if cross else f"the curves do not cross ({lead} at every budget).")
            )
    return out


def _error_plot(exp: Experiment, folder: Path, m: dict, losses: dict[str, list[float]]) -> list[str]:
    """``error_over_time.png``: the headline metric over the rollout (mean over test values and seeds) and
    the training losses (first seed). Returns no further names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = m["metrics"][0]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    for name, curve in m["error_over_time"][key].items():
        src = name == "source"
        ax[0].semilogy(range(1, len(curve) + 1), curve, "k-" if src else "-", label=name, lw=2 if src else 1.3)
    ax[0].set(xlabel="step", ylabel=f"{key} error (mean over test {exp.parameter})", title=f"{exp.title}: error over time")
    ax[0].grid(alpha=0.3, which="both")
    ax[0].legend(fontsize=8)
    for name, curve in losses.items():
        ax[1].plot(curve, label=name, alpha=0.8)
    ax[1].set(yscale="log", xlabel="update", ylabel="training loss", title="training (first seed)")
    ax[1].legend(fontsize=8)
    io.save_figure(folder / "error_over_time.png", fig)
    return []


def _horizon_plot(exp: Experiment, folder: Path, m: dict) -> list[str]:
    """``error_vs_horizon.png``: the headline error averaged over the first ``h`` steps, for every ``h`` (the
    cumulative mean of the error over time), per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = m["metrics"][0]
    curves = m["error_over_time"][key]
    protocols = list(m["variants"]) or ["source"]
    fig, axes = plt.subplots(1, len(protocols), figsize=(6 * len(protocols), 4), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        for name, curve in curves.items():
            if name != "source" and not name.endswith(f"({protocol})"):
                continue
            c = torch.tensor(curve)
            cum = c.cumsum(0) / torch.arange(1, len(c) + 1)
            ax.loglog(range(1, len(c) + 1), cum, "k-" if name == "source" else "-", lw=2 if name == "source" else 1.3,
                      label=name.replace(f" ({protocol})", ""))
        for h in m["horizons"]:
            ax.axvline(h, color="0.7", lw=0.8, ls=":")
        ax.set(xlabel="horizon h (steps)", ylabel=f"mean {key} error over the first h steps", title=f"protocol '{protocol}'")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    io.save_figure(folder / "error_vs_horizon.png", fig)
    return ["error_vs_horizon.png"]


def _sweep_plot(exp: Experiment, folder: Path, m: dict) -> list[str]:
    """``learning_curves.png`` (with ``train.sweep``): error at each horizon against training seconds, mean
    over seeds with [min, max] bars, one line per swept variant."""
    sweep = m.get("sweep")
    if not sweep:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = m["metrics"][0]
    hs = m["horizons"]
    fig, axes = plt.subplots(1, len(hs), figsize=(5 * len(hs), 4), squeeze=False)
    for ax, h in zip(axes[0], hs):
        for v, points in sweep["variants"].items():
            x = [pt["seconds"] for pt in points]
            e = [pt["errors"][str(h)][key] for pt in points]
            y = [d["mean"] for d in e]
            err = [[d["mean"] - d["min"] for d in e], [d["max"] - d["mean"] for d in e]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=v)
        src = m["source"][str(h)][key]["mean"]
        ax.axhline(src, color="k", lw=1, ls="--", label="source")
        ax.set(xscale="log", yscale="log", xlabel="training wall time (s)", ylabel=f"{key} error over {h} steps",
               title=f"learning curves at equal cost, {h} steps")
        ticks = [pt["seconds"] for pt in next(iter(sweep["variants"].values()))]
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    io.save_figure(folder / "learning_curves.png", fig)
    return ["learning_curves.png"]


# ----------------------------------------------------------------------------------------------- commands


def runtime_choice(arch: str | None, precision: str | None, recorded: Mapping[str, Any]) -> tuple[str, str]:
    """``(arch, precision)`` of a command: the flag when given (not ``None``), else the value recorded in the
    ``--config`` file (a run folder's ``config.json``), else ``cpu`` / ``f32``."""
    return arch or str(recorded.get("arch") or "cpu"), precision or str(recorded.get("precision") or "f32")
