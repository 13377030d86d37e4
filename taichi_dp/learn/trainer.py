"""A small, deterministic training loop shared by every training variant (NON, SOL-k, ...).

The variant is only the ``batch_loss`` function; optimiser, schedule, sampling, progress bar and
checkpoints are identical, which is what makes comparisons between variants fair.

Distributed (``torchrun``, :mod:`taichi_dp.learn.distributed`): every rank draws the same global batch of
indices from the seeded generator and computes the loss on its own slice; the loss is scaled so that the
gradient DDP averages over ranks is exactly the gradient of the mean loss over the global batch. A run on
W ranks with global batch B therefore follows the single-process run with batch B (to rounding), and its
checkpoints are interchangeable with single-process ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed as dist
from .io import load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    """Optimisation settings (Adam with cosine decay from ``lr`` to ``lr * lr_final_factor``)."""

    iterations: int = 600
    batch_size: int = 32  # global batch (split over the ranks of a distributed run)
    lr: float = 1e-3
    lr_final_factor: float = 0.01
    seed: int = 0
    checkpoint_every: int = 0  # iterations between checkpoints (0: only at the end)
    # Wall-clock budget of the optimisation loop in seconds (all sessions of a resumed run together):
    # training stops before the first iteration that starts after the budget is used up, and the cosine
    # schedule follows the larger of the fractions of ``iterations`` and of the budget used (so it decays
    # fully by the end of whichever runs out first). None: no budget (the schedule follows iterations).
    max_seconds: float | None = None


def validate_train_config(name: str, config: TrainConfig) -> None:
    """``ValueError`` naming ``{name}.field``, the expected range and the value, for an unusable TrainConfig."""
    for field_name, minimum in (("iterations", 1), ("batch_size", 1), ("checkpoint_every", 0)):
        value = getattr(config, field_name)
        if not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}.{field_name} must be an integer >= {minimum}, got {value!r}")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise ValueError(f"{name}.lr must be a finite number > 0, got {config.lr}")
    if not (math.isfinite(config.lr_final_factor) and config.lr_final_factor >= 0):
        raise ValueError(f"{name}.lr_final_factor must be a finite number >= 0, got {config.lr_final_factor}")
    if config.max_seconds is not None and not (math.isfinite(config.max_seconds) and config.max_seconds > 0):
        raise ValueError(f"{name}.max_seconds must be a finite number > 0 or None, got {config.max_seconds}")


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # global-batch mean loss per iteration
    seconds: float = 0.0  # wall time of the optimisation loop (all sessions if resumed)
    iterations: int = 0  # completed iterations (all sessions); fewer than configured if the budget ran out
    stopped_by_budget: bool = False  # True when ``max_seconds`` ended the loop early
    learning_rate: float = math.nan  # the learning rate of the latest update (for a ``callback``)

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(len(self.losses), 1)


def _resume_key(config: dict) -> dict:
    """The parts of a TrainConfig that must match to resume (the time budget and the checkpoint interval may
    change between sessions: a resumed run follows the uninterrupted one whatever the interval)."""
    return {k: v for k, v in config.items() if k not in ("max_seconds", "checkpoint_every")}


def learning_rate(config: TrainConfig, iteration: int, time_fraction: float = 0.0) -> float:
    """The cosine schedule: ``lr`` at iteration 0, decaying to ``lr * lr_final_factor`` at ``config.iterations``
    (or earlier when ``time_fraction``, the used fraction of ``max_seconds``, is further along)."""
    final = config.lr * config.lr_final_factor
    phase = min(max(math.pi * iteration / max(config.iterations, 1), math.pi * time_fraction), math.pi)
    return final + 0.5 * (config.lr - final) * (1 + math.cos(phase))


def _load_module_state(module: torch.nn.Module, saved: object, checkpoint: str | Path) -> None:
    """``module.load_state_dict(saved)``, or a ValueError naming the checkpoint and what does not fit (a trainer
    state written for another model), instead of torch's many-line report."""
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint {checkpoint} holds no model state (got {type(saved).__name__})")
    own = module.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in saved and isinstance(saved[k], torch.Tensor) and saved[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{len(missing)} missing parameter(s) (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(shapes)} of another shape (e.g. {shapes[0]})" if shapes else "",
        ]
        raise ValueError(
            f"checkpoint {checkpoint} holds the trainer state of another model ({', '.join(p for p in parts if p)}):"
            " use the model it was written with, or another output folder"
        )
    module.load_state_dict(saved)


