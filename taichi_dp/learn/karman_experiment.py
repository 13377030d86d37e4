"""Solver-in-the-loop on the Karman wake: the PBDL "reducing numerical errors" study, with a fair protocol.

Source: the 32×64 :func:`~taichi_dp.scenes.karman` solver. Reference: the same scene ``factor``× finer in
space and time (4× as in the book), flux-averaged onto the source faces (:mod:`taichi_dp.learn.karman_data`).
The hybrid step is ``v ← solver(v); v ← v + Δ(v, Re)`` with ``Δ`` a network on centred velocities
(conditioned on the normalised log-Reynolds number) applied to the free staggered faces
(:class:`~taichi_dp.learn.hybrid.StaggeredCorrection`, optionally re-projected).

Variants (one code path: only the loss of a mini-batch of sample indices differs):

- ``NON``: supervised, one step from the reference: ``‖S(r_t) + Δ(S(r_t)) − r_{t+1}‖²``; no solver gradient.
- ``PRE-k``: supervised on pre-computed source trajectories: the uncorrected source is run ``j ≤ k`` steps
  from ``r_t`` and ``Δ`` learns ``‖s_j + Δ(s_j) − r_{t+j}‖²`` (the states the solver drifts into, but no
  solver gradient).
- ``SOL-k``: ``k`` hybrid steps from ``r_t`` with gradients through every solver step (adjoint pressure solves).
- ``NON+SOL-k``: the first half of the budget NON, the second half SOL-k from that model (warm start).

Protocols: ``updates`` gives every variant the same number of gradient updates; ``wall`` gives every
variant the same wall-clock training time (the learning-rate schedule follows the elapsed fraction of
the budget). Same network, data, optimiser and schedule for every variant; several seeds (the seed
changes initialisation and sampling). Evaluation: rollouts from the first recorded state of each test
Reynolds number (interpolation and extrapolation cases), per-step relative L1 (the book's metric) and L2
against the reference, averaged over the horizons listed in ``horizons``.

Run folder: ``config.json``, ``metrics.json``, ``report.md``, ``plots/`` (error over time, image strip),
``checkpoints/<protocol>/seed<s>/<variant>.pt`` (model weights) and ``…/<variant>.state.pt`` (trainer
state for ``resume``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from models import ResidualCNN, UNet

from ..runtime import ensure_init
from ..scenes import karman
from ..solvers import NavierStokes, rollout
from . import distributed, io
from .experiment_log import ExperimentLog, RunLog, colour_image, make_log
from .hybrid import StaggeredCorrection, hybrid_rollout, non_loss, sol_loss
from .karman_data import KarmanDataConfig, load_or_generate
from .metrics import relative_errors
from .trainer import TrainConfig, TrainResult, train, validate_train_config

RESUME_FREE = ("save_every", "optim.checkpoint_every")  # config fields a resume may change (not the result)
_VARIANT = re.compile(r"^(NON|PRE-([1-9]\d*)|SOL-([1-9]\d*)|NON\+SOL-([1-9]\d*))$")
_RE_ALL = (90.0, 125.5, 175.1, 244.3, 340.8, 475.4, 663.1, 925.0, 1290.4, 1800.0)  # log-uniform, unsteady wake
TRAIN_RE = tuple(r for i, r in enumerate(_RE_ALL) if i not in (0, 3, 6, 9))  # six training values
TEST_RE = (90.0, 244.3, 663.1, 1800.0)  # below, inside, inside, above the training range


def _data(reynolds: tuple[float, ...], steps: int, warmup: int = 100) -> KarmanDataConfig:
    """4× reference, strong symmetry-breaking start (the street is developed after ~100 steps)."""
    return KarmanDataConfig(reynolds, factor=4, warmup=warmup, steps=steps, perturbation=1.0)


@dataclass
class KarmanExperimentConfig:
    """Everything that defines a study; serialised to ``config.json``. See :meth:`quick` and :meth:`paper`."""

    train: KarmanDataConfig = field(default_factory=lambda: _data(TRAIN_RE, 60))
    test: KarmanDataConfig = field(default_factory=lambda: _data(TEST_RE, 100))
    variants: tuple[str, ...] = ("NON", "SOL-4")
    # "unet": UNet (2 levels; width 10 → 46.4k parameters); "cnn": the book's ResidualCNN (5×5, 2 residual
    # blocks; width 21 → 46.8k). Measured on the quick preset (2 CPU cores, 150 s per variant): U-Net 7.8× / 5.2×
    # lower error than the source (NON / SOL-4), CNN 2.6× / 2.0× (a U-Net update costs half as much and it sees
    # the whole wake).
    model: str = "unet"
    width: int = 10
    blocks: int = 2
    padding_mode: str = "zeros"  # convolution padding: walls/inflow are fixed values; "replicate" is ~9× slower on CPU
    reproject: bool = False  # project the corrected velocity onto divergence-free fields
    optim: TrainConfig = field(default_factory=lambda: TrainConfig(iterations=400, batch_size=4, lr=1e-3))
    protocols: tuple[str, ...] = ("wall",)  # "updates": optim.iterations each; "wall": wall_seconds each
    wall_seconds: float = 150.0
    seeds: tuple[int, ...] = (0,)
    horizons: tuple[int, ...] = (100,)  # evaluation horizons (steps); test.steps must cover the largest
    checkpoint_every: int = 0  # gradient checkpointing of SOL unrolls (chunks of this many steps)
    save_every: int = 50  # trainer-state checkpoints every this many updates (resume)

    @classmethod
    def quick(cls) -> KarmanExperimentConfig:
        """The README main job: 2 CPU cores, ≤ 15 minutes including data generation; NON vs SOL-4 at equal
        wall time, one seed, 100-step test rollouts on four held-out Reynolds numbers."""
        return cls()

    @classmethod
    def tiny(cls) -> KarmanExperimentConfig:
        """A seconds-long smoke configuration (tests, trying the command line): factor-2 reference, a few
        frames, a 4-channel network, NON and SOL-2 at 6 updates each."""
        return cls(
            train=KarmanDataConfig(reynolds=(150.0, 300.0), factor=2, warmup=1, steps=4),
            test=KarmanDataConfig(reynolds=(100.0, 200.0, 400.0), factor=2, warmup=1, steps=4),
            variants=("NON", "SOL-2"),
            width=4,
            blocks=1,
            optim=TrainConfig(iterations=6, batch_size=2, lr=1e-4),
            protocols=("updates",),
            horizons=(4,),
            save_every=2,
        )

    @classmethod
    def paper(cls) -> KarmanExperimentConfig:
        """The full protocol (for a GPU): NON, PRE-4, SOL-4/16/32 and NON+SOL-16 at equal updates and at equal
        wall time, three seeds, 100/200/500-step rollouts."""
        return cls(
            train=_data(TRAIN_RE, 300, warmup=150),
            test=_data(TEST_RE, 500, warmup=150),
            variants=("NON", "PRE-4", "SOL-4", "SOL-16", "SOL-32", "NON+SOL-16"),
            optim=TrainConfig(iterations=10_000, batch_size=8, lr=1e-3),
            protocols=("updates", "wall"),
            wall_seconds=1800.0,
            seeds=(0, 1, 2),
            horizons=(100, 200, 500),
            checkpoint_every=8,
            save_every=200,
        )

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field for an inconsistent configuration (before any work)."""
        for v in self.variants:
            if not _VARIANT.match(v):
                raise ValueError(f"variants: {v!r} is not NON, PRE-k, SOL-k or NON+SOL-k")
            k = _unroll(v)
            if k and k + 1 > self.train.steps + 1:
                raise ValueError(f"variants: {v} needs {k + 1} consecutive frames but train.steps is {self.train.steps}")
        if self.model not in ("cnn", "unet"):
            raise ValueError(f"model must be 'cnn' or 'unet', got {self.model!r}")
        for p in self.protocols:
            if p not in ("updates", "wall"):
                raise ValueError(f"protocols: {p!r} is not 'updates' or 'wall'")
        if not self.variants or not self.protocols:
            raise ValueError(f"variants and protocols must not be empty, got {self.variants} and {self.protocols}")
        if not self.seeds or min(self.seeds) < 0:
            raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {self.seeds}")
        if not (math.isfinite(self.wall_seconds) and self.wall_seconds > 0):
            raise ValueError(f"wall_seconds must be a finite number > 0, got {self.wall_seconds}")
        for name in ("checkpoint_every", "save_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        validate_train_config("optim", self.optim)
        if not self.horizons or max(self.horizons) > self.test.steps:
            raise ValueError(f"horizons {self.horizons} must be non-empty and ≤ test.steps = {self.test.steps}")


def _unroll(variant: str) -> int:
    m = _VARIANT.match(variant)
    return int(next((g for g in m.groups()[1:] if g), 0)) if m else 0


def re_feature(cfg: KarmanExperimentConfig, re_: torch.Tensor) -> torch.Tensor:
    """The network's Reynolds-number input: ``log Re`` mapped linearly so the training range is [−1, 1]."""
    lo, hi = math.log(min(cfg.train.reynolds)), math.log(max(cfg.train.reynolds))
    return (torch.log(re_) - 0.5 * (lo + hi)) / (0.5 * (hi - lo))


def regime(cfg: KarmanExperimentConfig, re_: float) -> str:
    """``"interpolation"`` inside the training range of Reynolds numbers, ``"extrapolation"`` outside."""
    return "interpolation" if min(cfg.train.reynolds) <= re_ <= max(cfg.train.reynolds) else "extrapolation"


def _solver(base: NavierStokes, re_: torch.Tensor) -> NavierStokes:
    """The source solver with one Reynolds number per batch element (same mask tensor: cached multigrid)."""
    return dataclasses.replace(base, nu=(20.0 / re_).to(base.fluid.dtype))


def make_model(cfg: KarmanExperimentConfig, base: NavierStokes, seed: int) -> StaggeredCorrection:
    """A fresh (zero-output) correction network for ``cfg`` with initialisation seed ``seed``."""
    rt = ensure_init()
    torch.manual_seed(seed)
    if cfg.model == "cnn":
        net = ResidualCNN(2, 2, conditioning=("re",), width=cfg.width, blocks=cfg.blocks, padding_mode=cfg.padding_mode)
    else:
        net = UNet(2, conditioning=("re",), width=cfg.width, levels=cfg.blocks, padding_mode=cfg.padding_mode)
    return StaggeredCorrection(
        net.to(dtype=rt.dtype, device=rt.device), base.grid, base.boundary, base.fluid, reproject=cfg.reproject
    )


def variant_loss(
    cfg: KarmanExperimentConfig,
    variant: str,
    model: StaggeredCorrection,
    ref: torch.Tensor,
    re_: torch.Tensor,
    base: NavierStokes,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """``(batch_loss(indices), number of samples)`` of one variant on reference trajectories ``ref``
    ``(S, T+1, 2, H+1, W+1)`` with Reynolds numbers ``re_`` ``(S,)``."""
    s, t1 = ref.shape[:2]
    kind = variant.split("-")[0]
    k = _unroll(variant)
    if kind in ("NON", "PRE"):
        k = max(k, 1)
        starts = t1 - k  # windows r_t … r_{t+k}
        with torch.no_grad():  # the uncorrected source, j = 1..k steps from every r_t (pre-computed)
            r0 = ref[:, :starts].reshape(-1, *ref.shape[2:]).contiguous()
            src = rollout(_solver(base, re_.repeat_interleave(starts)), r0, k, include_initial=False)  # (S·starts, k, …)
        tgt = torch.stack([ref[:, j : j + starts] for j in range(1, k + 1)], dim=2).reshape(src.shape)
        src, tgt = src.reshape(-1, *ref.shape[2:]), tgt.reshape(-1, *ref.shape[2:])
        re_all = re_.repeat_interleave(starts * k)

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            return non_loss(model, src[idx], tgt[idx], {"re": re_feature(cfg, re_all[idx])})

        return batch_loss, src.shape[0]

    windows = t1 - k

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        traj, start = idx // windows, idx % windows
        window = ref[traj[:, None], start[:, None] + torch.arange(k + 1, device=ref.device)[None, :]]
        return sol_loss(
            _solver(base, re_[traj]), model, window, {"re": re_feature(cfg, re_[traj])}, checkpoint_every=cfg.checkpoint_every
        )

    return batch_loss, s * windows


def train_variant(
    cfg: KarmanExperimentConfig,
    variant: str,
    protocol: str,
    seed: int,
    ref: torch.Tensor,
    re_: torch.Tensor,
    base: NavierStokes,
    *,
    state_dir: Path | None = None,
    progress: bool = True,
    log: RunLog | None = None,
) -> tuple[StaggeredCorrection, TrainResult]:
    """Train one variant under one protocol; ``state_dir`` holds resumable trainer states; ``log`` records the
    training curves (both stages of NON+SOL-k as one curve)."""
    model = make_model(cfg, base, seed)
    net = distributed.wrap(model)  # DDP in a torchrun job (gradients all-reduced over ranks), else model itself
    budget = (
        dataclasses.replace(cfg.optim, seed=seed, checkpoint_every=cfg.save_every)
        if protocol == "updates"
        else dataclasses.replace(
            cfg.optim, seed=seed, checkpoint_every=cfg.save_every, iterations=10**9, max_seconds=cfg.wall_seconds
        )
    )
    stages = [(variant, budget)]
    if variant.startswith("NON+"):
        half = (
            dataclasses.replace(budget, iterations=budget.iterations // 2)
            if protocol == "updates"
            else dataclasses.replace(budget, max_seconds=budget.max_seconds / 2)
        )
        stages = [("NON", half), (variant.split("+")[1], dataclasses.replace(half, seed=seed + 10_000))]
    total = TrainResult()
    for i, (stage, optim) in enumerate(stages):
        loss, n = variant_loss(cfg, stage, net, ref, re_, base)
        path = None if state_dir is None else state_dir / f"{variant.lower().replace('+', '_')}.{i}.state.pt"
        callback = None if log is None else log.training_callback(offset=total.iterations)
        desc = f"{variant} ({protocol}, seed {seed})"
        r = train(net, loss, n, optim, desc=desc, progress=progress, checkpoint=path, callback=callback)
        total.losses += r.losses
        total.seconds += r.seconds
        total.iterations += r.iterations
    return model, total


def evaluate(
    cfg: KarmanExperimentConfig, models: dict[str, StaggeredCorrection | None], test: dict[str, torch.Tensor], base: NavierStokes
) -> dict[str, dict[str, torch.Tensor]]:
    """Rollouts of every model (``None`` = the bare source) from ``test`` reference frame 0; per-step relative
    L1/L2 errors ``{name: {"l1": (S, T), "l2": (S, T)}}`` and the trajectories ``"traj"`` (S, T, …) (CPU)."""
    rt = ensure_init()
    ref = test["velocity"].to(rt.dtype).to(rt.device)
    re_ = test["reynolds"].to(rt.dtype).to(rt.device)
    solver, cond = _solver(base, re_), {"re": re_feature(cfg, re_)}
    steps = ref.shape[1] - 1
    out = {}
    with torch.no_grad():
        for name, model in models.items():
            traj = hybrid_rollout(solver, model, ref[:, 0].contiguous(), steps, cond, include_initial=False)
            out[name] = {
                "l1": relative_errors(traj, ref[:, 1:], 1).cpu(),
                "l2": relative_errors(traj, ref[:, 1:], 2).cpu(),
                "traj": traj.float().cpu(),
            }
    return out


def _ckpt_dir(out: Path, protocol: str, seed: int) -> Path:
    return out / "checkpoints" / protocol / f"seed{seed}"


def _weights_file(out: Path, protocol: str, seed: int, variant: str) -> Path:
    return _ckpt_dir(out, protocol, seed) / f"{variant.lower().replace('+', '_')}.pt"


def run(
    cfg: KarmanExperimentConfig,
    out: str | Path,
    *,
    cache: str | Path = "runs/cache",
    progress: bool = True,
    resume: bool = False,
    log: str = "none",
) -> dict:
    """Generate (or load) data, train every variant × protocol × seed, evaluate, write the run folder.

    A finished variant (weights file present) is loaded instead of retrained when ``resume``; an
    unfinished one continues from its trainer state. Without ``resume`` an existing run folder is an
    error (nothing saved is overwritten). Returns the metrics dictionary also written to ``metrics.json``.

    ``log="tensorboard"`` also writes training curves, validation errors and vorticity images to
    ``out/tensorboard/<protocol>/seed<s>/<variant>`` (rank 0 only; :mod:`~taichi_dp.learn.experiment_log`).
    It is not part of ``config.json``: it does not change the result, so a resumed run may log differently.
    """
    cfg.validate()
    explog = make_log(log if distributed.is_main() else "none", out)  # a missing package: reported before any work
    rt = ensure_init()
    out = Path(out)
    config_json = {"experiment": "karman", **asdict(cfg), "arch": rt.arch, "precision": rt.precision}
    fresh = not io.check_run_folder(out, config_json, "train karman", resume=resume, free=RESUME_FREE)
    distributed.barrier()  # every rank has checked the folder before rank 0 writes into it
    if distributed.is_main() and fresh:
        io.write_json(out / "config.json", config_json)
    t0 = time.perf_counter()
    train_data = load_or_generate(cfg.train, cache, progress=progress)
    load_or_generate(cfg.test, cache, progress=progress)  # evaluated by evaluate_run below
    datagen_s = time.perf_counter() - t0
    ref = train_data["velocity"].to(rt.dtype).to(rt.device)
    re_ = train_data["reynolds"].to(rt.dtype).to(rt.device)
    base = karman(scale=cfg.train.scale, reynolds=re_).stepper

    with explog:
        for protocol in cfg.protocols:
            for seed in cfg.seeds:
                for variant in cfg.variants:
                    if resume and _finished(out, protocol, seed, variant):
                        continue  # finished in an earlier session
                    weights = _weights_file(out, protocol, seed, variant)
                    model, result = train_variant(
                        cfg,
                        variant,
                        protocol,
                        seed,
                        ref,
                        re_,
                        base,
                        state_dir=_ckpt_dir(out, protocol, seed),
                        progress=progress,
                        log=explog.run(_log_name(protocol, seed, variant)) if explog.enabled else None,
                    )
                    if distributed.is_main():
                        weights_blob = {"model": model.state_dict(), "losses": result.losses, "seconds": result.seconds}
                        io.save_checkpoint(weights, weights_blob)
        if not distributed.is_main():
            return {}  # rank 0 evaluates and writes the report
        with distributed.single_process():
            return evaluate_run(out, cache=cache, progress=progress, datagen_seconds=datagen_s, log=explog)


def _log_name(protocol: str, seed: int, variant: str) -> str:
    """The TensorBoard sub-run of one trained model: ``<protocol>/seed<s>/<variant>``."""
    return f"{protocol}/seed{seed}/{variant}"


def evaluate_run(
    run_dir: str | Path,
    *,
    cache: str | Path = "runs/cache",
    progress: bool = True,
    datagen_seconds: float | None = None,
    log: str | ExperimentLog = "none",
) -> dict:
    """Evaluate every trained variant × protocol × seed of a run folder on the test data and (re)write
    ``metrics.json``, ``report.md`` and ``plots/``; returns the metrics. ``log`` (a kind of
    :func:`~taichi_dp.learn.experiment_log.make_log`, or an open log, left open) also records the
    validation errors and vorticity images of every trained model at step = its number of updates."""
    own_log = isinstance(log, str)
    explog = make_log(log, run_dir) if isinstance(log, str) else log
    try:
        return _evaluate_run(Path(run_dir), cache, progress, datagen_seconds, explog)
    finally:
        if own_log:
            explog.close()


def _evaluate_run(out: Path, cache: str | Path, progress: bool, datagen_seconds: float | None, explog: ExperimentLog) -> dict:
    rt = ensure_init()
    cfg = load_config(out)
    test_data = load_or_generate(cfg.test, cache, progress=progress)
    base = karman(scale=cfg.train.scale, reynolds=torch.tensor(cfg.test.reynolds, dtype=rt.dtype, device=rt.device)).stepper
    errors: dict[str, dict] = {}
    training: dict[str, dict] = {}
    trajectories = {}
    source = evaluate(cfg, {"source": None}, test_data, base)["source"]
    for protocol in cfg.protocols:
        for seed in cfg.seeds:
            trained = {}
            for variant in cfg.variants:
                trained[variant], state = _load_model(cfg, out, protocol, seed, variant, base)
                training.setdefault(protocol, {}).setdefault(variant, []).append(
                    {
                        "seed": seed,
                        "iterations": len(state["losses"]),
                        "seconds": float(state["seconds"]),
                        "final_loss": float(state["losses"][-1]),
                    }
                )
            for variant, e in evaluate(cfg, trained, test_data, base).items():
                errors.setdefault(protocol, {}).setdefault(variant, []).append(e)
                if seed == cfg.seeds[0]:
                    trajectories[f"{variant} ({protocol})"] = e["traj"]
                if explog.enabled:
                    steps = training[protocol][variant][-1]["iterations"]
                    _log_evaluation(explog.run(_log_name(protocol, seed, variant)), cfg, steps, e, source, test_data)
    metrics = _metrics(cfg, source, errors, training)
    if datagen_seconds is not None:
        metrics["datagen_seconds"] = datagen_seconds
    io.write_json(out / "metrics.json", metrics)
    _plots(cfg, out, metrics, test_data, source["traj"], trajectories)
    io.write_text(out / "report.md", report(cfg, metrics))
    return metrics


def _state_files(out: Path, protocol: str, seed: int, variant: str) -> list[Path]:
    """The trainer-state files of one variant (NON+SOL-k: one per stage), as :func:`train_variant` names them."""
    stages = 2 if variant.startswith("NON+") else 1
    return [_ckpt_dir(out, protocol, seed) / f"{variant.lower().replace('+', '_')}.{i}.state.pt" for i in range(stages)]


def _state_finished(state: dict) -> bool:
    optim = state.get("config") or {}
    budget = optim.get("max_seconds")
    return len(state["losses"]) >= optim.get("iterations", math.inf) or (budget is not None and state["seconds"] >= budget)


def _rebuild_weights(out: Path, protocol: str, seed: int, variant: str, reason: Exception) -> dict:
    """Rewrite a damaged weights file from the variant's finished trainer states (the same model, losses and
    seconds); ``ValueError``/``FileNotFoundError`` naming the file when that is impossible."""
    file = _weights_file(out, protocol, seed, variant)
    states = []
    for path in _state_files(out, protocol, seed, variant):
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


def _load_weights(out: Path, protocol: str, seed: int, variant: str, *, rebuild: bool = True) -> dict:
    """The verified weights file of one variant; when it is damaged and ``rebuild``, rebuilt from the intact
    trainer states (``rebuild=False``: read-only, the error says how to rebuild it)."""
    file = _weights_file(out, protocol, seed, variant)
    try:
        return io.load_checkpoint(file)
    except ValueError as e:  # damaged (IntegrityError) or unreadable
        if not any(p.is_file() for p in _state_files(out, protocol, seed, variant)):
            raise
        if not rebuild:
            raise ValueError(f"{e} ('python -m taichi_dp eval {out}' rebuilds it from its trainer state)") from None
        return _rebuild_weights(out, protocol, seed, variant, e)


def _finished(out: Path, protocol: str, seed: int, variant: str) -> bool:
    """Whether a variant finished in an earlier session (its weights file verifies, or was rebuilt)."""
    if not _weights_file(out, protocol, seed, variant).is_file():
        return False
    _load_weights(out, protocol, seed, variant)
    return True


def _load_model(
    cfg: KarmanExperimentConfig,
    out: Path,
    protocol: str,
    seed: int,
    variant: str,
    base: NavierStokes,
    *,
    rebuild: bool = True,
) -> tuple[StaggeredCorrection, dict]:
    file = _weights_file(out, protocol, seed, variant)
    state = _load_weights(out, protocol, seed, variant, rebuild=rebuild)
    model = make_model(cfg, base, seed)
    try:
        model.load_state_dict(state["model"])
        if not state["losses"]:
            raise KeyError("losses is empty")
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"{file} does not fit the run's model: {e}") from None
    return model.eval(), state


def _metrics(cfg: KarmanExperimentConfig, source: dict, errors: dict, training: dict) -> dict:
    """Errors averaged over each horizon: per test Re and over all, mean and spread over seeds."""

    def summary(per_seed: list[dict], h: int, metric: str) -> dict:
        per_re = torch.stack([e[metric][:, :h].mean(1) for e in per_seed])  # (seeds, S)
        overall = per_re.mean(1)
        return {
            "mean": float(overall.mean()),
            "min": float(overall.min()),
            "max": float(overall.max()),
            "per_seed": overall.tolist(),
            "per_re": per_re.mean(0).tolist(),
        }

    res = [float(r) for r in cfg.test.reynolds]  # the configured values (the data hold float32-rounded ones)
    m: dict = {
        "test_reynolds": res,
        "regime": [regime(cfg, r) for r in res],
        "horizons": list(cfg.horizons),
        "source": {str(h): {k: summary([source], h, k) for k in ("l1", "l2")} for h in cfg.horizons},
        "variants": {},
        "training": training,
        "error_over_time_l1": {"source": source["l1"].mean(0).tolist()},
    }
    for protocol, by_variant in errors.items():
        for variant, per_seed in by_variant.items():
            m["variants"].setdefault(protocol, {})[variant] = {
                str(h): {k: summary(per_seed, h, k) for k in ("l1", "l2")} for h in cfg.horizons
            }
            m["error_over_time_l1"][f"{variant} ({protocol})"] = torch.stack([e["l1"].mean(0) for e in per_seed]).mean(0).tolist()
    h = str(cfg.horizons[0])
    best = min(
        ((p, v, s[h]["l1"]["mean"]) for p, vs in m["variants"].items() for v, s in vs.items()), key=lambda x: x[2], default=None
    )
    if best is not None:
        m["best"] = {"protocol": best[0], "variant": best[1], "l1": best[2], "reduction": m["source"][h]["l1"]["mean"] / best[2]}
    return m


def _vorticity(v: torch.Tensor) -> torch.Tensor:
    """Cell-corner vorticity ``∂v_x/∂y − ∂v_y/∂x`` (grid units) of staggered velocities ``(…, 2, H+1, W+1)``."""
    vy, vx = v[..., 0, :, :-1], v[..., 1, :-1, :]
    return (vx[..., 1:, 1:-1] - vx[..., :-1, 1:-1]) - (vy[..., 1:-1, 1:] - vy[..., 1:-1, :-1])


def _strip_times(steps: int) -> list[int]:
    """The rollout steps (0-based indices into a trajectory of ``steps`` states) shown in the vorticity strips."""
    return sorted({min(t, steps - 1) for t in (9, 49, 99, steps - 1)})


def _vorticity_strip(traj: torch.Tensor, times: list[int], vmax: float) -> torch.Tensor:
    """The vorticity of ``traj[t]`` for each of ``times`` side by side (white gaps): an RGB image ``(3, H, W)``."""
    tiles = [colour_image(_vorticity(traj[t].float()), vmax) for t in times]
    gap = torch.ones(3, tiles[0].shape[1], 2)
    return torch.cat([x for tile in tiles for x in (tile, gap)][:-1], dim=2)


def _log_evaluation(log: RunLog, cfg: KarmanExperimentConfig, steps: int, e: dict, source: dict, test: dict) -> None:
    """``val/*`` scalars (mean over the test Reynolds numbers per horizon, the bare source's as ``val/source_*``),
    ``val_per_re/*`` (per test Re) and ``vorticity/{reference,source,corrected}`` strips (highest test Re, the
    steps of ``plots/vorticity_strip.png``) of one trained model, at step = its number of updates."""
    values = {}
    for h in cfg.horizons:
        for metric in ("l1", "l2"):
            per_re = e[metric][:, :h].mean(1)
            values[f"val/{metric}_h{h}"] = float(per_re.mean())
            values[f"val/source_{metric}_h{h}"] = float(source[metric][:, :h].mean())
            for r, v in zip(cfg.test.reynolds, per_re.tolist()):
                values[f"val_per_re/{metric}_h{h}_re{r:g}"] = v
    log.scalars(values, steps)
    s = len(cfg.test.reynolds) - 1  # the highest (extrapolated) Reynolds number, as in the plots
    times = _strip_times(source["traj"].shape[1])
    reference = test["velocity"][s, 1:].float()
    vmax = float(_vorticity(reference[times]).abs().max())
    for name, traj in (("reference", reference), ("source", source["traj"][s]), ("corrected", e["traj"][s])):
        log.image(f"vorticity/{name}", _vorticity_strip(traj, times, vmax), steps)


def _plots(cfg: KarmanExperimentConfig, out: Path, m: dict, test: dict, source: torch.Tensor, trajs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in m["error_over_time_l1"].items():
        ax.semilogy(
            range(1, len(curve) + 1), curve, "k-" if name == "source" else "-", label=name, lw=2 if name == "source" else 1.3
        )
    ax.set(xlabel="step", ylabel="relative L1 error (mean over test Re)", title="Karman wake: error over time")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    io.save_figure(out / "plots" / "error_over_time.png", fig)

    s = len(m["test_reynolds"]) - 1  # the highest (extrapolated) Reynolds number: the hardest case
    times = _strip_times(source.shape[1])
    rows = {"reference": test["velocity"][s, 1:].float(), "source": source[s], **{n: t[s] for n, t in trajs.items()}}
    vmax = float(_vorticity(rows["reference"][times]).abs().max())
    fig, axes = plt.subplots(len(times), len(rows), figsize=(1.6 * len(rows) + 1, 2.9 * len(times)), squeeze=False)
    for j, (name, traj) in enumerate(rows.items()):
        for i, t in enumerate(times):
            a = axes[i, j]
            im = a.imshow(_vorticity(traj[t]).numpy(), origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            a.set_xticks([])
            a.set_yticks([])
            if i == 0:
                a.set_title(name, fontsize=8)
            if j == 0:
                a.set_ylabel(f"step {t + 1}")
    fig.colorbar(im, ax=axes, shrink=0.6, label="vorticity")
    fig.suptitle(f"Re = {m['test_reynolds'][s]:g} ({m['regime'][s]})")
    io.save_figure(out / "plots" / "vorticity_strip.png", fig)


def report(cfg: KarmanExperimentConfig, m: dict) -> str:
    """The Markdown report of a finished run (``metrics.json`` → ``report.md``)."""
    seeds = len(cfg.seeds)
    lines = [
        "# Karman wake: solver-in-the-loop vs supervised corrections",
        "",
        f"Source 32·{cfg.train.scale}×64·{cfg.train.scale} (dt = 1), reference {cfg.train.factor}× finer in space and time; "
        f"train Re {list(cfg.train.reynolds)}; test Re {m['test_reynolds']}; model {cfg.model} (width {cfg.width}); "
        f"{seeds} seed(s); batch {cfg.optim.batch_size}, Adam lr {cfg.optim.lr} cosine.",
        "",
        "Budgets: "
        + ", ".join(
            f"'{p}' = {cfg.optim.iterations} updates per variant"
            if p == "updates"
            else f"'{p}' = {cfg.wall_seconds:g} s per variant"
            for p in cfg.protocols
        ),
        "",
    ]
    for h in cfg.horizons:
        hs = str(h)
        for protocol, by_variant in m["variants"].items():
            names = list(by_variant)
            lines += [
                f"## Mean relative L1 error over {h} steps, protocol '{protocol}'"
                + (" (mean over seeds; [min, max])" if seeds > 1 else ""),
                "",
                "| test Re | regime | source | " + " | ".join(names) + " |",
                "|---|---|---|" + "---|" * len(names),
            ]
            for i, (r, g) in enumerate(zip(m["test_reynolds"], m["regime"])):
                row = [f"{m['source'][hs]['l1']['per_re'][i]:.4f}"] + [
                    f"{by_variant[n][hs]['l1']['per_re'][i]:.4f}" for n in names
                ]
                lines.append(f"| {r:g} | {g} | " + " | ".join(row) + " |")

            def cell(s: dict) -> str:
                return f"**{s['mean']:.4f}**" + (f" [{s['min']:.4f}, {s['max']:.4f}]" if seeds > 1 else "")

            src = m["source"][hs]["l1"]["mean"]
            lines.append(
                "| **all** | | "
                + " | ".join([cell(m["source"][hs]["l1"])] + [cell(by_variant[n][hs]["l1"]) for n in names])
                + " |"
            )
            lines.append(
                "| reduction vs source | | 1× | "
                + " | ".join(f"{src / by_variant[n][hs]['l1']['mean']:.1f}×" for n in names)
                + " |"
            )
            lines.append(
                "| relative L2 (all) | | "
                + " | ".join([f"{m['source'][hs]['l2']['mean']:.4f}"] + [f"{by_variant[n][hs]['l2']['mean']:.4f}" for n in names])
                + " |"
            )
            lines.append("")
    lines += [
        "## Training cost",
        "",
        "| protocol | variant | updates (per seed) | wall time | per update |",
        "|---|---|---|---|---|",
    ]
    for protocol, by_variant in m["training"].items():
        for n, runs in by_variant.items():
            its = [r["iterations"] for r in runs]
            sec = sum(r["seconds"] for r in runs) / len(runs)
            per_update = 1000 * sec / max(sum(its) / len(its), 1)
            lines.append(f"| {protocol} | {n} | {', '.join(map(str, its))} | {sec:.0f} s | {per_update:.0f} ms |")
    if "best" in m:
        b = m["best"]
        lines += [
            "",
            f"Best: {b['variant']} ({b['protocol']}), {b['reduction']:.1f}× lower error than the source"
            f" over {cfg.horizons[0]} steps.",
        ]
    lines += ["", "Plots: `plots/error_over_time.png`, `plots/vorticity_strip.png` (highest test Re)."]
    return "\n".join(lines) + "\n"


def load_config(run_dir: str | Path) -> KarmanExperimentConfig:
    """The :class:`KarmanExperimentConfig` of a run folder; ``FileNotFoundError``/``ValueError`` otherwise."""
    path = Path(run_dir) / "config.json"
    raw = io.read_run_config(run_dir, "train karman")
    try:
        if raw.get("experiment") != "karman":
            raise ValueError(f"experiment is {raw.get('experiment')!r}, not 'karman'")

        def data(d: dict) -> KarmanDataConfig:
            return KarmanDataConfig(**{**d, "reynolds": tuple(d["reynolds"])})

        names = {f.name for f in dataclasses.fields(KarmanExperimentConfig)}
        kw = {k: v for k, v in raw.items() if k in names}
        kw.update(train=data(raw["train"]), test=data(raw["test"]), optim=TrainConfig(**raw["optim"]))
        for k in ("variants", "protocols", "seeds", "horizons"):
            kw[k] = tuple(kw[k])
        return KarmanExperimentConfig(**kw)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is corrupt or from another experiment: {e}") from None


def load_run(run_dir: str | Path, protocol: str | None = None, seed: int | None = None) -> tuple[KarmanExperimentConfig, dict]:
    """Configuration and trained corrections ``{variant: StaggeredCorrection}`` of a finished run folder
    (first protocol and seed unless given); ``FileNotFoundError``/``ValueError`` naming the missing or
    corrupt file otherwise."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    protocol = protocol or cfg.protocols[0]
    seed = cfg.seeds[0] if seed is None else seed
    base = karman(scale=cfg.train.scale).stepper
    return cfg, {name: _load_model(cfg, run_dir, protocol, seed, name, base, rebuild=False)[0] for name in cfg.variants}
