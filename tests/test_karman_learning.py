"""Karman solver-in-the-loop pieces: reference data (flux-conserving downsampling, cache integrity) and
the staggered correction plugged into the hybrid step and the SOL loss."""

import warnings

import pytest
import torch

import taichi_dp as tdp
from models import ResidualCNN
from taichi_dp.grid.staggered import FlowBoundary, staggered_shape, valid_faces
from taichi_dp.learn import TrainConfig, hybrid_step, sol_loss, train
from taichi_dp.learn.hybrid import StaggeredCorrection
from taichi_dp.learn.karman_data import KarmanDataConfig, downsample_staggered, load_or_generate, source_grid
from taichi_dp.ops.pressure import divergence, project
from taichi_dp.scenes import karman

TINY = KarmanDataConfig(reynolds=(150.0, 300.0), scale=1, factor=2, warmup=1, steps=3)


def test_downsampling_conserves_fluxes():
    """A divergence-free fine field stays divergence-free on the coarse grid (fluxes are averaged)."""
    torch.manual_seed(0)
    fine = tdp.Grid.rect((16, 12), (1.6, 1.2))
    coarse = tdp.Grid.rect((8, 6), (1.6, 1.2))
    v, _ = project(torch.randn(2, *staggered_shape(fine), dtype=torch.float64), fine, FlowBoundary.box(), rtol=1e-12)
    vc = downsample_staggered(v, 2)
    assert vc.shape == (2, *staggered_shape(coarse))
    assert float(divergence(vc, coarse).abs().max()) < 1e-9
    assert torch.equal(vc * (1 - valid_faces(coarse, torch.float64)), torch.zeros_like(vc))  # padding stays 0


def test_reference_data_shapes_cache_and_corruption(tmp_path):
    data = load_or_generate(TINY, tmp_path, progress=False)
    shape = staggered_shape(source_grid(TINY))
    assert data["velocity"].shape == (2, 4, *shape) and data["reynolds"].tolist() == [150.0, 300.0]
    assert torch.isfinite(data["velocity"]).all()
    again = load_or_generate(TINY, tmp_path, progress=False)  # from the cache, bit-identical
    assert torch.equal(again["velocity"], data["velocity"])
    (path,) = tmp_path.glob("karman-*.pt")
    blob = torch.load(path, weights_only=True)
    blob["velocity"][0, 0, 0, 5, 5] += 1.0  # tampered content: the digest no longer matches
    torch.save(blob, path)
    with pytest.warns(RuntimeWarning, match="content hash"):
        fixed = load_or_generate(TINY, tmp_path, progress=False)
    assert torch.equal(fixed["velocity"], data["velocity"])
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning, match="regenerating"):
        load_or_generate(TINY, tmp_path, progress=False)


def test_zero_initialised_correction_is_the_bare_solver_and_sol_training_reduces_loss(tmp_path):
    data = load_or_generate(TINY, tmp_path, progress=False)
    ref = data["velocity"].double()
    re = data["reynolds"]
    scene = karman(reynolds=re)
    st = scene.stepper
    net = ResidualCNN(2, 2, conditioning=("re",), width=8, blocks=1, padding_mode="replicate").double()
    corr = StaggeredCorrection(net, st.grid, st.boundary, st.fluid)
    cond = {"re": (re.log() - 5.3) / 0.7}
    v = ref[:, 0].contiguous()
    with torch.no_grad():
        assert torch.equal(hybrid_step(st, corr, v, cond), st(v))

    def batch_loss(idx):
        return sol_loss(st, corr, ref[:, :3], cond)  # SOL-2 on both Reynolds numbers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = train(corr, batch_loss, 1, TrainConfig(iterations=10, batch_size=1, lr=2e-5), progress=False)
    print(f"\nSOL-2 losses: {result.losses}")
    assert result.losses[-1] < 0.995 * result.losses[0]  # measured: 0.9917 after 10 updates
    with torch.no_grad():  # fixed faces are never corrected
        delta = corr(v, **cond)
    assert torch.equal(delta * (1 - corr.free), torch.zeros_like(delta))


def test_karman_experiment_end_to_end_tiny(tmp_path):
    from taichi_dp.learn.karman_experiment import KarmanExperimentConfig, run

    cfg = KarmanExperimentConfig(
        train=TINY,
        test=KarmanDataConfig(reynolds=(200.0,), scale=1, factor=2, warmup=1, steps=3),
        unroll=2,
        width=4,
        blocks=1,
        optim=TrainConfig(iterations=3, batch_size=2, lr=1e-5),
    )
    m = run(cfg, tmp_path / "run", cache=tmp_path / "cache", progress=False)
    assert set(m["mean_relative_l1"]) == {"source", "NON", "SOL-2"}
    assert all(0 < v < 1 for v in m["mean_relative_l1"].values())
    for name in ("config.json", "metrics.json", "report.md", "checkpoints/non.pt", "checkpoints/sol2.pt"):
        assert (tmp_path / "run" / name).is_file()