def _first_non_finite(named: list[tuple[str, torch.Tensor | None]]) -> str | None:
    """The name of the first tensor with a NaN/Inf value (one device sync when all are finite), else None."""
    tensors = [(n, t) for n, t in named if t is not None]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
        return None
    return next(n for n, t in tensors if not bool(torch.isfinite(t).all()))


def _non_finite_error(desc: str, what: str, it: int, checkpoint: str | Path | None) -> FloatingPointError:
    """Training stops before the step (and before any save): the last checkpoint holds the last good state."""
    kept = (
        f"the last good checkpoint {checkpoint} is left untouched; resuming from it replays the same batches and "
        "stops here again: change the configuration (e.g. a lower lr) in a new run folder"
        if checkpoint is not None
        else "no checkpoint was written"
    )
    return FloatingPointError(f"{desc}: {what} at iteration {it}; {kept}")


def train(
    model: nn.Module,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n_samples: int,
    config: TrainConfig,
    *,
    desc: str = "train",
    progress: bool = True,
    checkpoint: str | Path | None = None,
    callback: Callable[[int, TrainResult], None] | None = None,
) -> TrainResult:
    """Minimise ``batch_loss(indices)`` over random mini-batches of sample indices ``[0, n_samples)``.

    Args:
        model: the parameters to train. In a distributed run (an initialised process group with more
            than one rank) it must be the DDP wrapper from :func:`taichi_dp.learn.distributed.wrap`, and
            ``batch_loss`` must call that wrapper (its forward arms the gradient all-reduce).
        batch_loss: maps an index tensor to the scalar *mean* loss over those samples (in a distributed
            run: over this rank's slice of the global batch).
        n_samples: size of the index set to sample from (uniformly, with replacement across batches).
        config: optimisation settings; ``config.seed`` fixes the sampling order.
        checkpoint: if given, state is saved there atomically every ``checkpoint_every`` iterations and at
            the end (by rank 0 only); an existing checkpoint is resumed from (by every rank: the folder
            must be shared between nodes), giving the same result as an uninterrupted run.
        callback: called after every update, on every rank, as ``callback(iteration, result)``:
            ``result.losses[-1]`` is the loss of that iteration (== ``result.losses[iteration]``, the
            global-batch mean) and ``result.learning_rate`` the learning rate of its update (as
            :func:`taichi_dp.learn.inverse.smoke_control`'s callback, but its return value is ignored: a
            stop would need every rank to agree). Used for experiment logging
            (:mod:`taichi_dp.learn.experiment_log`); its time counts towards ``max_seconds``.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if config.max_seconds is not None and not config.max_seconds > 0:
        raise ValueError(f"config.max_seconds must be > 0 seconds or None, got {config.max_seconds}")
    distributed = dist.is_distributed()
    world = dist.world_size()
    if distributed:
        if not dist.is_wrapped(model):
            raise ValueError(
                f"model must be wrapped with taichi_dp.learn.distributed.wrap(model) in a distributed run "
                f"(world size {world}), and batch_loss must call the wrapper; got a plain {type(model).__name__}"
            )
        if config.batch_size < world:
            raise ValueError(f"config.batch_size ({config.batch_size}) must be >= the number of ranks ({world})")
    module = dist.unwrap(model)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    named = list(module.named_parameters())

    gen = torch.Generator().manual_seed(config.seed)
    result = TrainResult()
    start = 0
    exists = checkpoint is not None and Path(checkpoint).is_file()
    if distributed and (dist.broadcast_from_main([float(exists)])[0] > 0.5) != exists:
        raise RuntimeError(
            f"rank {dist.rank()} {'sees' if exists else 'does not see'} the checkpoint {checkpoint} but rank 0 "
            f"{'does not' if exists else 'does'}: checkpoints of a distributed run must be on a shared filesystem"
        )
    if exists:
        state = load_checkpoint(checkpoint)  # type: ignore[arg-type]
        if _resume_key(state.get("config") or {}) != _resume_key(asdict(config)):
            raise ValueError(f"checkpoint {checkpoint} was written with a different TrainConfig: {state.get('config')}")
        _load_module_state(module, state.get("model"), checkpoint)  # type: ignore[arg-type]
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        result = TrainResult(list(state["losses"]), float(state["seconds"]))
        start = len(result.losses)

    def save() -> None:
        if checkpoint is not None and dist.is_main():
            save_checkpoint(
                checkpoint,
                {
                    "model": module.state_dict(),
                    "optimizer": opt.state_dict(),
                    "generator": gen.get_state(),
                    "losses": result.losses,
                    "seconds": result.seconds,
                    "config": asdict(config),
                },
            )

    def budget(t0: float) -> tuple[bool, float]:
        """(budget used up, fraction used): rank 0's clock decides for every rank."""
        if config.max_seconds is None:
            return False, 0.0
        spent = result.seconds + time.perf_counter() - t0
        stop, fraction = dist.broadcast_from_main([float(spent >= config.max_seconds), spent / config.max_seconds])
        return stop > 0.5, fraction

    model.train()
    timed = config.max_seconds is not None  # the bar (and its ETA) follows the wall-clock budget
    bar = tqdm(
        desc=desc,
        disable=not progress or not dist.is_main(),
        initial=round(result.seconds) if timed else start,
        total=round(config.max_seconds) if timed else config.iterations,
        unit="s" if timed else "it",
        leave=False,
    )
    t0 = time.perf_counter()
    it = start
    try:
        for it in range(start, config.iterations):
            stop, time_fraction = budget(t0)
            if stop:
                result.stopped_by_budget = True
                break
            lr = learning_rate(config, it, time_fraction)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = torch.randint(0, n_samples, (config.batch_size,), generator=gen)  # the global batch, on every rank
            if distributed:
                local = dist.shard(idx)
                weight = len(local) / config.batch_size  # this rank's share of the global mean
                loss = batch_loss(local)
                # DDP averages gradients over ranks: scale so that the average is d(global mean)/dθ
                objective = loss * (weight * world)
                reported = dist.all_reduce_sum(loss.detach() * weight)  # the global-batch mean, on every rank
            else:
                loss = objective = reported = batch_loss(idx)
            value = float(reported.detach())
            if not math.isfinite(value):
                raise _non_finite_error(desc, f"loss became {value}", it, checkpoint)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            bad = _first_non_finite([(n, p.grad) for n, p in named])  # identical on every rank (all-reduced)
            if bad is not None:
                raise _non_finite_error(desc, f"the gradient of {bad} became NaN/Inf (loss {value:.6g})", it, checkpoint)
            opt.step()
            bad = _first_non_finite([(n, p.detach()) for n, p in named])
            if bad is not None:
                raise _non_finite_error(desc, f"parameter {bad} became NaN/Inf in the update (loss {value:.6g})", it, checkpoint)
            result.losses.append(value)
            result.learning_rate = lr
            if callback is not None:
                callback(it, result)
            if timed:
                bar.update(min(round(result.seconds + time.perf_counter() - t0), bar.total) - bar.n)
            else:
                bar.update(1)
            if it % 10 == 0:
                bar.set_postfix(loss=f"{result.losses[-1]:.3e}", **({"updates": it + 1} if timed else {}))
            if config.checkpoint_every and (it + 1) % config.checkpoint_every == 0:
                result.seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                save()
    except RuntimeError as e:
        if not (distributed and dist.is_peer_failure(e)):
            raise
        last = f"; resume continues from {checkpoint}" if checkpoint is not None else ""
        raise RuntimeError(
            f"{desc}: rank {dist.rank()} of {world} lost its peers at iteration {it} (a rank died, hung past "
            f"the process-group timeout, or the network failed){last}: {e}"
        ) from e
    result.seconds += time.perf_counter() - t0
    result.iterations = len(result.losses)
    bar.close()
    save()
    model.eval()
    return result
