"""Reference data for solver-in-the-loop on the Karman wake, generated once and cached on disk.

A reference simulation runs ``factor`` times finer in space and time than the source solver and is
averaged onto the source grid's staggered faces (:func:`downsample_staggered`: each coarse face gets
the mean of the fine faces that tile it, so volume fluxes, and hence the discrete divergence of every
coarse cell, are preserved). Each Reynolds number is one batch element of the reference solver.

Cache format (``<cache_dir>/karman-<key>.pt``, a :func:`taichi_dp.learn.io.save_checkpoint` file with its
embedded file digest, loaded with ``torch.load(weights_only=True)``): ``{"config": asdict(config),
"velocity": (S, T+1, 2, H+1, W+1) float32, "reynolds": (S,) float64, "sha256": digest of every member
(configuration, velocity and Reynolds numbers: dtype, shape and bytes)}``. ``key`` is a hash of the
configuration; a file whose file digest or member digest does not match, or whose configuration, Reynolds
numbers, dtypes or shapes differ from the requested configuration, is regenerated (with a warning saying
why), never used.

The same data may live in a standard store beside it (``karman-<key>.zarr`` or ``karman-<key>.nc``,
:mod:`taichi_dp.learn.datasets`, optional extra ``data``): :func:`load_or_generate` reads whichever valid copy
exists (the requested ``format`` first) and writes the requested format when it is missing, so a cache
folder holding only a Zarr or NetCDF store trains without regenerating
(``python -m taichi_dp datagen karman --format zarr``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..grid import Grid
from ..grid.staggered import staggered_shape
from ..runtime import ensure_init
from ..scenes.flow import karman
from ..solvers import Repeated
from . import distributed, io


@dataclass(frozen=True)
class KarmanDataConfig:
    """What a reference data set is: Reynolds numbers, source resolution, refinement and length."""

    reynolds: tuple[float, ...] = (100.0, 200.0, 400.0, 800.0)
    scale: int = 1  # source grid (64·scale, 32·scale)
    factor: int = 2  # reference refinement in space and time (4 in the book)
    warmup: int = 40  # source-time steps simulated before recording (vortex street developed)
    steps: int = 60  # recorded source-time steps
    perturbation: float = 0.1  # symmetry-breaking bump of the initial state (1.0: street developed by ~120 steps)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def downsample_staggered(v: torch.Tensor, factor: int) -> torch.Tensor:
    """Average a fine staggered velocity ``(B, 2, f·H+1, f·W+1)`` onto the coarse faces ``(B, 2, H+1, W+1)``:
    a coarse ``v_y`` face is the mean of the ``f`` fine ``v_y`` faces on the same line, likewise for
    ``v_x``. Flux-conserving, differentiable."""
    b, _, h1, w1 = v.shape
    h, w = (h1 - 1) // factor, (w1 - 1) // factor
    vy = v[:, 0, ::factor, : w * factor].reshape(b, h + 1, w, factor).mean(-1)  # (B, H+1, W)
    vx = v[:, 1, : h * factor, ::factor].reshape(b, h, factor, w + 1).mean(2)  # (B, H, W+1)
    return torch.stack([torch.nn.functional.pad(vy, (0, 1)), torch.nn.functional.pad(vx, (0, 0, 0, 1))], dim=1)


def generate(config: KarmanDataConfig, *, progress: bool = True) -> dict[str, torch.Tensor]:
    """Run the reference simulations and return ``{"velocity": (S, T+1, 2, H+1, W+1), "reynolds": (S,)}``
    on the source grid (float32, CPU)."""
    rt = ensure_init()
    re = torch.tensor(config.reynolds, dtype=rt.dtype, device=rt.device)
    scene = karman(scale=config.scale * config.factor, reynolds=re, dt=1.0 / config.factor, perturbation=config.perturbation)
    step = Repeated(scene.stepper, config.factor)  # one source-time step of the fine solver
    v = scene.state0
    frames = []
    total = config.warmup + config.steps
    with torch.no_grad():
        for n in tqdm(range(total + 1), desc="karman reference", disable=not progress, leave=False):
            if n >= config.warmup:
                frames.append(downsample_staggered(v, config.factor).float().cpu())
            if n < total:
                v = step(v)
    return {"velocity": torch.stack(frames, dim=1).contiguous(), "reynolds": re.double().cpu()}


def _digest(config: dict, data: dict[str, torch.Tensor]) -> str:
    """SHA-256 of every member of a cache file: the configuration and each tensor's name, dtype, shape, bytes."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in ("velocity", "reynolds"):
        t = data[name]
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _check_metadata(config: KarmanDataConfig, data: dict) -> None:
    """``ValueError`` unless the members of ``data`` are what ``config`` asks for (before and after a cache)."""
    if data.get("config") != asdict(config):
        raise ValueError(f"configuration differs: cached {data.get('config')}, requested {asdict(config)}")
    velocity, re = data["velocity"], data["reynolds"]
    expected = (len(config.reynolds), config.steps + 1, *staggered_shape(source_grid(config)))
    if velocity.dtype != torch.float32 or tuple(velocity.shape) != expected:
        raise ValueError(f"velocity is {velocity.dtype} {tuple(velocity.shape)}, expected torch.float32 {expected}")
    exact = torch.tensor(config.reynolds, dtype=torch.float64)  # or rounded to float32 (data generated in f32)
    same = re.shape == exact.shape and (torch.equal(re, exact) or torch.equal(re, exact.float().double()))
    if re.dtype != torch.float64 or not same:
        raise ValueError(f"Reynolds numbers {re.tolist()} ({re.dtype}) differ from the configuration's {list(config.reynolds)}")
    if not bool(torch.isfinite(velocity).all()):
        raise ValueError("velocity contains NaN/Inf")


