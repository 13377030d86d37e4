"""A small U-Net corrector for 2D states (multi-scale: sees the whole wake, not only a stencil)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._inputs import with_conditioning


def _double_conv(c_in: int, c_out: int, padding_mode: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode=padding_mode),
        nn.LeakyReLU(0.1),
        nn.Conv2d(c_out, c_out, 3, padding=1, padding_mode=padding_mode),
        nn.LeakyReLU(0.1),
    )


class UNet(nn.Module):
    """U-Net corrector: ``correction = model(state, **conditioning)``.

    ``levels`` times (two 3×3 convolutions, 2× average-pool down), a bottleneck, then (2× bilinear up,
    concatenate the skip, two convolutions) back to full resolution and a final 1×1 convolution
    initialised to zero (an untrained model returns a zero correction). Any ``H``, ``W`` work; odd
    sizes are handled by resampling to the skip's size.

    Args:
        in_channels: channels of the state; out_channels: channels of the correction (default: same).
        conditioning: names of scalar ``(B,)`` inputs appended as constant channels (normalise to O(1)).
        width: channels at full resolution, doubled per level (8–32 typical); levels: 1–4.
        padding_mode: ``"replicate"``/``"zeros"`` for walled domains, ``"circular"`` for periodic ones.

    Shapes: ``(B, in_channels, H, W)`` → ``(B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        conditioning: tuple[str, ...] = (),
        width: int = 16,
        levels: int = 2,
        padding_mode: str = "replicate",
    ) -> None:
        super().__init__()
        if not 1 <= levels <= 4:
            raise ValueError(f"levels must be in 1..4, got {levels}")
        self.dim = 2
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.conditioning = tuple(conditioning)
        widths = [width * 2**i for i in range(levels + 1)]
        c = in_channels + len(self.conditioning)
        self.down = nn.ModuleList()
        for w in widths[:-1]:
            self.down.append(_double_conv(c, w, padding_mode))
            c = w
        self.bottom = _double_conv(c, widths[-1], padding_mode)
        self.up = nn.ModuleList(
            _double_conv(widths[i + 1] + widths[i], widths[i], padding_mode) for i in reversed(range(levels))
        )
        self.out = nn.Conv2d(width, self.out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, state: torch.Tensor, **conditioning: torch.Tensor) -> torch.Tensor:
        x = with_conditioning(state, conditioning, self.conditioning, 2, self.in_channels)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2, ceil_mode=True)
        x = self.bottom(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.out(x)
