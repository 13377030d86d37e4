"""Learning through the solver: hybrid steps, NON / SOL-k losses, training, experiments."""

from .hybrid import hybrid_rollout, hybrid_step, non_loss, sol_loss
from .io import load_checkpoint, save_checkpoint
from .trainer import TrainConfig, TrainResult, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "hybrid_rollout",
    "hybrid_step",
    "load_checkpoint",
    "non_loss",
    "save_checkpoint",
    "sol_loss",
    "train",
]
