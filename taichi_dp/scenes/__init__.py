"""Ready-made problems (presets, initial conditions, exact solutions)."""

from .burgers import cole_hopf, pbdl_burgers, random_sines, sine_initial
from .flow import karman, karman_grid, lid_driven_cavity, smoke_plume, taylor_green, taylor_green_velocity
from .pbdl_karman import pbdl_karman
from .scene import Scene

__all__ = [
    "Scene",
    "cole_hopf",
    "karman",
    "karman_grid",
    "lid_driven_cavity",
    "pbdl_burgers",
    "pbdl_karman",
    "random_sines",
    "sine_initial",
    "smoke_plume",
    "taylor_green",
    "taylor_green_velocity",
]
