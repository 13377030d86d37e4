"""Trajectories ⇄ xarray Datasets ⇄ NetCDF / Zarr files (taichi_dp.learn.datasets)."""

import json
import os
import re
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import taichi_dp
from taichi_dp.grid import Grid
from taichi_dp.grid.staggered import face_coordinates, staggered_shape, valid_faces
from taichi_dp.learn import datasets as D
from taichi_dp.learn.io import IntegrityError
from taichi_dp.learn.karman_data import KarmanDataConfig, load_or_generate, source_grid
from taichi_dp.learn.karman_experiment import KarmanExperimentConfig

GRIDS = {
    2: Grid((6, 5), ((-1.0, 2.0), (0.5, 3.0))),  # h = (0.5, 0.5), origin not at 0
    3: Grid((4, 5, 3), ((0.0, 2.0), (-1.0, 1.5), (10.0, 11.5))),  # h = 0.5 everywhere
}
SUFFIX = {"zarr": ".zarr", "netcdf": ".nc"}


def _velocity(grid: Grid, lead: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """A random staggered velocity with zero padding and, on the first valid faces, awkward values written
    bit by bit: −0.0, the smallest subnormal, the largest finite number, a NaN with a payload."""
    gen = torch.Generator().manual_seed(seed)
    valid = valid_faces(grid, dtype).expand(*lead, *staggered_shape(grid))
    v = (torch.randn(valid.shape, generator=gen, dtype=torch.float64).to(dtype) * valid).contiguous()
    first = valid.reshape(-1).nonzero()[:4, 0].tolist()
    bits = v.view(torch.int32 if dtype == torch.float32 else torch.int64).view(-1)
    max_bits = torch.tensor(torch.finfo(dtype).max, dtype=dtype).view(bits.dtype)
    nan_bits = 0x7FC00005 if dtype == torch.float32 else 0x7FF8000000000005
    for i, b in zip(first, (-(2 ** (bits.element_size() * 8 - 1)), 1, int(max_bits), nan_bits)):
        bits[i] = b
    return v


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int64)


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nd", [2, 3])
def test_round_trip_is_bit_exact(tmp_path, nd, dtype, fmt):
    grid = GRIDS[nd]
    lead = (3, 4) if nd == 2 else (4,)  # a batch of trajectories in 2D, one trajectory in 3D
    v = _velocity(grid, lead, dtype)
    expected = torch.where(valid_faces(grid, dtype) > 0, v, torch.zeros_like(v))  # padding comes back +0.0
    rho = torch.rand(*lead, *grid.shape, dtype=dtype)
    samples = {"Re": torch.tensor([100.0, 200.0, 400.0], dtype=torch.float64)} if nd == 2 else None
    ds = D.velocity_dataset(v, grid, times=0.25 * np.arange(4), samples=samples, scalars={"density": rho})
    path = D.write_dataset(ds, tmp_path / f"traj{SUFFIX[fmt]}")
    assert path.is_dir() == (fmt == "zarr")
    back = D.read_dataset(path)
    v2, grid2 = D.velocity_from_dataset(back)
    assert grid2 == grid and v2.dtype == dtype and v2.shape == v.shape
    assert torch.equal(_bits(v2), _bits(expected))  # −0.0, subnormal, NaN payload: bit for bit
    assert torch.equal(_bits(D.scalar_from_dataset(back, "density")), _bits(rho))
    np.testing.assert_array_equal(back["time"].values, [0.0, 0.25, 0.5, 0.75])
    if nd == 2:
        assert back["Re"].dims == ("sample",) and back["Re"].values.tolist() == [100.0, 200.0, 400.0]
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary left behind


