"""The data-format commands end to end: ``datagen karman --format zarr`` writes xarray stores (and no
``.pt``), training reads them without regenerating, ``export RUN_DIR`` writes the rollouts as NetCDF, and a
damaged store stops training with one error line naming it."""

from pathlib import Path

import pytest

from taichi_dp import cli
from taichi_dp.learn import datasets, karman_data
from taichi_dp.learn.karman_experiment import KarmanExperiment


def _flip_a_chunk_byte(store: Path) -> Path:
    """Flip one byte in the largest chunk file of a Zarr store (the velocity data); returns the file."""
    chunk = max((p for p in store.rglob("*") if p.is_file() and not p.name.startswith(".") and "zarr" not in p.name),
                key=lambda p: p.stat().st_size)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    return chunk


@pytest.mark.slow  # tiny karman data (~20 s), a tiny study and an export (~30 s) on 2 cores
def test_zarr_cache_trains_and_the_run_exports_to_netcdf(tmp_path, monkeypatch, capsys):
    cache, out = tmp_path / "cache", tmp_path / "run"
    rc = cli.main(["datagen", "karman", "--preset", "tiny", "--cache", str(cache), "--format", "zarr", "--no-progress"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    cfg = KarmanExperiment.configure(preset="tiny")[0]
    for split in ("train", "test"):
        store = karman_data.cache_path(getattr(cfg.data, split), cache, "zarr")
        assert store.is_dir() and str(store) in printed.out
    assert not list(cache.glob("*.pt"))  # the store is the only copy

    def no_generation(*args, **kwargs):
        raise AssertionError("training regenerated data instead of reading the Zarr store")

    monkeypatch.setattr(karman_data, "generate", no_generation)
    rc = cli.main(["train", "karman", "--preset", "tiny", "--cache", str(cache), "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert not list(cache.glob("*.pt"))

    rc = cli.main(["export", str(out), "--cache", str(cache), "--format", "netcdf", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    ds = datasets.read_dataset(out / "rollouts.nc")
    names = set(ds.data_vars)
    assert {"u", "v", "u_source", "v_source"} <= names and any(n.startswith("u_SOL") for n in names), names
    ref = karman_data.load_or_generate(cfg.data.test, cache, format="zarr")["velocity"]
    v, _ = datasets.velocity_from_dataset(ds)
    assert v.shape == ref.shape and bool((v == ref).all())  # the reference, bit for bit
    # exporting again refuses to replace the file unless asked
    rc = cli.main(["export", str(out), "--cache", str(cache), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--overwrite" in err[0]

    # a damaged store is an error naming it, never silently regenerated or used
    store = karman_data.cache_path(cfg.data.train, cache, "zarr")
    _flip_a_chunk_byte(store)
    run2 = str(tmp_path / "run2")
    rc = cli.main(["train", "karman", "--preset", "tiny", "--cache", str(cache), "--out", run2, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and store.name in err[0], err


def test_datagen_refuses_an_unknown_format(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["datagen", "karman", "--format", "hdf5"])
    assert e.value.code == 2 and "--format" in capsys.readouterr().err


def test_cache_path_names_each_format(tmp_path):
    cfg = KarmanExperiment.configure(preset="tiny")[0].data.train
    assert [karman_data.cache_path(cfg, tmp_path, f).suffix for f in karman_data.FORMATS] == [".pt", ".zarr", ".nc"]
    with pytest.raises(ValueError, match="format must be one of"):
        karman_data.cache_path(cfg, tmp_path, "hdf5")
