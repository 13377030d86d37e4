"""Input handling shared by the correctors: shape checks and conditioning as constant channels."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def with_conditioning(
    state: torch.Tensor, conditioning: Mapping[str, torch.Tensor], names: tuple[str, ...], dim: int, in_channels: int
) -> torch.Tensor:
    """Check ``state`` ``(B, in_channels, *spatial)`` and the conditioning keywords, and append each named
    ``(B,)`` conditioning value as a constant channel: returns ``(B, in_channels + len(names), *spatial)``."""
    if state.ndim != dim + 2 or state.shape[1] != in_channels:
        raise ValueError(
            f"state must have shape (B, {in_channels}, {', '.join('N' if dim == 1 else 'HW')}) "
            f"for this {dim}D model, got {tuple(state.shape)}"
        )
    if set(conditioning) != set(names):
        raise ValueError(f"conditioning must be exactly {names}, got {tuple(conditioning)}")
    if not names:
        return state
    spatial = state.shape[2:]
    extra = []
    for name in names:
        c = conditioning[name].to(state.dtype).reshape(-1)
        if c.shape[0] != state.shape[0]:
            raise ValueError(f"conditioning {name!r} must have shape ({state.shape[0]},), got {tuple(conditioning[name].shape)}")
        extra.append(c.view(-1, 1, *([1] * dim)).expand(-1, 1, *spatial))
    return torch.cat([state, *extra], dim=1)
