"""Time steppers: immutable callables ``u_next = stepper(u)`` composed from :mod:`taichi_dp.ops`."""

from ..ops.solve_options import SolveOptions
from .advection_diffusion import AdvectionDiffusion
from .base import Repeated, Stepper, rollout
from .burgers import Burgers
from .moving import MovingBodies, MovingBody, pack_moving, unpack_moving
from .navier_stokes import NavierStokes
from .phiflow_navier_stokes import PhiFlowNavierStokes
from .smoke import SmokePlume, pack_smoke, unpack_smoke
from .steady import SteadyState, SteadyStateError, run_to_steady
from .time_stepping import SSPRK2, SSPRK3, ForwardEuler, RungeKutta, SplitStep, TimeStepping

__all__ = [
    "SSPRK2",
    "SSPRK3",
    "AdvectionDiffusion",
    "Burgers",
    "ForwardEuler",
    "MovingBodies",
    "MovingBody",
    "NavierStokes",
    "PhiFlowNavierStokes",
    "Repeated",
    "RungeKutta",
    "SmokePlume",
    "SolveOptions",
    "SplitStep",
    "SteadyState",
    "SteadyStateError",
    "Stepper",
    "TimeStepping",
    "pack_moving",
    "pack_smoke",
    "rollout",
    "run_to_steady",
    "unpack_moving",
    "unpack_smoke",
]
