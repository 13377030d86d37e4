"""Pluggable learned components (PyTorch only: never imports taichi or taichi_dp).

Interface every corrector follows::

    correction = model(state, **conditioning)

``state`` is a centred tensor ``(B, C, *spatial)`` (1D: ``(B, C, N)``, 2D: ``(B, C, H, W)``);
``conditioning`` are named ``(B,)`` tensors (e.g. a normalised viscosity or Reynolds number) that the
model declares in its ``conditioning`` attribute; the result has the shape of the state's velocity
``(B, C_out, *spatial)``. Any ``nn.Module`` with this call signature plugs into ``taichi_dp.learn``.
"""

from .corrector import ResidualCNN
from .unet import UNet

__all__ = ["ResidualCNN", "UNet"]
