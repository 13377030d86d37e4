"""A small residual convolutional corrector for 1D and 2D states."""

from __future__ import annotations

import torch
from torch import nn

from ._inputs import with_conditioning


class _ResBlock(nn.Module):
    def __init__(self, conv: type[nn.Module], width: int, kernel_size: int, padding_mode: str) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = conv(width, width, kernel_size, padding=pad, padding_mode=padding_mode)
        self.conv2 = conv(width, width, kernel_size, padding=pad, padding_mode=padding_mode)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


class ResidualCNN(nn.Module):
    """Residual CNN corrector: ``correction = model(state, **conditioning)``.

    ``conv(in + n_cond → width)``, ``blocks`` residual blocks of two convolutions each, and a final
    ``conv(width → out)`` initialised to zero, so an untrained model returns a zero correction and the
    hybrid solver starts exactly as the numerical solver.

    Args:
        dim: spatial dimensions, 1 or 2.
        in_channels: channels of the state.
        out_channels: channels of the correction (default: ``in_channels``).
        conditioning: names of scalar conditioning inputs, each a ``(B,)`` tensor passed by keyword and
            appended to the input as a constant channel (normalise them to O(1) first).
        width: hidden channels (16–64 is typical); blocks: residual blocks (1–6).
        kernel_size: odd convolution size; padding_mode: ``"circular"`` for periodic domains,
            ``"replicate"`` or ``"zeros"`` otherwise.

    Shapes: state ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        dim: int,
        in_channels: int,
        out_channels: int | None = None,
        conditioning: tuple[str, ...] = (),
        width: int = 32,
        blocks: int = 2,
        kernel_size: int = 5,
        padding_mode: str = "circular",
    ) -> None:
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {dim}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        self.dim = dim
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.conditioning = tuple(conditioning)
        pad = kernel_size // 2
        self.inp = conv(in_channels + len(self.conditioning), width, kernel_size, padding=pad, padding_mode=padding_mode)
        self.blocks = nn.Sequential(*(_ResBlock(conv, width, kernel_size, padding_mode) for _ in range(blocks)))
        self.out = conv(width, self.out_channels, kernel_size, padding=pad, padding_mode=padding_mode)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, state: torch.Tensor, **conditioning: torch.Tensor) -> torch.Tensor:
        x = with_conditioning(state, conditioning, self.conditioning, self.dim, self.in_channels)
        return self.out(self.blocks(self.inp(x)))
