"""taichi_dp: differentiable grid PDE solvers in Taichi, bridged to PyTorch autograd."""

from .grid import Boundary, Dirichlet, Grid, Periodic, ZeroGradient
from .runtime import Runtime, current, init

__version__ = "0.1.0"
__all__ = ["Boundary", "Dirichlet", "Grid", "Periodic", "Runtime", "ZeroGradient", "current", "init"]
