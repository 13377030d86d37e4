"""A small, deterministic training loop shared by every training variant (NON, SOL-k, ...).

The variant is only the ``batch_loss`` function; optimiser, schedule, sampling, progress bar and
checkpoints are identical, which is what makes comparisons between variants fair.
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

from .io import load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    """Optimisation settings (Adam with cosine decay from ``lr`` to ``lr * lr_final_factor``)."""

    iterations: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    lr_final_factor: float = 0.01
    seed: int = 0
    checkpoint_every: int = 0  # iterations between checkpoints (0: only at the end)


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the optimisation loop (all sessions if resumed)

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(len(self.losses), 1)


def train(
    model: nn.Module,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n_samples: int,
    config: TrainConfig,
    *,
    desc: str = "train",
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> TrainResult:
    """Minimise ``batch_loss(indices)`` over random mini-batches of sample indices ``[0, n_samples)``.

    Args:
        model: the parameters to train.
        batch_loss: maps a ``(batch_size,)`` index tensor to a scalar loss.
        n_samples: size of the index set to sample from (uniformly, with replacement across batches).
        config: optimisation settings; ``config.seed`` fixes the sampling order.
        checkpoint: if given, state is saved there atomically every ``checkpoint_every`` iterations and at
            the end; an existing checkpoint is resumed from, giving the same result as an uninterrupted run.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    final = config.lr * config.lr_final_factor

    def lr_at(it: int) -> float:
        return final + 0.5 * (config.lr - final) * (1 + math.cos(math.pi * it / max(config.iterations, 1)))

    gen = torch.Generator().manual_seed(config.seed)
    result = TrainResult()
    start = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint)
        if state.get("config") != asdict(config):
            raise ValueError(f"checkpoint {checkpoint} was written with a different TrainConfig: {state.get('config')}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        result = TrainResult(list(state["losses"]), float(state["seconds"]))
        start = len(result.losses)

    def save() -> None:
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "generator": gen.get_state(),
                    "losses": result.losses,
                    "seconds": result.seconds,
                    "config": asdict(config),
                },
            )

    model.train()
    bar = tqdm(
        range(start, config.iterations), desc=desc, disable=not progress, initial=start, total=config.iterations, leave=False
    )
    t0 = time.perf_counter()
    for it in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(it)
        idx = torch.randint(0, n_samples, (config.batch_size,), generator=gen)
        loss = batch_loss(idx)
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(f"{desc}: loss became {float(loss.detach())} at iteration {it}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.losses.append(float(loss.detach()))
        if it % 10 == 0:
            bar.set_postfix(loss=f"{result.losses[-1]:.3e}")
        if config.checkpoint_every and (it + 1) % config.checkpoint_every == 0:
            result.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            save()
    result.seconds += time.perf_counter() - t0
    bar.close()
    save()
    model.eval()
    return result
