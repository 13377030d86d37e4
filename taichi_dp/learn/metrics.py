"""Rollout error metrics shared by the experiments."""

from __future__ import annotations

import torch


def relative_errors(pred: torch.Tensor, ref: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Per-sample, per-step relative Lp error ``‖u − r‖_p / ‖r‖_p`` of trajectories ``(S, T, ...)``: ``(S, T)``."""
    return (pred - ref).flatten(2).norm(p=p, dim=2) / ref.flatten(2).norm(p=p, dim=2).clamp_min(1e-12)
