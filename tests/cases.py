"""Boundary-condition cases shared by the operator test modules (small grids, batch 2, 2 channels)."""

import torch

from taichi_dp import Boundary, Dirichlet, Grid, Periodic, ZeroGradient

F64 = torch.float64
B, C = 2, 2
GRIDS = {1: Grid.line(7), 2: Grid.rect((5, 6), (1.0, 1.5))}  # h = 1/7; (h_y, h_x) = (0.2, 0.25)

BOUNDARIES = {
    1: {
        "periodic": Boundary.periodic(1),
        "dirichlet": Boundary(((Dirichlet(0.7), Dirichlet(-0.4)),)),
        "zero_gradient": Boundary.uniform(ZeroGradient(), 1),
        "dirichlet_lo_zerograd_hi": Boundary(((Dirichlet(0.5), ZeroGradient()),)),
        "zerograd_lo_dirichlet_hi": Boundary(((ZeroGradient(), Dirichlet(-0.3)),)),
    },
    2: {
        "periodic": Boundary.periodic(2),
        "dirichlet": Boundary(((Dirichlet(0.7), Dirichlet(-0.4)), (Dirichlet(0.3), Dirichlet(1.1)))),
        "zero_gradient": Boundary.uniform(ZeroGradient(), 2),
        "periodic_y_walls_x": Boundary(((Periodic(), Periodic()), (Dirichlet(0.5), ZeroGradient()))),
        "walls_y_periodic_x": Boundary(((ZeroGradient(), Dirichlet(-0.6)), (Periodic(), Periodic()))),
    },
}
CASES = [(ndim, name) for ndim in (1, 2) for name in BOUNDARIES[ndim]]
