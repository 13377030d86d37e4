"""Hybrid solver, NON/SOL losses, the trainer (resume), checkpoints, and the Burgers experiment parts."""

import os

import pytest
import torch
from torch import nn

import taichi_dp as tdp
from models import ResidualCNN
from taichi_dp.learn import (
    TrainConfig,
    config,
    hybrid_rollout,
    hybrid_step,
    load_checkpoint,
    non_loss,
    save_checkpoint,
    sol_loss,
    train,
)
from taichi_dp.learn.burgers_experiment import BurgersExperiment, BurgersExperimentConfig, evaluate, reference_data, source_solver
from taichi_dp.learn.experiment import Trajectories
from taichi_dp.solvers import Burgers


def _solver(n=16):
    return Burgers(tdp.Grid.line(n, -1, 1), tdp.Boundary.periodic(1), 0.01, 1 / 32)


def test_residual_cnn_shapes_zero_init_and_errors():
    torch.manual_seed(26)
    m1 = ResidualCNN(1, 1, conditioning=("nu",)).double()
    u = torch.randn(3, 1, 16, dtype=torch.float64)
    nu = torch.rand(3, dtype=torch.float64)
    assert torch.equal(m1(u, nu=nu), torch.zeros_like(u))  # starts as the bare solver
    m2 = ResidualCNN(2, 2, width=8, blocks=1, padding_mode="zeros").double()
    assert m2(torch.randn(2, 2, 6, 7, dtype=torch.float64)).shape == (2, 2, 6, 7)
    with pytest.raises(ValueError, match="conditioning"):
        m1(u)
    with pytest.raises(ValueError, match="shape"):
        m1(torch.randn(3, 2, 16, dtype=torch.float64), nu=nu)
    with pytest.raises(ValueError, match="odd"):
        ResidualCNN(1, 1, kernel_size=4)


def test_hybrid_step_is_solver_plus_correction():
    torch.manual_seed(27)
    st = _solver()
    u = 0.5 * torch.randn(2, 1, 16, dtype=torch.float64)
    lin = nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular").double()
    model = lambda s: lin(s)
    s = st(u)
    assert torch.allclose(hybrid_step(st, model, u, {}), s + lin(s))
    assert torch.equal(hybrid_step(st, None, u, {}), s)
    assert hybrid_rollout(st, model, u, 3, {}).shape == (2, 4, 1, 16)


def test_sol_gradient_through_solver_gradchecks():
    """The SOL-k loss is differentiable w.r.t. the network weights *through* k solver steps (f64)."""
    torch.manual_seed(0)
    st = _solver(12)
    lin = nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular").double()
    ref = 0.5 * torch.randn(2, 4, 1, 12, dtype=torch.float64)
    w0, b0 = lin.weight.detach().clone().requires_grad_(), lin.bias.detach().clone().requires_grad_()

    def loss(w, b):
        model = lambda s: nn.functional.conv1d(nn.functional.pad(s, (1, 1), mode="circular"), w, b)
        return sol_loss(st, model, ref, {})

    assert torch.autograd.gradcheck(loss, (w0, b0))


def test_sol_and_non_gradients_differ_beyond_one_step():
    """k = 1 SOL equals NON on the same source states; k > 1 adds the solver's Jacobian."""
    torch.manual_seed(1)
    st = _solver()
    ref = 0.5 * torch.randn(2, 3, 1, 16, dtype=torch.float64)
    model = ResidualCNN(1, 1, width=4, blocks=1).double()
    nn.init.normal_(model.out.weight, std=0.1)
    g_sol1 = torch.autograd.grad(sol_loss(st, model, ref[:, :2], {}), model.out.weight)[0]
    with torch.no_grad():
        src = st(ref[:, 0].contiguous())
    g_non = torch.autograd.grad(non_loss(model, src, ref[:, 1], {}), model.out.weight)[0]
    assert torch.allclose(g_sol1, g_non, rtol=1e-10)
    g_sol2 = torch.autograd.grad(sol_loss(st, model, ref, {}), model.out.weight)[0]
    assert not torch.allclose(g_sol2, g_non, rtol=1e-3)