def _save(config: KarmanDataConfig, path: Path, data: dict[str, torch.Tensor]) -> None:
    blob = {"config": asdict(config), **data}
    _check_metadata(config, blob)  # never cache what a later load would refuse
    io.save_checkpoint(path, {**blob, "sha256": _digest(blob["config"], data)})


def _load_valid(config: KarmanDataConfig, path: Path, *, warn: bool = True) -> dict[str, torch.Tensor] | None:
    """The cached data set at ``path`` if it exists and is valid for ``config``, else ``None`` (warning
    about an invalid file when ``warn``)."""
    if not path.is_file():
        return None
    try:
        data = io.load_checkpoint(path, unverified="ignore")  # a file without a file digest: the member digest decides
        if _digest(data.get("config"), data) != data.get("sha256"):
            raise ValueError("content hash mismatch: the members do not match the digest recorded when it was written")
        _check_metadata(config, data)
        return {"velocity": data["velocity"], "reynolds": data["reynolds"]}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        if warn:
            warnings.warn(f"cached karman data {path} is invalid ({e}); regenerating", RuntimeWarning, stacklevel=3)
        return None


FORMATS = ("pt", "zarr", "netcdf")
"""Cache formats: the verified ``.pt`` file, or a Zarr / NetCDF store (:mod:`taichi_dp.learn.datasets`)."""


def cache_path(config: KarmanDataConfig, cache_dir: str | Path, format: str = "pt") -> Path:
    """The file (or Zarr folder) of ``config``'s data in ``cache_dir`` for ``format`` (one of :data:`FORMATS`)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    suffix = {"pt": ".pt", "zarr": ".zarr", "netcdf": ".nc"}[format]
    return Path(cache_dir) / f"karman-{config.key()}{suffix}"


def _load_store(config: KarmanDataConfig, path: Path) -> dict[str, torch.Tensor] | None:
    """The data of a Zarr/NetCDF store at ``path`` if it exists (verified: content hash, configuration), else ``None``."""
    if not path.exists():
        return None
    from .datasets import read_karman  # the optional ``data`` extra, only when a store is there

    return read_karman(path, config)[1]


def _load_any(
    config: KarmanDataConfig, cache_dir: str | Path, format: str, *, warn: bool
) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """``(data, its format)`` of the first valid copy of ``config``'s data in ``cache_dir`` (the requested
    ``format`` first), or ``(None, None)``."""
    for fmt in sorted(FORMATS, key=lambda f: f != format):
        path = cache_path(config, cache_dir, fmt)
        data = _load_valid(config, path, warn=warn) if fmt == "pt" else _load_store(config, path)
        if data is not None:
            return data, fmt
    return None, None


def _write(config: KarmanDataConfig, cache_dir: str | Path, format: str, data: dict[str, torch.Tensor]) -> None:
    """Write ``data`` in ``format`` (atomically; a store is never replaced)."""
    path = cache_path(config, cache_dir, format)
    if format == "pt":
        _save(config, path, data)
    else:
        from .datasets import karman_dataset, write_dataset

        write_dataset(karman_dataset(data, config), path, format)


def load_or_generate(
    config: KarmanDataConfig, cache_dir: str | Path, *, progress: bool = True, format: str | None = None
) -> dict[str, torch.Tensor]:
    """The data set for ``config`` from ``cache_dir``, generated (and written atomically) when missing
    or invalid.

    Any valid copy is read (``.pt``, then Zarr, then NetCDF; a requested ``format`` first). Generated data
    is written as ``format`` (default ``"pt"``); with ``format`` given, a copy in that format is also written
    when only another one exists (``datagen --format``). A damaged store raises
    :class:`~taichi_dp.learn.io.IntegrityError` rather than being replaced: it may be the user's only copy.

    In a distributed run (:mod:`taichi_dp.learn.distributed`) every rank simulates its contiguous share
    of the Reynolds numbers (each Reynolds number is an independent batch element of the reference
    solver), the shares are gathered, rank 0 writes the cache, and all ranks return the same data.
    """
    wanted = format or "pt"
    cache_path(config, cache_dir, wanted)  # validates ``format`` before any work
    if not distributed.is_distributed():
        data, found = _load_any(config, cache_dir, wanted, warn=True)
        if data is None:
            data = generate(config, progress=progress)
        if found is None or (format is not None and found != format):
            _write(config, cache_dir, wanted, data)
        return data

    data, found = _load_any(config, cache_dir, wanted, warn=distributed.is_main())
    # regenerate unless every rank found a valid cache (a shared folder; node-local caches may differ)
    if all(ok for ok in distributed.all_gather_objects(data is not None)):
        if format is not None and found != format and distributed.is_main():
            _write(config, cache_dir, format, data)  # type: ignore[arg-type]
        distributed.barrier()
        return data  # type: ignore[return-value]
    mine = distributed.shard_range(len(config.reynolds))
    part = None
    if len(mine):
        sub = dataclasses.replace(config, reynolds=tuple(config.reynolds[i] for i in mine))
        part = generate(sub, progress=progress and distributed.is_main())
    parts = [p for p in distributed.all_gather_objects(part) if p is not None]
    data = {"velocity": torch.cat([p["velocity"] for p in parts]), "reynolds": torch.cat([p["reynolds"] for p in parts])}
    if distributed.is_main():
        _write(config, cache_dir, wanted, data)
    distributed.barrier()  # the cache exists before any rank goes on
    return data


def source_grid(config: KarmanDataConfig) -> Grid:
    """The source grid of ``config``: ``(64·scale, 32·scale)`` cells on 200 × 100."""
    return Grid.rect((64 * config.scale, 32 * config.scale), (200.0, 100.0))
