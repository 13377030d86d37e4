"""Learning through the solver: hybrid steps, NON / SOL-k losses, training, experiments."""

from .hybrid import hybrid_rollout, hybrid_step, non_loss, sol_loss
from .io import load_checkpoint, save_checkpoint
from .shape_optimization import PlacementConfig, PlacementResult, place_obstacle
from .trainer import TrainConfig, TrainResult, train

__all__ = [
    "PlacementConfig",
    "PlacementResult",
    "TrainConfig",
    "TrainResult",
    "hybrid_rollout",
    "hybrid_step",
    "load_checkpoint",
    "non_loss",
    "place_obstacle",
    "save_checkpoint",
    "sol_loss",
    "train",
]