def test_train_decreases_loss_and_resume_matches_uninterrupted(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 4, dtype=torch.float64)
    y = x @ torch.randn(4, 1, dtype=torch.float64)

    def setup():
        torch.manual_seed(5)
        model = nn.Linear(4, 1).double()
        return model, lambda idx: torch.mean((model(x[idx]) - y[idx]) ** 2)

    cfg = TrainConfig(iterations=40, batch_size=8, lr=0.05, checkpoint_every=10)
    model_a, loss_a = setup()
    res_a = train(model_a, loss_a, 64, cfg, progress=False)
    assert res_a.losses[-1] < 0.05 * res_a.losses[0]

    # interrupt run B after 25 iterations (checkpoint written at 20), then resume it
    model_b, loss_b = setup()
    calls = {"n": 0}

    def failing(idx):
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt
        return loss_b(idx)

    ckpt = tmp_path / "ck.pt"
    with pytest.raises(KeyboardInterrupt):
        train(model_b, failing, 64, cfg, progress=False, checkpoint=ckpt)
    assert len(load_checkpoint(ckpt)["losses"]) == 20
    model_c, loss_c = setup()
    res_c = train(model_c, loss_c, 64, cfg, progress=False, checkpoint=ckpt)
    assert res_c.losses == pytest.approx(res_a.losses, rel=1e-12)
    for p, q in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="different TrainConfig"):
        train(setup()[0], loss_c, 64, TrainConfig(iterations=41), progress=False, checkpoint=ckpt)


def test_checkpoint_io_is_atomic_and_safe(tmp_path):
    path = tmp_path / "sub" / "m.pt"
    save_checkpoint(path, {"w": torch.ones(3), "step": 4})
    assert load_checkpoint(path)["step"] == 4
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary files left behind
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    path.write_bytes(path.read_bytes()[:50])  # truncated
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")  # arbitrary pickles are refused (weights_only)
    with pytest.raises(ValueError, match="corrupt or not"):
        load_checkpoint(tmp_path / "evil.pt")


def test_burgers_experiment_pieces_and_sol_training_reduces_loss():
    small = ["data.n=16", "data.steps=8", "data.train.nus=0.005,0.02", "data.test.nus=0.01", "data.train.states=2",
             "data.test.states=1", "model.width=8", "model.blocks=1", "train.variants=NON,SOL-3", "train.iterations=30",
             "train.batch_size=4", "train.lr=3e-3", "eval.horizons=8"]  # fmt: skip
    cfg = config.apply_overrides(BurgersExperimentConfig(), small)
    gen = torch.Generator().manual_seed(0)
    data = reference_data(cfg, cfg.data.train.nus, cfg.data.train.states, gen)
    assert data.reference.shape == (4, 9, 1, 16) and data.nu.tolist() == [0.005, 0.005, 0.02, 0.02]
    # the reference differs from the coarse source solver (there is something to learn)
    with torch.no_grad():
        src = source_solver(cfg, data.nu)(data.reference[:, 0].contiguous())
    assert (src - data.reference[:, 1]).abs().max() > 1e-4
    trajectories = Trajectories(data.reference, data.nu, cfg.data.train.nus, torch.tensor([0, 0, 1, 1]))
    model, res = BurgersExperiment(cfg).train_variant("SOL-3", "updates", 0, trajectories, progress=False)
    first, last = sum(res.losses[:5]) / 5, sum(res.losses[-5:]) / 5
    assert last < 0.7 * first
    errs = evaluate(cfg, data, {"source": None, "SOL": model})
    assert errs["SOL"].shape == (4, 8) and errs["SOL"].mean() < errs["source"].mean()


def test_sol_loss_with_gradient_checkpointing_matches():
    torch.manual_seed(3)
    st = _solver()
    model = ResidualCNN(1, 1, width=4, blocks=1).double()
    nn.init.normal_(model.out.weight, std=0.1)
    ref = 0.5 * torch.randn(2, 7, 1, 16, dtype=torch.float64)
    plain = torch.autograd.grad(sol_loss(st, model, ref, {}), list(model.parameters()))
    ckpt = torch.autograd.grad(sol_loss(st, model, ref, {}, checkpoint_every=2), list(model.parameters()))
    for a, b in zip(plain, ckpt):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("every", [2, 4, 6, 10])
def test_checkpointed_rollout_matches_plain_for_any_chunk_length(every):
    """``rollout(checkpoint_every=k)`` for 6 steps: the same trajectory and gradient as without
    checkpointing, including a last chunk shorter than ``k`` (6 % 4) and ``k`` > steps."""
    from taichi_dp.solvers import rollout

    torch.manual_seed(28)
    st = _solver()
    u0 = (0.5 * torch.randn(2, 1, 16, dtype=torch.float64)).requires_grad_()
    w = torch.randn(2, 6, 1, 16, dtype=torch.float64)
    plain = rollout(st, u0, 6, include_initial=False)
    (g_plain,) = torch.autograd.grad((plain * w).sum(), u0)
    chunked = rollout(st, u0, 6, include_initial=False, checkpoint_every=every)
    assert chunked.shape == plain.shape == (2, 6, 1, 16)
    assert torch.allclose(chunked, plain, rtol=0, atol=1e-14)
    (g_chunked,) = torch.autograd.grad((chunked * w).sum(), u0)
    assert torch.allclose(g_chunked, g_plain, rtol=1e-12, atol=1e-14)
