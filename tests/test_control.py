"""Smoke control (the Navier–Stokes inverse problem of demos/control.py) through the differentiable solver."""

import pytest
import torch

from taichi_dp.learn.inverse import SmokeControlConfig, smoke_control, smoke_control_problem

pytestmark = pytest.mark.usefixtures("f32")  # the demo runs in float32


def _centre(rho: torch.Tensor) -> torch.Tensor:
    """Centre of mass ``(y, x)`` of an ``(n, n)`` density in the 100 × 100 box."""
    c = (torch.arange(rho.shape[0], dtype=rho.dtype) + 0.5) * 100.0 / rho.shape[0]
    return torch.stack([(rho.sum(1) * c).sum(), (rho.sum(0) * c).sum()]) / rho.sum()


@pytest.mark.slow
def test_default_budget_reduces_loss_10x_and_moves_the_blob_to_the_target():
    cfg = SmokeControlConfig()  # exactly the demo's defaults
    r = smoke_control(cfg, progress=False)
    assert len(r.losses) == cfg.iterations + 1
    assert r.reduction >= 10.0, r.losses[:: max(1, cfg.iterations // 8)]
    assert r.density.shape == (cfg.steps + 1, cfg.n, cfg.n) and r.velocity.shape == (2, cfg.n + 1, cfg.n + 1)
    start, target = torch.tensor(cfg.start), torch.tensor(cfg.target)
    reached = _centre(r.density[-1])
    assert torch.linalg.norm(reached - target) < 0.2 * torch.linalg.norm(start - target), reached
    assert torch.allclose(_centre(r.density[0]), start, atol=1.0)  # the blob starts where it should
    # what the optimiser was compared against is the blob centred at the target
    assert torch.allclose(_centre(r.target), target, atol=1.0)


@pytest.mark.slow
def test_without_control_the_blob_misses_the_target():
    cfg = SmokeControlConfig(iterations=1)
    r = smoke_control(cfg, callback=lambda it, res: False, progress=False)  # stop before the first update
    assert len(r.losses) == 1 and float(r.velocity.abs().max()) == 0.0
    # at rest only the weak buoyancy moves it: far from the target, and the loss says so
    assert torch.linalg.norm(_centre(r.density[-1]) - torch.tensor(cfg.target)) > 30.0
    assert r.losses[0] == pytest.approx(float(torch.mean((r.density[-1] - r.target) ** 2)), rel=1e-5)


@pytest.mark.slow  # a short training run
def test_callback_sees_progress_and_can_stop():
    cfg = SmokeControlConfig(n=16, steps=3, iterations=6, lr=0.5)
    seen = []

    def cb(it, res):
        seen.append((it, len(res.losses), res.density.shape))
        return it < 3

    r = smoke_control(cfg, callback=cb, progress=False)
    assert seen == [(i, i + 1, (4, 16, 16)) for i in range(4)]
    assert len(r.losses) == 4 and r.losses[3] < r.losses[0]
    stepper, rho0, target = smoke_control_problem(cfg)
    assert stepper.source is None and rho0.shape == target.shape == (1, 1, 16, 16)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"steps": 0}, "steps"),
        ({"n": 4}, "n"),
        ({"iterations": 1.5}, "iterations"),
        ({"target": (50.0, 120.0)}, "target"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SmokeControlConfig(**kwargs)