def test_coordinates_are_the_physical_face_and_cell_positions():
    grid = GRIDS[2]  # y: 6 cells on [−1, 2]; x: 5 cells on [0.5, 3]
    v = _velocity(grid, (2,), torch.float64)
    ds = D.velocity_dataset(v, grid, times=[0.0, 1.0])
    assert ds["u"].dims == ("time", "y", "x_face") and ds["v"].dims == ("time", "y_face", "x")
    np.testing.assert_array_equal(ds["x_face"].values, [0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    np.testing.assert_array_equal(ds["x"].values, [0.75, 1.25, 1.75, 2.25, 2.75])
    np.testing.assert_array_equal(ds["y_face"].values, [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(ds["y"].values, [-0.75, -0.25, 0.25, 0.75, 1.25, 1.75])
    # the value at a coordinate is the tensor's face there: v_x (channel 1) at (y, x) = (0.25, 1.0) is v[:, 1, 2, 1]
    assert float(ds["u"].sel(time=1.0, y=0.25, x_face=1.0)) == float(v[1, 1, 2, 1])
    assert float(ds["v"].sel(time=0.0, y_face=2.0, x=2.75)) == float(v[0, 0, 6, 4])  # v_y on the top boundary
    yx = face_coordinates(grid)  # (component, coordinate, i, j)
    assert (float(yx[1, 0, 2, 1]), float(yx[1, 1, 2, 1])) == (0.25, 1.0)
    assert (float(yx[0, 0, 6, 4]), float(yx[0, 1, 6, 4])) == (2.0, 2.75)

    g3 = GRIDS[3]  # z: 4 cells on [0, 2]
    ds3 = D.velocity_dataset(_velocity(g3, (1,), torch.float32), g3, times=[0.0])
    assert ds3["w"].dims == ("time", "z_face", "y", "x") and ds3["u"].dims == ("time", "z", "y", "x_face")
    np.testing.assert_array_equal(ds3["z_face"].values, [0.0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(ds3["x"].values, [10.25, 10.75, 11.25])
    assert D.velocity_names(3) == ("w", "v", "u")


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_attributes_are_written_and_read_back(tmp_path, fmt):
    from taichi_dp.grid.staggered import FlowBoundary

    grid = GRIDS[3]
    ds = D.velocity_dataset(
        _velocity(grid, (2,), torch.float32),
        grid,
        times=[0.0, 0.5],
        boundary=FlowBoundary.box(ndim=3),
        attrs={"scene": "smoke_plume_3d", "dt": 0.5, "buoyancy": [0.5, 1.0], "steps": 2},
    )
    back = D.read_dataset(D.write_dataset(ds, tmp_path / f"a{SUFFIX[fmt]}"), expect={"scene": "smoke_plume_3d", "dt": 0.5})
    a = back.attrs
    assert a["scene"] == "smoke_plume_3d" and float(a["dt"]) == 0.5 and int(a["steps"]) == 2
    assert list(a["buoyancy"]) == [0.5, 1.0] and a["axes"] == "z y x"
    assert list(a["grid_shape"]) == [4, 5, 3] and list(a["grid_lower"]) == [0.0, -1.0, 10.0]
    assert list(a["grid_upper"]) == [2.0, 1.5, 11.5] and a["taichi_dp_version"] == taichi_dp.__version__
    assert a["boundary"].startswith("z_lo: Wall(slip=False") and "x_hi: Wall" in a["boundary"]
    assert a[D.HASH_ATTR] == D.content_hash(back) and len(a[D.HASH_ATTR]) == 64
    with pytest.raises(ValueError, match=r"scene: 'smoke_plume_3d', expected 'karman'; Re: absent"):
        D.read_dataset(tmp_path / f"a{SUFFIX[fmt]}", expect={"scene": "karman", "Re": 100.0})


def _written(tmp_path: Path, fmt: str) -> Path:
    grid = GRIDS[2]
    ds = D.velocity_dataset(_velocity(grid, (2, 3), torch.float32), grid, times=[0.0, 1.0, 2.0], attrs={"scene": "t"})
    return D.write_dataset(ds, tmp_path / f"t{SUFFIX[fmt]}")


def test_a_flipped_byte_in_a_zarr_chunk_is_detected(tmp_path):
    path = _written(tmp_path, "zarr")
    chunk = max(
        (p for p in (path / "u").rglob("*") if p.is_file() and p.name not in ("zarr.json", ".zarray", ".zattrs")),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{re.escape(str(path))}.* is corrupt"):
        D.read_dataset(path)


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_an_edit_through_xarray_without_a_new_hash_is_detected(tmp_path, fmt):
    path = _written(tmp_path, fmt)
    ds = D.read_dataset(path)
    ds["u"][0, 1, 2, 3] = ds["u"][0, 1, 2, 3] + 1e-3  # edited, the recorded hash kept
    edited = tmp_path / f"edited{SUFFIX[fmt]}"
    ds.to_netcdf(edited, engine="h5netcdf") if fmt == "netcdf" else ds.to_zarr(edited, consolidated=False)
    expected = rf"{re.escape(str(edited))} is corrupt: damaged or modified.*expected {ds.attrs[D.HASH_ATTR]}"
    with pytest.raises(IntegrityError, match=expected):
        D.read_dataset(edited)
    ds.attrs["scene"] = "other"  # an attribute edit too
    D.write_dataset(ds, path, overwrite=True)  # written through taichi_dp: a new hash, and it reads again
    assert D.read_dataset(path).attrs["scene"] == "other"


def test_a_truncated_netcdf_file_is_detected(tmp_path):
    path = _written(tmp_path, "netcdf")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(IntegrityError, match=rf"{re.escape(str(path))} is corrupt: damaged or truncated"):
        D.read_dataset(path)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.nc"):
        D.read_dataset(tmp_path / "nowhere.nc")


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_a_dataset_without_hash_follows_the_unverified_rule(tmp_path, fmt):
    grid = GRIDS[2]
    ds = D.velocity_dataset(_velocity(grid, (2,), torch.float64), grid, times=[0.0, 1.0])
    path = tmp_path / f"foreign{SUFFIX[fmt]}"
    ds.to_netcdf(path, engine="h5netcdf") if fmt == "netcdf" else ds.to_zarr(path, consolidated=False)  # no hash
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(path))} has no {D.HASH_ATTR}.*unverified"):
        back = D.read_dataset(path)
    assert torch.equal(_bits(D.velocity_from_dataset(back)[0]), _bits(D.velocity_from_dataset(ds)[0]))
    with pytest.raises(IntegrityError, match=re.escape(str(path))):
        D.read_dataset(path, unverified="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D.read_dataset(path, unverified="ignore")


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_an_interrupted_write_leaves_no_destination_and_keeps_an_old_one(tmp_path, fmt, monkeypatch):
    grid = GRIDS[2]
    ds = D.velocity_dataset(_velocity(grid, (2,), torch.float32), grid, times=[0.0, 1.0])
    method = "to_netcdf" if fmt == "netcdf" else "to_zarr"
    real = getattr(xr.Dataset, method)

    def dies_half_way(self, target, *args, **kwargs):
        kwargs["encoding"] = {k: e for k, e in kwargs["encoding"].items() if k != "u"}
        real(self.drop_vars("u"), target, *args, **kwargs)  # part of the data is on disk ...
        raise KeyboardInterrupt  # ... when the writer is killed

    path = tmp_path / f"t{SUFFIX[fmt]}"
    monkeypatch.setattr(xr.Dataset, method, dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        D.write_dataset(ds, path)
    assert os.listdir(tmp_path) == []  # no destination, no temporary

    monkeypatch.setattr(xr.Dataset, method, real)
    D.write_dataset(ds, path)
    before = D.content_hash(D.read_dataset(path))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        D.write_dataset(ds, path)
    monkeypatch.setattr(xr.Dataset, method, dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        D.write_dataset(ds.assign_attrs(scene="new"), path, overwrite=True)
    monkeypatch.setattr(xr.Dataset, method, real)
    assert os.listdir(tmp_path) == [path.name] and D.content_hash(D.read_dataset(path)) == before  # old one intact
    D.write_dataset(ds.assign_attrs(scene="new"), path, overwrite=True)
    assert D.read_dataset(path).attrs["scene"] == "new" and os.listdir(tmp_path) == [path.name]


def test_stale_temporaries_of_killed_writers_are_removed_only_beside_a_complete_store(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "t.zarr"
    stale = tmp_path / f".t.zarr.{D._host()}-{dead.pid}.abc123.tmp"
    stale.mkdir()
    (stale / "zarr.json").write_text("{}")
    grid = GRIDS[2]
    ds = D.velocity_dataset(_velocity(grid, (1,), torch.float32), grid, times=[0.0])
    D.write_dataset(ds, path)
    assert stale.is_dir()  # the destination did not exist: a store caught between two renames is kept
    D.write_dataset(ds, path, overwrite=True)
    assert not stale.exists() and os.listdir(tmp_path) == ["t.zarr"]


def test_errors_name_the_argument(tmp_path):
    grid = GRIDS[2]
    v = _velocity(grid, (2,), torch.float32)
    bad = v.clone()
    bad[0, 1, -1, 0] = 1.0  # v_x padding row
    with pytest.raises(ValueError, match="v has non-zero padding entries in component 1"):
        D.velocity_dataset(bad, grid, times=[0.0, 1.0])
    with pytest.raises(ValueError, match="times must be 2 finite numbers"):
        D.velocity_dataset(v, grid, times=[0.0])
    with pytest.raises(ValueError, match=r"v must be \(T, nd, \*\(N \+ 1\)\) or \(S, T"):
        D.velocity_dataset(v[:, :, :-1], grid, times=[0.0, 1.0])
    with pytest.raises(TypeError, match="v must be float32 or float64"):
        D.velocity_dataset(v.half(), grid, times=[0.0, 1.0])
    with pytest.raises(ValueError, match="samples needs a batch"):
        D.velocity_dataset(v, grid, times=[0.0, 1.0], samples={"Re": [1.0, 2.0]})
    with pytest.raises(TypeError, match="attribute flag must be"):
        D.velocity_dataset(v, grid, times=[0.0, 1.0], attrs={"flag": True})
    with pytest.raises(ValueError, match="attrs\\['axes'\\] is set by taichi_dp"):
        D.velocity_dataset(v, grid, times=[0.0, 1.0], attrs={"axes": "x y"})
    ds = D.velocity_dataset(v, grid, times=[0.0, 1.0])
    with pytest.raises(ValueError, match="format must be given"):
        D.write_dataset(ds, tmp_path / "t.h5")
    with pytest.raises(ValueError, match="format must be 'zarr' or 'netcdf', got 'hdf5'"):
        D.write_dataset(ds, tmp_path / "t.nc", "hdf5")
    with pytest.raises(ValueError, match="the dataset has no velocity variable"):
        D.velocity_from_dataset(ds, "SOL-4")
    with pytest.raises(ValueError, match="leading shape"):
        D.add_velocity(ds, _velocity(grid, (3,), torch.float32), "SOL-4")


def _fake_karman(config: KarmanDataConfig) -> dict[str, torch.Tensor]:
    grid = source_grid(config)
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(len(config.reynolds), config.steps + 1, *staggered_shape(grid), generator=gen) * valid_faces(grid)
    return {"velocity": v.contiguous(), "reynolds": torch.tensor(config.reynolds, dtype=torch.float64)}


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_karman_data_and_its_config_round_trip(tmp_path, fmt):
    config = KarmanExperimentConfig.preset("tiny").data.test
    data = _fake_karman(config)
    ds = D.karman_dataset(data, config)
    assert ds.attrs["scene"] == "karman" and ds.attrs["dt"] == 1.0 and ds["Re"].values.tolist() == [100.0, 200.0, 400.0]
    np.testing.assert_array_equal(ds["time"].values, [1.0, 2.0, 3.0, 4.0, 5.0])  # warmup 1, steps 4
    path = D.write_dataset(ds, D.karman_store_path(tmp_path, config, fmt), fmt)
    assert path.name == f"karman-{config.key()}{SUFFIX[fmt]}"
    back_config, back = D.read_karman(path, config)
    assert back_config == config
    assert torch.equal(back["velocity"], data["velocity"]) and torch.equal(back["reynolds"], data["reynolds"])
    with pytest.raises(ValueError, match="holds other karman data: steps: saved 4, now 5"):
        D.read_karman(path, replace(config, steps=5))
    with pytest.raises(ValueError, match=r"data\['velocity'\] must be float32"):
        D.karman_dataset({**data, "velocity": data["velocity"].double()}, config)
    with pytest.raises(ValueError, match=r"data\['velocity'\] contains NaN"):
        D.karman_dataset({**data, "velocity": data["velocity"] / 0.0}, config)


@pytest.mark.slow  # reference-data generation
def test_generated_karman_data_round_trips_through_a_store(tmp_path):
    config = KarmanExperimentConfig.preset("tiny").data.train
    data = load_or_generate(config, tmp_path / "cache", progress=False)
    for fmt in ("zarr", "netcdf"):
        path = D.write_dataset(D.karman_dataset(data, config), D.karman_store_path(tmp_path, config, fmt))
        back_config, back = D.read_karman(path)
        assert back_config == config and json.loads(D.read_dataset(path).attrs["config"])["steps"] == config.steps
        assert back.keys() == data.keys()
        for key in data:
            assert back[key].dtype == data[key].dtype and torch.equal(back[key], data[key])


@pytest.mark.slow  # a 3D simulation (kernel compilation)
def test_a_3d_smoke_plume_round_trips_with_z_coordinates(tmp_path):
    from taichi_dp.scenes.flow3d import smoke_plume_3d
    from taichi_dp.solvers import rollout, unpack_smoke

    scene = smoke_plume_3d(n=16)  # (at n = 8 no cell centre lies inside the smoke source)
    traj = rollout(scene.stepper, scene.state0, 3)[0]  # (T, 4, 17, 17, 17)
    v, rho = unpack_smoke(traj)
    grid = scene.stepper.grid
    ds = D.velocity_dataset(v, grid, times=[0.0, 1.0, 2.0, 3.0], scalars={"density": rho[:, 0]}, attrs={"scene": "plume"})
    for fmt in ("zarr", "netcdf"):
        back = D.read_dataset(D.write_dataset(ds, tmp_path / f"plume{SUFFIX[fmt]}"))
        v2, grid2 = D.velocity_from_dataset(back)
        assert grid2 == grid and torch.equal(v2, v) and float(v2.abs().max()) > 0
        assert torch.equal(D.scalar_from_dataset(back, "density"), rho[:, 0]) and float(rho.max()) > 0
        np.testing.assert_array_equal(back["z_face"].values, 6.25 * np.arange(17))


@pytest.mark.slow  # a short training run
def test_export_run_writes_reference_and_rollouts(tmp_path):
    from taichi_dp.learn.karman_experiment import run

    cfg = KarmanExperimentConfig.preset("tiny")
    run(cfg, tmp_path / "run", cache=tmp_path / "cache", progress=False)
    path = D.export_run(tmp_path / "run", tmp_path / "rollouts.nc", cache=tmp_path / "cache")
    ds = D.read_dataset(path, expect={"scene": "karman", "protocol": "updates", "seed": 0})
    ref, grid = D.velocity_from_dataset(ds)
    assert grid == source_grid(cfg.data.test) and ref.shape == (3, 5, *staggered_shape(grid))
    for name in ("source", *cfg.train.variants):
        traj, _ = D.velocity_from_dataset(ds, name)
        assert ds[f"u_{name}"].attrs["variant"] == name and torch.equal(traj[:, 0], ref[:, 0])
        assert 0 < float((traj[:, 1:] - ref[:, 1:]).abs().max()) < 1.0  # a rollout, close to the reference
    assert json.loads(ds.attrs["run_config"])["train"]["variants"] == list(cfg.train.variants)
    with pytest.raises(FileExistsError):
        D.export_run(tmp_path / "run", path, cache=tmp_path / "cache")


def test_the_package_imports_without_the_data_extra(tmp_path):
    code = f"""
import sys
for name in ("xarray", "zarr", "h5netcdf", "h5py"):
    sys.modules[name] = None  # as if not installed
import taichi_dp, taichi_dp.learn, taichi_dp.learn.datasets as D
import torch
from taichi_dp.grid import Grid
for blocked in ("xarray", "zarr", "h5netcdf", "h5py"):
    try:
        ds = D.velocity_dataset(torch.zeros(1, 2, 5, 5), Grid.rect((4, 4)), times=[0.0])
        D.write_dataset(ds, {str(tmp_path / "t.zarr")!r}, overwrite=True)
        D.write_dataset(ds, {str(tmp_path / "t.nc")!r}, overwrite=True)
    except ImportError as e:
        print(blocked, "->", e)
    else:
        print(blocked, "-> no error")
    del sys.modules[blocked]  # installed from now on
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for blocked in ("xarray", "zarr", "h5netcdf", "h5py"):
        expected = f"{blocked} -> taichi_dp datasets need the optional package '{blocked}': pip install 'taichi_dp[data]'"
        assert expected in out.stdout
