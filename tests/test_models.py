"""The learned components in models/: shapes, zero initialisation, conditioning checks, and that they
plug into the staggered hybrid step."""

import pytest
import torch

from models import ResidualCNN, UNet


@pytest.mark.parametrize("shape", [(3, 2, 64, 32), (2, 2, 33, 17), (1, 2, 8, 8)])
def test_unet_shapes_zero_init_and_gradients(shape):
    torch.manual_seed(0)
    net = UNet(2, conditioning=("re",), width=8, levels=2).double()
    x = torch.randn(*shape, dtype=torch.float64)
    re = torch.randn(shape[0], dtype=torch.float64)
    y = net(x, re=re)
    assert y.shape == x.shape and torch.equal(y, torch.zeros_like(y))  # zero-initialised output
    torch.nn.init.normal_(net.out.weight)
    y = net(x, re=re)
    y.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.down[0][0].weight.grad.abs().sum() > 0  # the gradient reaches the first layer
    assert not torch.allclose(y, net(x, re=re + 1.0))  # the conditioning channel matters


def test_models_reject_bad_inputs_with_clear_messages():
    for net in (UNet(2, conditioning=("re",)), ResidualCNN(2, 2, conditioning=("re",))):
        with pytest.raises(ValueError, match=r"state must have shape \(B, 2, H, W\)"):
            net(torch.zeros(1, 3, 8, 8), re=torch.zeros(1))
        with pytest.raises(ValueError, match="conditioning must be exactly"):
            net(torch.zeros(1, 2, 8, 8))
        with pytest.raises(ValueError, match=r"conditioning 're' must have shape \(2,\)"):
            net(torch.zeros(2, 2, 8, 8), re=torch.zeros(3))
    with pytest.raises(ValueError, match="levels"):
        UNet(2, levels=0)


def test_karman_sized_models_have_about_47k_parameters():
    """The sizes the karman experiment documents: the book's ResidualCNN (5×5, two residual blocks) at
    width 21 and a two-level U-Net at width 10 both have ≈47k parameters."""
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(ResidualCNN(2, 2, conditioning=("re",), width=21, blocks=2, kernel_size=5)) == 46832
    assert count(UNet(2, conditioning=("re",), width=10, levels=2)) == 46392


def test_unet_plugs_into_the_staggered_correction():
    import taichi_dp as tdp
    from taichi_dp.grid.staggered import FlowBoundary, staggered_shape
    from taichi_dp.learn.hybrid import StaggeredCorrection

    grid = tdp.Grid.rect((16, 8), (2.0, 1.0))
    net = UNet(2, conditioning=("re",), width=4).double()
    torch.nn.init.normal_(net.out.weight, std=0.1)
    corr = StaggeredCorrection(net, grid, FlowBoundary.box())
    v = torch.randn(2, *staggered_shape(grid), dtype=torch.float64)
    dv = corr(v, re=torch.zeros(2, dtype=torch.float64))
    assert dv.shape == v.shape and dv.abs().sum() > 0
    assert torch.equal(dv * (1 - corr.free), torch.zeros_like(dv))
