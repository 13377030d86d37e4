"""Solver-in-the-loop on the Karman wake (the PBDL "reducing numerical errors" setup), quick preset.

Source: the 32×64 :func:`~taichi_dp.scenes.karman` solver. Reference: the same scene ``factor``× finer
in space and time, flux-averaged onto the source faces (:mod:`taichi_dp.learn.karman_data`). The
correction is a :class:`models.ResidualCNN` on centred velocities conditioned on the normalised
log-Reynolds number, applied to the free staggered faces (:class:`~taichi_dp.learn.hybrid.StaggeredCorrection`).

Variants trained with the same network, data, optimiser, schedule and number of updates: NON (one
supervised step from pre-computed source states) and SOL-k (k hybrid steps through the solver).
Evaluation: rollouts from the first recorded state of held-out Reynolds numbers, per-step relative L1
(the book's metric) and L2 errors against the reference.

This is the first, CPU-sized version of the study; the full protocol (seeds, equal wall-clock budgets,
k = 4/16/32, extrapolation, 500-step rollouts) is not implemented here.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from models import ResidualCNN

from ..runtime import ensure_init
from ..scenes import karman
from ..solvers import NavierStokes
from . import io
from .hybrid import StaggeredCorrection, hybrid_rollout, non_loss, sol_loss
from .karman_data import KarmanDataConfig, load_or_generate
from .metrics import relative_errors
from .trainer import TrainConfig, TrainResult, train


@dataclass
class KarmanExperimentConfig:
    train: KarmanDataConfig = field(default_factory=lambda: KarmanDataConfig(reynolds=(120.0, 220.0, 400.0, 720.0)))
    test: KarmanDataConfig = field(default_factory=lambda: KarmanDataConfig(reynolds=(160.0, 530.0)))
    unroll: int = 4
    width: int = 24
    blocks: int = 2
    optim: TrainConfig = field(default_factory=lambda: TrainConfig(iterations=150, batch_size=4, lr=1e-4))
    seed: int = 0


def re_feature(cfg: KarmanExperimentConfig, re: torch.Tensor) -> torch.Tensor:
    lo, hi = math.log(min(cfg.train.reynolds)), math.log(max(cfg.train.reynolds))
    return (torch.log(re) - 0.5 * (lo + hi)) / (0.5 * (hi - lo))


def _solver(base: NavierStokes, re: torch.Tensor) -> NavierStokes:
    """The source solver with one Reynolds number per batch element (same mask tensor: cached multigrid)."""
    return dataclasses.replace(base, nu=(20.0 / re).to(base.fluid.dtype))


def _model(cfg: KarmanExperimentConfig, base: NavierStokes) -> StaggeredCorrection:
    rt = ensure_init()
    torch.manual_seed(cfg.seed)
    net = ResidualCNN(2, 2, conditioning=("re",), width=cfg.width, blocks=cfg.blocks, padding_mode="replicate")
    return StaggeredCorrection(net.to(dtype=rt.dtype, device=rt.device), base.grid, base.boundary, base.fluid)


def train_variant(
    cfg: KarmanExperimentConfig, variant: str, ref: torch.Tensor, re: torch.Tensor, base: NavierStokes, progress: bool
) -> tuple[StaggeredCorrection, TrainResult]:
    """Train NON or SOL-k on reference trajectories ``ref`` ``(S, T+1, 2, H+1, W+1)``."""
    model = _model(cfg, base)
    s, t1 = ref.shape[:2]
    if variant == "NON":
        with torch.no_grad():
            src = _solver(base, re.repeat_interleave(t1 - 1))(ref[:, :-1].reshape(-1, *ref.shape[2:]).contiguous())
        tgt = ref[:, 1:].reshape(-1, *ref.shape[2:])
        re_all = re.repeat_interleave(t1 - 1)

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            return non_loss(model, src[idx], tgt[idx], {"re": re_feature(cfg, re_all[idx])})

        n = s * (t1 - 1)
    else:
        k = cfg.unroll
        windows = t1 - k

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            traj, start = idx // windows, idx % windows
            window = ref[traj[:, None], start[:, None] + torch.arange(k + 1)[None, :]]
            return sol_loss(_solver(base, re[traj]), model, window, {"re": re_feature(cfg, re[traj])})

        n = s * windows
    return model, train(model, batch_loss, n, cfg.optim, desc=variant, progress=progress)


def run(cfg: KarmanExperimentConfig, out: str | Path, *, cache: str | Path = "runs/cache", progress: bool = True) -> dict:
    """Generate (or load) data, train NON and SOL-k, evaluate, write the run folder; returns the metrics."""
    rt = ensure_init()
    out = Path(out)
    io.write_json(out / "config.json", {"experiment": "karman", **asdict(cfg), "arch": rt.arch, "precision": rt.precision})
    t0 = time.perf_counter()
    train_data = load_or_generate(cfg.train, cache, progress=progress)
    test_data = load_or_generate(cfg.test, cache, progress=progress)
    datagen_s = time.perf_counter() - t0
    ref = train_data["velocity"].to(rt.dtype).to(rt.device)
    re = train_data["reynolds"].to(rt.dtype).to(rt.device)
    base = karman(scale=cfg.train.scale, reynolds=re).stepper

    results, models = {}, {}
    for variant in ("NON", f"SOL-{cfg.unroll}"):
        models[variant], results[variant] = train_variant(cfg, variant, ref, re, base, progress)
        io.save_checkpoint(
            out / "checkpoints" / f"{variant.lower().replace('-', '')}.pt", {"model": models[variant].state_dict()}
        )

    test_ref = test_data["velocity"].to(rt.dtype).to(rt.device)
    test_re = test_data["reynolds"].to(rt.dtype).to(rt.device)
    solver = _solver(base, test_re)
    cond = {"re": re_feature(cfg, test_re)}
    errors = {}
    with torch.no_grad():
        for name, model in {"source": None, **models}.items():
            traj = hybrid_rollout(solver, model, test_ref[:, 0].contiguous(), test_ref.shape[1] - 1, cond, include_initial=False)
            errors[name] = {"l1": relative_errors(traj, test_ref[:, 1:], 1), "l2": relative_errors(traj, test_ref[:, 1:], 2)}
    metrics = {
        "mean_relative_l1": {n: float(e["l1"].mean()) for n, e in errors.items()},
        "mean_relative_l2": {n: float(e["l2"].mean()) for n, e in errors.items()},
        "per_test_re": {
            f"{float(r):g}": {n: float(e["l1"][i].mean()) for n, e in errors.items()} for i, r in enumerate(test_re.cpu())
        },
        "error_over_time_l1": {n: e["l1"].mean(0).tolist() for n, e in errors.items()},
        "train": {n: {"iterations": len(r.losses), "seconds": r.seconds, "final_loss": r.losses[-1]} for n, r in results.items()},
        "datagen_seconds": datagen_s,
    }
    io.write_json(out / "metrics.json", metrics)
    io.write_text(out / "report.md", _report(cfg, metrics))
    return metrics


def _report(cfg: KarmanExperimentConfig, m: dict) -> str:
    names = list(m["mean_relative_l1"])
    lines = [
        "# Karman wake solver-in-the-loop (quick preset)",
        "",
        f"Source 32×64·{cfg.train.scale}, reference {cfg.train.factor}× finer; train Re {list(cfg.train.reynolds)}, "
        f"test Re {list(cfg.test.reynolds)}; {cfg.test.steps}-step rollouts; {cfg.optim.iterations} updates per variant.",
        "",
        "Mean relative L1 error of the velocity over the rollout:",
        "",
        "| test Re | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for re, row in m["per_test_re"].items():
        lines.append(f"| {re} | " + " | ".join(f"{row[n]:.4f}" for n in names) + " |")
    lines.append("| **all** | " + " | ".join(f"**{m['mean_relative_l1'][n]:.4f}**" for n in names) + " |")
    lines += ["", "| variant | updates | wall time | per update |", "|---|---|---|---|"]
    for n, t in m["train"].items():
        lines.append(
            f"| {n} | {t['iterations']} | {t['seconds']:.1f} s | {1000 * t['seconds'] / max(t['iterations'], 1):.0f} ms |"
        )
    return "\n".join(lines) + "\n"


def load_run(run_dir: str | Path) -> tuple[KarmanExperimentConfig, dict[str, StaggeredCorrection]]:
    """Configuration and trained corrections (``{"NON": ..., "SOL-k": ...}``) of a finished
    ``python -m taichi_dp train karman`` run folder; ``FileNotFoundError``/``ValueError`` naming the
    missing or corrupt file otherwise."""
    import json

    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a 'python -m taichi_dp train karman' run folder?")
    try:
        raw = json.loads(path.read_text())
        if raw.get("experiment") != "karman":
            raise ValueError(f"experiment is {raw.get('experiment')!r}, not 'karman'")

        def data(d: dict) -> KarmanDataConfig:
            return KarmanDataConfig(**{**d, "reynolds": tuple(d["reynolds"])})

        cfg = KarmanExperimentConfig(
            train=data(raw["train"]),
            test=data(raw["test"]),
            unroll=raw["unroll"],
            width=raw["width"],
            blocks=raw["blocks"],
            optim=TrainConfig(**raw["optim"]),
            seed=raw["seed"],
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is corrupt or from another experiment: {e}") from None
    base = karman(scale=cfg.train.scale).stepper
    models = {}
    for name in ("NON", f"SOL-{cfg.unroll}"):
        file = run_dir / "checkpoints" / f"{name.lower().replace('-', '')}.pt"
        state = io.load_checkpoint(file)
        model = _model(cfg, base)
        try:
            model.load_state_dict(state["model"])
        except (KeyError, RuntimeError) as e:
            raise ValueError(f"{file} does not fit the run's model: {e}") from None
        models[name] = model.eval()
    return cfg, models
