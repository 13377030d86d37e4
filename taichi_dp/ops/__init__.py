"""Differentiable operators, one module per concern. Each takes and returns torch tensors."""

from .advection import advect
from .diffusion import diffuse, diffuse_explicit, diffuse_implicit, stability_number
from .flux_advection import flux_advect
from .linear_solve import NotConvergedWarning, cg, solve_spd

__all__ = [
    "NotConvergedWarning",
    "advect",
    "cg",
    "diffuse",
    "diffuse_explicit",
    "diffuse_implicit",
    "flux_advect",
    "solve_spd",
    "stability_number",
]
