"""Ready-made problems (presets, initial conditions, exact solutions)."""

from .burgers import cole_hopf, pbdl_burgers, random_sines, sine_initial
from .dfg import DFG_2D1_REFERENCE, DFGQuantities, dfg_2d1, dfg_grid, dfg_inflow, dfg_quantities, solve_dfg_2d1
from .flow import karman, karman_grid, lid_driven_cavity, smoke_plume, taylor_green, taylor_green_velocity
from .flow3d import abc_flow, abc_velocity, smoke_plume_3d, sphere_channel
from .moving import oscillating_cylinder, stirring_rod
from .pbdl_karman import pbdl_karman
from .scene import Scene

__all__ = [
    "DFG_2D1_REFERENCE",
    "DFGQuantities",
    "Scene",
    "abc_flow",
    "abc_velocity",
    "cole_hopf",
    "dfg_2d1",
    "dfg_grid",
    "dfg_inflow",
    "dfg_quantities",
    "karman",
    "karman_grid",
    "lid_driven_cavity",
    "oscillating_cylinder",
    "pbdl_burgers",
    "pbdl_karman",
    "random_sines",
    "sine_initial",
    "smoke_plume",
    "smoke_plume_3d",
    "solve_dfg_2d1",
    "sphere_channel",
    "stirring_rod",
    "taylor_green",
    "taylor_green_velocity",
]
