"""Ready-made problems (presets, initial conditions, exact solutions)."""

from .burgers import cole_hopf, pbdl_burgers, random_sines, sine_initial
from .flow import karman, karman_grid, lid_driven_cavity, smoke_plume, taylor_green, taylor_green_velocity
from .flow3d import abc_flow, abc_velocity, smoke_plume_3d, sphere_channel
from .pbdl_karman import pbdl_karman
from .scene import Scene

__all__ = [
    "Scene",
    "abc_flow",
    "abc_velocity",
    "cole_hopf",
    "karman",
    "karman_grid",
    "lid_driven_cavity",
    "pbdl_burgers",
    "pbdl_karman",
    "random_sines",
    "sine_initial",
    "smoke_plume",
    "smoke_plume_3d",
    "sphere_channel",
    "taylor_green",
    "taylor_green_velocity",
]
