"""Trajectories as xarray Datasets, written to and read from NetCDF or Zarr (the ``data`` extra:
``pip install 'taichi_dp[data]'``, which brings xarray, zarr and h5netcdf; imported only when used).

**Layout.** A staggered (MAC) velocity ``(…, nd, *(N + 1))`` (:mod:`taichi_dp.grid.staggered`) becomes one
variable per component, each on its own faces, with physical coordinates from the :class:`~taichi_dp.grid.Grid`:

- ``u`` (velocity along x) on ``(…, y, x_face)`` in 2D, ``(…, z, y, x_face)`` in 3D;
- ``v`` (along y) on ``(…, y_face, x)`` / ``(…, z, y_face, x)``;
- ``w`` (along z, 3D only) on ``(…, z_face, y, x)``;

where ``x`` holds the ``N_x`` cell centres ``lo + (i + ½) h`` and ``x_face`` the ``N_x + 1`` faces
``lo + i h`` (both boundary faces included). The padding entries of the tensor layout (``idx[a] = N_a``
across a component's axis, always zero) are not stored, and come back as ``+0.0``. The leading
dimensions are ``(time,)`` for one trajectory or ``(sample, time)`` for a batch; per-sample coordinates
(e.g. the Reynolds numbers ``Re``) lie along ``sample``. Cell-centred scalars (smoke density) are
variables on ``(…, z, y, x)``. Further velocity fields on the same grid (e.g. the rollouts of trained
models) are ``u_<name>``, ``v_<name>``, ``w_<name>`` (:func:`add_velocity`).

**Attributes.** ``axes``, ``grid_shape``, ``grid_lower``, ``grid_upper`` (the grid, axis order z, y, x),
``taichi_dp_version``, ``boundary`` (when given), the caller's (``scene``, ``dt``, ...) and, once
written, :data:`HASH_ATTR`: the SHA-256 over every variable and coordinate (name, coordinate or data, dims,
dtype, shape, attributes, and little-endian C-order bytes, in name order) and every dataset attribute
except the hash itself (attributes whose names start with ``_`` are the formats' own encoding keys and
are not covered; values are read back raw: no CF masking or scaling, so they cannot change the data).

**Integrity.** :func:`write_dataset` writes to a temporary file (NetCDF) or folder (Zarr) beside the
destination and renames it into place: an interrupted write leaves no destination, and an existing one is
kept unless ``overwrite=True``. :func:`read_dataset` recomputes the hash: a flipped byte, an edited value
or a truncated file raises :class:`~taichi_dp.learn.io.IntegrityError` naming the file; a store without a
hash (written by another program) is read with a warning, refused, or read silently
(``unverified="warn" | "error" | "ignore"``, as :func:`taichi_dp.learn.io.read_json`).

**Engines.** NetCDF is written and read with ``h5netcdf`` (pure Python on ``h5py``'s bundled HDF5: no
second HDF5 library in the process, unlike ``netCDF4``), producing standard NetCDF-4 files that
``netCDF4``/``ncdump`` read. Zarr uses the installed ``zarr`` package's default format.

>>> ds = velocity_dataset(traj, grid, times=dt * np.arange(T), attrs={"scene": "smoke", "dt": dt})
>>> write_dataset(ds, "plume.zarr")
>>> v, grid = velocity_from_dataset(read_dataset("plume.zarr", expect={"scene": "smoke"}))
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import numbers
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..grid import Grid
from ..grid.staggered import FlowBoundary, Inflow, Outflow, Wall, staggered_shape
from .io import IntegrityError, Unverified, config_diff
from .karman_data import KarmanDataConfig, source_grid

if TYPE_CHECKING:
    import xarray as xr

HASH_ATTR = "taichi_dp_sha256"
"""The dataset attribute holding the content hash (hex SHA-256) recorded by :func:`write_dataset`."""
FORMATS = {"zarr": ".zarr", "netcdf": ".nc"}
"""The store formats and their file-name suffixes."""
EXTRA = "pip install 'taichi_dp[data]'"
AXES = {2: ("y", "x"), 3: ("z", "y", "x")}
"""Axis names of 2D and 3D grids, in the tensor layout's order."""
COMPONENTS = {"x": "u", "y": "v", "z": "w"}
"""The variable name of the velocity component along each axis."""
KARMAN_DT = 1.0
"""The time step of the karman source solver: one recorded frame per unit of time."""
KARMAN_BOUNDARY = FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall())))
"""The flow boundary of the karman reference data (:func:`taichi_dp.scenes.karman` defaults)."""
_RESERVED = ("axes", "grid_shape", "grid_lower", "grid_upper", "taichi_dp_version", "boundary", HASH_ATTR)
_DTYPES = (torch.float32, torch.float64)
_STALE_FOREIGN_S = 24 * 3600.0


# ----------------------------------------------------------------------------------------------- optional imports


def _require(*modules: str) -> Any:
    """Import ``modules`` (the first is returned), or ``ImportError`` naming the ``data`` extra."""
    import importlib

    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError as e:
            raise ImportError(f"taichi_dp datasets need the optional package {name!r}: {EXTRA} ({e})") from None
    return loaded[0]


def _xarray(fmt: str | None = None) -> Any:
    engine = {"zarr": ("zarr",), "netcdf": ("h5netcdf", "h5py"), None: ()}[fmt]  # h5netcdf 1.8 leaves h5py optional
    return _require("xarray", *engine)


# ----------------------------------------------------------------------------------------------- attributes


def _attr_value(name: str, value: object) -> Any:
    """``value`` as an attribute both formats store and read back unchanged, or ``TypeError`` naming it."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError(f"attribute {name} must be a str, a number or a list of numbers, got bool {value!r} (store 0/1 or a str)")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            raise ValueError(f"attribute {name} must be finite, got {value!r}")
        return float(value)
    if isinstance(value, list | tuple) and value:
        items = [_attr_value(f"{name}[{i}]", x) for i, x in enumerate(value)]
        if any(isinstance(x, str | list) for x in items):
            raise TypeError(f"attribute {name} must be a list of numbers, got {value!r} (store a JSON string instead)")
        items = [float(x) for x in items] if any(isinstance(x, float) for x in items) else items
        return items[0] if len(items) == 1 else items  # NetCDF reads a one-element list back as a scalar
    raise TypeError(
        f"attribute {name} must be a str, a finite number or a non-empty list of numbers, got {type(value).__name__} "
        f"{value!r} (store a JSON string instead)"
    )


def _plain(value: object) -> Any:
    """An attribute value as read back (numpy or plain), in the canonical form hashed and compared."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        items = [_plain(x) for x in value]
        return items[0] if len(items) == 1 else items
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _hashed_attrs(attrs: Mapping[str, Any], *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in attrs.items() if not str(k).startswith("_") and k not in skip}


def describe_boundary(boundary: FlowBoundary) -> str:
    """A one-line description of a flow boundary for the ``boundary`` attribute, e.g. ``"y_lo: Inflow(speed=1.0);
    y_hi: Outflow(); x_lo: Wall(slip=False, velocity=0.0); x_hi: Wall(slip=False, velocity=0.0)"``."""
    if not isinstance(boundary, FlowBoundary):
        raise TypeError(f"boundary must be a taichi_dp FlowBoundary, got {type(boundary).__name__} {boundary!r}")
    axes = AXES[boundary.ndim]
    return "; ".join(f"{a}_{end}: {side!r}" for a, pair in zip(axes, boundary.sides) for end, side in zip(("lo", "hi"), pair))


# ----------------------------------------------------------------------------------------------- content hash


def _canonical(arr: np.ndarray) -> tuple[str, bytes]:
    """The dtype name and canonical bytes of an array (little-endian C order; strings as JSON)."""
    if arr.dtype.kind in "USO":
        return "str", json.dumps([str(x) for x in arr.ravel().tolist()]).encode("utf-8")
    return arr.dtype.name, np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def content_hash(ds: xr.Dataset) -> str:
    """The SHA-256 (hex) of a dataset's content: every variable and coordinate (name, whether it is a
    coordinate, dims, dtype, shape, attributes, bytes), in name order, then every dataset attribute except
    :data:`HASH_ATTR` (attributes starting with ``_`` excluded)."""
    h = hashlib.sha256(b"taichi_dp dataset v1\n")
    for name in sorted(ds.variables, key=str):
        var = ds.variables[name]
        dtype, data = _canonical(np.asarray(var.values))
        header = {
            "name": str(name),
            "coordinate": name in ds.coords,
            "dims": [str(d) for d in var.dims],
            "dtype": dtype,
            "shape": list(var.shape),
            "attrs": _hashed_attrs(var.attrs),
        }
        h.update(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n")
        h.update(f"{len(data)}\n".encode())
        h.update(data)
    h.update(json.dumps(_hashed_attrs(ds.attrs, skip=(HASH_ATTR,)), sort_keys=True).encode("utf-8"))
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- velocity ⇄ dataset


def _check_grid(grid: object) -> int:
    if not isinstance(grid, Grid) or grid.ndim not in AXES:
        raise TypeError(f"grid must be a 2D or 3D taichi_dp.Grid, got {grid!r}")
    return grid.ndim


def _lead(name: str, t: object, trailing: tuple[int, ...], what: str) -> tuple[int, ...]:
    """The leading ``(T,)`` or ``(S, T)`` shape of ``t`` ``(*lead, *trailing)``, or an error naming ``name``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {what}, got {type(t).__name__}")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")
    lead = tuple(t.shape[: t.ndim - len(trailing)])
    if tuple(t.shape[len(lead) :]) != trailing or len(lead) not in (1, 2):
        dims = ", ".join(map(str, trailing))
        raise ValueError(f"{name} must be (T, {what}) or (S, T, {what}) = (…, {dims}), got {tuple(t.shape)}")
    return lead


def _coords(grid: Grid) -> dict[str, tuple[str, np.ndarray, dict]]:
    """Cell-centre and face coordinates of every axis: ``{name: (dim, values, attrs)}``."""
    out = {}
    for ax, (lo, _), h, n in zip(AXES[grid.ndim], grid.bounds, grid.spacing, grid.shape):
        i = np.arange(n + 1, dtype=np.float64)
        out[ax] = (ax, lo + (i[:n] + 0.5) * h, {"long_name": f"{ax} of the cell centres"})
        out[f"{ax}_face"] = (f"{ax}_face", lo + i * h, {"long_name": f"{ax} of the cell faces normal to {ax}"})
    return out


def _component_dims(nd: int, c: int) -> tuple[str, ...]:
    return tuple(f"{a}_face" if i == c else a for i, a in enumerate(AXES[nd]))


def velocity_names(nd: int, name: str = "") -> tuple[str, ...]:
    """The variable names of a velocity field's components in channel order (2D ``("v", "u")``, 3D
    ``("w", "v", "u")``), suffixed ``_<name>`` for a named field."""
    return tuple(COMPONENTS[a] + (f"_{name}" if name else "") for a in AXES[nd])


def _velocity_variables(v: torch.Tensor, grid: Grid, lead_dims: tuple[str, ...], name: str, vname: str) -> dict:
    """``{variable: (dims, values, attrs)}`` of the components of ``v`` ``(*lead, nd, *(N + 1))``."""
    nd = grid.ndim
    v = v.detach().cpu()
    out = {}
    for c, var in enumerate(velocity_names(nd, name)):
        comp = v[(Ellipsis, c, *[slice(None)] * nd)]
        inner = tuple(slice(None) if a == c else slice(0, n) for a, n in enumerate(grid.shape))
        padding = comp.clone()
        padding[(Ellipsis, *inner)] = 0
        if bool((padding != 0).any()):
            raise ValueError(
                f"{vname} has non-zero padding entries in component {c} (index N across the component's axis must be 0 "
                "in the staggered layout; they are not stored)"
            )
        ax = AXES[nd][c]
        attrs = {"long_name": f"velocity along {ax}" + (f" ({name})" if name else ""), "location": f"{ax} faces"}
        out[var] = (lead_dims + _component_dims(nd, c), np.ascontiguousarray(comp[(Ellipsis, *inner)].numpy()), attrs)
    return out


def velocity_dataset(
    v: torch.Tensor,
    grid: Grid,
    *,
    times: Sequence[float] | np.ndarray | torch.Tensor,
    samples: Mapping[str, Sequence[float] | np.ndarray | torch.Tensor] | None = None,
    scalars: Mapping[str, torch.Tensor] | None = None,
    boundary: FlowBoundary | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """An xarray Dataset of a staggered velocity trajectory (layout in the module docstring).

    Args:
        v: staggered velocity ``(T, nd, *(N + 1))`` (one trajectory) or ``(S, T, nd, *(N + 1))`` (a batch),
            float32 or float64 (kept); padding entries must be zero.
        grid: the 2D or 3D grid of ``v`` (coordinates and ``grid_*`` attributes).
        times: the ``T`` physical times of the frames.
        samples: per-sample coordinates along ``sample``, e.g. ``{"Re": reynolds}`` (only with a batch).
        scalars: cell-centred fields ``{name: (…, *N)}`` with the same leading shape as ``v``, e.g. smoke density.
        boundary: the flow boundary, recorded as the ``boundary`` attribute (:func:`describe_boundary`).
        attrs: further dataset attributes (``scene``, ``dt``, ...): str, finite numbers or lists of numbers.
    """
    xr = _xarray()
    nd = _check_grid(grid)
    lead = _lead("v", v, staggered_shape(grid), "nd, *(N + 1)")
    lead_dims = ("sample", "time")[-len(lead) :]
    t = np.asarray(times.detach().cpu() if isinstance(times, torch.Tensor) else times, dtype=np.float64)
    if t.shape != (lead[-1],) or not np.isfinite(t).all():
        raise ValueError(f"times must be {lead[-1]} finite numbers (one per frame of v), got shape {t.shape}")
    coords: dict[str, Any] = {k: (d, x, a) for k, (d, x, a) in _coords(grid).items()}
    coords["time"] = ("time", t, {"long_name": "time"})
    variables = _velocity_variables(v, grid, lead_dims, "", "v")
    if samples:
        if len(lead) != 2:
            raise ValueError(f"samples needs a batch of trajectories (S, T, …); v has shape {tuple(v.shape)}")
        for key, values in samples.items():
            x = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
            if x.shape != (lead[0],):
                raise ValueError(f"samples[{key!r}] must have {lead[0]} entries (one per sample), got shape {x.shape}")
            if key in coords or key in variables:
                raise ValueError(f"samples[{key!r}] clashes with a coordinate or variable of the same name")
            coords[key] = ("sample", x, {})
    for key, field in (scalars or {}).items():
        if _lead(f"scalars[{key!r}]", field, grid.shape, "*N") != lead:
            raise ValueError(f"scalars[{key!r}] must have the leading shape {lead} of v, got {tuple(field.shape)}")
        if key in coords or key in variables:
            raise ValueError(f"scalars[{key!r}] clashes with a coordinate or variable of the same name")
        variables[key] = (lead_dims + AXES[nd], np.ascontiguousarray(field.detach().cpu().numpy()), {"location": "cell centres"})
    from .. import __version__

    meta: dict[str, Any] = {
        "axes": " ".join(AXES[nd]),
        "grid_shape": list(grid.shape),
        "grid_lower": [float(lo) for lo, _ in grid.bounds],
        "grid_upper": [float(hi) for _, hi in grid.bounds],
        "taichi_dp_version": __version__,
    }
    if boundary is not None:
        meta["boundary"] = describe_boundary(boundary)
        if boundary.ndim != nd:
            raise ValueError(f"boundary has {boundary.ndim} axes but the grid has {nd} (shape {grid.shape})")
    for key, value in (attrs or {}).items():
        if key in _RESERVED:
            raise ValueError(f"attrs[{key!r}] is set by taichi_dp (reserved: {', '.join(_RESERVED)})")
        meta[key] = _attr_value(key, value)
    return xr.Dataset({k: xr.Variable(*val) for k, val in variables.items()}, coords=coords, attrs=meta)


def grid_from_dataset(ds: xr.Dataset) -> Grid:
    """The :class:`~taichi_dp.grid.Grid` of a dataset written by :func:`velocity_dataset` (its ``grid_*``
    attributes, checked against its coordinates); ``ValueError`` otherwise."""
    try:
        shape = tuple(int(n) for n in np.atleast_1d(ds.attrs["grid_shape"]))
        lower = np.atleast_1d(ds.attrs["grid_lower"]).astype(np.float64)
        upper = np.atleast_1d(ds.attrs["grid_upper"]).astype(np.float64)
        grid = Grid(shape, tuple((float(lo), float(hi)) for lo, hi in zip(lower, upper)))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"the dataset has no valid grid_shape/grid_lower/grid_upper attributes ({e})") from None
    _check_grid(grid)
    for key, (_, expected, _) in _coords(grid).items():
        if key not in ds.coords:
            raise ValueError(f"the dataset has no coordinate {key!r} (grid {shape})")
        got = np.asarray(ds.coords[key].values, dtype=np.float64)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-12, atol=1e-12 * float(np.abs(expected).max())):
            raise ValueError(f"coordinate {key!r} does not match the grid attributes {shape} on {grid.bounds}")
    return grid


def velocity_from_dataset(ds: xr.Dataset, name: str = "") -> tuple[torch.Tensor, Grid]:
    """Inverse of :func:`velocity_dataset` (and :func:`add_velocity` with ``name``): the staggered velocity
    ``(T, nd, *(N + 1))`` or ``(S, T, nd, *(N + 1))`` (the stored dtype, bit for bit; padding ``+0.0``) and
    its grid. ``ValueError`` naming what is missing or inconsistent."""
    grid = grid_from_dataset(ds)
    nd = grid.ndim
    names = velocity_names(nd, name)
    missing = [n for n in names if n not in ds.data_vars]
    if missing:
        raise ValueError(f"the dataset has no velocity variable(s) {missing} (it has {sorted(map(str, ds.data_vars))})")
    lead_dims = ds[names[0]].dims[:-nd]
    if lead_dims not in (("time",), ("sample", "time")):
        raise ValueError(f"{names[0]} must have dims (time, …) or (sample, time, …), got {ds[names[0]].dims}")
    dtype = ds[names[0]].dtype
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{names[0]} must be float32 or float64, got {dtype}")
    lead = tuple(ds.sizes[d] for d in lead_dims)
    out = torch.zeros(*lead, *staggered_shape(grid), dtype=torch.float32 if dtype == np.float32 else torch.float64)
    for c, var in enumerate(names):
        da = ds[var]
        dims = lead_dims + _component_dims(nd, c)
        if da.dims != dims or da.dtype != dtype:
            raise ValueError(f"{var} has dims {da.dims} and dtype {da.dtype}, expected {dims} {dtype}")
        inner = tuple(slice(None) if a == c else slice(0, n) for a, n in enumerate(grid.shape))
        out[(Ellipsis, c, *inner)] = torch.from_numpy(np.array(da.values, copy=True))
    return out, grid


def scalar_from_dataset(ds: xr.Dataset, name: str) -> torch.Tensor:
    """A cell-centred scalar written through ``velocity_dataset(scalars=...)``: ``(…, *N)`` in its stored dtype."""
    if name not in ds.data_vars:
        raise ValueError(f"the dataset has no variable {name!r} (it has {sorted(map(str, ds.data_vars))})")
    grid = grid_from_dataset(ds)
    da = ds[name]
    if da.dims[-grid.ndim :] != AXES[grid.ndim]:
        raise ValueError(f"{name} must lie on the cell centres {AXES[grid.ndim]}, got dims {da.dims}")
    return torch.from_numpy(np.array(da.values, copy=True))


def add_velocity(ds: xr.Dataset, v: torch.Tensor, name: str, *, attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """``ds`` with a second velocity field ``v`` (same grid and leading shape as the main one) as variables
    ``u_<name>``, ``v_<name>`` (, ``w_<name>``) whose attributes include ``attrs`` (e.g. ``variant``)."""
    xr = _xarray()
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a non-empty str without '/', got {name!r}")
    grid = grid_from_dataset(ds)
    lead = _lead("v", v, staggered_shape(grid), "nd, *(N + 1)")
    lead_dims = ("sample", "time")[-len(lead) :]
    expected = tuple(ds.sizes.get(d, -1) for d in lead_dims)
    if lead != expected:
        raise ValueError(f"v must have the leading shape {dict(zip(lead_dims, expected))} of the dataset, got {tuple(v.shape)}")
    extra = {k: _attr_value(k, x) for k, x in (attrs or {}).items()}
    new = {}
    for var, (dims, values, a) in _velocity_variables(v, grid, lead_dims, name, "v").items():
        if var in ds.variables:
            raise ValueError(f"the dataset already has a variable {var!r}")
        new[var] = xr.Variable(dims, values, {**a, **extra})
    return ds.assign(new)


# ----------------------------------------------------------------------------------------------- writing and reading


def _format(path: Path, fmt: str | None) -> str:
    if fmt is None:
        fmt = next((f for f, suffix in FORMATS.items() if path.suffix == suffix), None)
        if fmt is None:
            raise ValueError(f"format must be given ('zarr' or 'netcdf') when the path does not end in .zarr or .nc, got {path}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be 'zarr' or 'netcdf', got {fmt!r}")
    return fmt


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _clean_stale(path: Path) -> None:
    """Remove the temporaries of killed writes of ``path`` (``.<name>.<host>-<pid>.<random>.tmp``, files or
    folders) — only while ``path`` exists, so a store caught between two renames is never removed."""
    if not path.exists():
        return
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        owner = tmp.name[len(path.name) + 2 :].rsplit(".", 2)[0]
        host, _, pid = owner.rpartition("-")
        try:
            if host == _host():
                os.kill(int(pid), 0)
                continue  # a live writer
            if time.time() - tmp.stat().st_mtime <= _STALE_FOREIGN_S:
                continue
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue
        _remove(tmp)


def _atomic_store(path: Path, write: Callable[[Path], None], *, folder: bool, overwrite: bool) -> None:
    """Write ``path`` (a file, or a folder when ``folder``) through ``write(tmp)`` and a rename beside it."""
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} already exists: pass overwrite=True (--overwrite) or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    prefix, mode = f".{path.name}.{_host()}-{os.getpid()}.", 0o777 if folder else 0o666
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, mode & ~umask)
        write(tmp)
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{path} appeared while it was being written: not replaced")
            if not folder and not path.is_dir():
                os.replace(tmp, path)
                return
            old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
            os.rmdir(old)
            os.rename(path, old)  # the old store stays complete under a temporary name until the new one is in place
            os.rename(tmp, path)
            _remove(old)
        else:
            os.rename(tmp, path)
    except BaseException as e:
        _remove(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            full = OSError(f"no space left on device while writing {path} (not written; any previous version is intact)")
            full.errno = errno.ENOSPC
            raise full from e
        raise


def write_dataset(ds: xr.Dataset, path: str | Path, format: str | None = None, *, overwrite: bool = False) -> Path:
    """Write ``ds`` with its content hash (:data:`HASH_ATTR`) to a NetCDF file or a Zarr store, atomically.

    Args:
        ds: the dataset (any xarray Dataset whose attributes are str, finite numbers or lists of numbers).
        path: destination; ``format`` defaults from its suffix (``.zarr`` or ``.nc``).
        format: ``"zarr"`` or ``"netcdf"``.
        overwrite: replace an existing destination (else ``FileExistsError`` before any work).

    Returns the path. An interrupted write leaves no destination (and an existing one intact).
    """
    path = Path(path)
    fmt = _format(path, format)
    xr = _xarray(fmt)
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray.Dataset, got {type(ds).__name__}")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} already exists: pass overwrite=True (--overwrite) or choose another path")
    out = ds.copy(deep=False)
    out.encoding = {}
    for var in out.variables.values():
        var.encoding = {}
        var.attrs = {k: _attr_value(k, x) for k, x in var.attrs.items()}
    out.attrs = {k: _attr_value(k, x) for k, x in ds.attrs.items() if k != HASH_ATTR}
    out.attrs[HASH_ATTR] = content_hash(out)
    encoding = {name: {"_FillValue": None} for name in out.variables}

    def write(tmp: Path) -> None:
        if fmt == "netcdf":
            out.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        else:
            out.to_zarr(tmp, mode="w", encoding=encoding, consolidated=False)  # v3 has no consolidated metadata

    _atomic_store(path, write, folder=fmt == "zarr", overwrite=overwrite)
    return path


def read_dataset(path: str | Path, *, expect: Mapping[str, Any] | None = None, unverified: Unverified = "warn") -> xr.Dataset:
    """Read a NetCDF file or Zarr store (a folder) fully into memory and verify its content hash.

    Args:
        path: a file written by :func:`write_dataset` (or another program: see ``unverified``).
        expect: attributes the dataset must have, e.g. ``{"scene": "karman"}`` (``ValueError`` naming every
            difference).
        unverified: a dataset without :data:`HASH_ATTR` is read with a ``RuntimeWarning`` (``"warn"``),
            refused with :class:`~taichi_dp.learn.io.IntegrityError` (``"error"``) or read silently (``"ignore"``).

    Raises ``FileNotFoundError`` when missing, :class:`~taichi_dp.learn.io.IntegrityError` (a ``ValueError``)
    naming the path when it cannot be read (damaged, truncated) or does not match its hash.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} not found")
    fmt = "zarr" if path.is_dir() else "netcdf"
    xr = _xarray(fmt)
    raw = {"mask_and_scale": False, "decode_times": False, "decode_timedelta": False}
    try:
        if fmt == "zarr":
            ds = xr.load_dataset(path, engine="zarr", chunks=None, consolidated=False, **raw)
        else:
            ds = xr.load_dataset(path, engine="h5netcdf", **raw)
    except MemoryError:
        raise
    except Exception as e:  # every reader error of a damaged store: HDF5, zarr codecs, JSON metadata, ...
        raise IntegrityError(
            f"dataset {path} is corrupt: damaged or truncated, it cannot be read as {fmt} ({type(e).__name__}: {e})"
        ) from None
    recorded = _plain(ds.attrs.get(HASH_ATTR))
    if recorded is None:
        if unverified not in ("warn", "error", "ignore"):
            raise ValueError(f"unverified must be 'warn', 'error' or 'ignore', got {unverified!r}")
        msg = f"dataset {path} has no {HASH_ATTR} attribute (written by another program?): its content cannot be verified"
        if unverified == "error":
            raise IntegrityError(msg)
        if unverified == "warn":
            warnings.warn(f"{msg}; loading it unverified", RuntimeWarning, stacklevel=2)
    else:
        actual = content_hash(ds)
        if actual != recorded:
            raise IntegrityError(
                f"dataset {path} is corrupt: damaged or modified (bit rot, a torn write or an edit), its content hash "
                f"is {actual}, expected {recorded} (recorded when it was written)"
            )
    if expect:
        got = _hashed_attrs(ds.attrs)
        diff = [
            f"{k}: {got[k]!r}, expected {_plain(v)!r}" if k in got else f"{k}: absent, expected {_plain(v)!r}"
            for k, v in expect.items()
            if got.get(k) != _plain(v)
        ]
        if diff:
            raise ValueError(f"dataset {path} is not the one expected: {'; '.join(diff)}")
    return ds


# ----------------------------------------------------------------------------------------------- karman reference data


def karman_dataset(data: Mapping[str, torch.Tensor], config: KarmanDataConfig) -> xr.Dataset:
    """The karman reference data of :func:`~taichi_dp.learn.karman_data.load_or_generate` as a dataset:
    ``u``/``v`` on ``(sample, time, …)`` with ``Re`` along ``sample``, times ``warmup … warmup + steps``
    (source time, ``dt`` = 1) and the configuration as the ``config`` attribute (JSON)."""
    if not isinstance(config, KarmanDataConfig):
        raise TypeError(f"config must be a KarmanDataConfig, got {type(config).__name__}")
    grid = source_grid(config)
    velocity, re = data.get("velocity"), data.get("reynolds")
    expected = (len(config.reynolds), config.steps + 1, *staggered_shape(grid))
    if not isinstance(velocity, torch.Tensor) or velocity.dtype != torch.float32 or tuple(velocity.shape) != expected:
        got = (velocity.dtype, tuple(velocity.shape)) if isinstance(velocity, torch.Tensor) else type(velocity).__name__
        raise ValueError(f"data['velocity'] must be float32 {expected} for this config, got {got}")
    if not isinstance(re, torch.Tensor) or re.dtype != torch.float64 or tuple(re.shape) != (expected[0],):
        raise ValueError(f"data['reynolds'] must be float64 ({expected[0]},), got {re!r}")
    if not bool(torch.isfinite(velocity).all()):
        raise ValueError("data['velocity'] contains NaN/Inf")
    return velocity_dataset(
        velocity,
        grid,
        times=config.warmup * KARMAN_DT + KARMAN_DT * np.arange(config.steps + 1, dtype=np.float64),
        samples={"Re": re.numpy()},
        boundary=KARMAN_BOUNDARY,
        attrs={
            "scene": "karman",
            "dt": KARMAN_DT,
            "nu": "20 / Re (inflow speed 1, cylinder diameter 20)",
            "reference": f"the karman scene {config.factor}x finer in space and time, flux-averaged onto these faces",
            "config_type": "KarmanDataConfig",
            "config": json.dumps(asdict(config), sort_keys=True),
        },
    )


def karman_from_dataset(ds: xr.Dataset) -> tuple[KarmanDataConfig, dict[str, torch.Tensor]]:
    """Inverse of :func:`karman_dataset`: ``(config, {"velocity": (S, T+1, 2, H+1, W+1) float32, "reynolds":
    (S,) float64})``, as :func:`~taichi_dp.learn.karman_data.load_or_generate` returns; ``ValueError``
    naming what does not fit."""
    if ds.attrs.get("scene") != "karman" or ds.attrs.get("config_type") != "KarmanDataConfig":
        raise ValueError(
            f"not karman reference data: scene {ds.attrs.get('scene')!r}, config_type {ds.attrs.get('config_type')!r}"
        )
    try:
        raw = json.loads(ds.attrs["config"])
        config = KarmanDataConfig(**{**raw, "reynolds": tuple(float(r) for r in raw["reynolds"])})
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"the config attribute is not a KarmanDataConfig ({type(e).__name__}: {e})") from None
    velocity, grid = velocity_from_dataset(ds)
    if grid != source_grid(config):
        raise ValueError(f"the grid {grid} differs from the configuration's source grid {source_grid(config)}")
    expected = (len(config.reynolds), config.steps + 1, *staggered_shape(grid))
    if velocity.dtype != torch.float32 or tuple(velocity.shape) != expected:
        raise ValueError(f"velocity is {velocity.dtype} {tuple(velocity.shape)}, expected torch.float32 {expected}")
    if not bool(torch.isfinite(velocity).all()):
        raise ValueError("velocity contains NaN/Inf")
    if "Re" not in ds.coords or ds["Re"].dtype != np.float64:
        raise ValueError("the dataset has no float64 Re coordinate along sample")
    re = torch.from_numpy(np.array(ds["Re"].values, copy=True))
    exact = torch.tensor(config.reynolds, dtype=torch.float64)
    if not (torch.equal(re, exact) or torch.equal(re, exact.float().double())):
        raise ValueError(f"Re {re.tolist()} differs from the configuration's {list(config.reynolds)}")
    return config, {"velocity": velocity.contiguous(), "reynolds": re}


def karman_store_path(cache_dir: str | Path, config: KarmanDataConfig, format: str = "zarr") -> Path:
    """Where a karman data store for ``config`` lives beside the ``.pt`` cache: ``<cache_dir>/karman-<key>.zarr|.nc``."""
    if format not in FORMATS:
        raise ValueError(f"format must be 'zarr' or 'netcdf', got {format!r}")
    return Path(cache_dir) / f"karman-{config.key()}{FORMATS[format]}"


def read_karman(
    path: str | Path, config: KarmanDataConfig | None = None, *, unverified: Unverified = "warn"
) -> tuple[KarmanDataConfig, dict[str, torch.Tensor]]:
    """Karman reference data from a verified store (training's replacement for the ``.pt`` cache); with
    ``config``, ``ValueError`` naming every field in which the store's configuration differs."""
    stored, data = karman_from_dataset(read_dataset(path, expect={"scene": "karman"}, unverified=unverified))
    if config is not None:
        diff = config_diff(asdict(stored), asdict(config))
        if diff:
            raise ValueError(f"dataset {path} holds other karman data: {'; '.join(diff)}")
    return stored, data


# ----------------------------------------------------------------------------------------------- evaluation rollouts


def export_run(
    run_dir: str | Path,
    path: str | Path,
    format: str | None = None,
    *,
    cache: str | Path = "runs/cache",
    protocol: str | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a finished karman run's test reference and the rollouts of the bare source and every trained
    variant (first protocol and seed unless given) as one dataset: ``u``/``v`` the reference,
    ``u_<variant>``/``v_<variant>`` the rollouts (``variant`` ``source``, ``NON``, ``SOL-4``, …) from the
    reference's first frame (included as their time 0), regenerated from the checkpoints."""
    from .karman_data import load_or_generate
    from .karman_experiment import KarmanExperiment, load_run

    path = Path(path)
    fmt = _format(path, format)
    _xarray(fmt)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} already exists: pass overwrite=True (--overwrite) or choose another path")
    cfg, models = load_run(run_dir, protocol, seed)
    exp = KarmanExperiment(cfg)
    test = exp.make_data("test", cache=cache, progress=progress)
    results = exp.rollouts({"source": None, **models}, test)
    reference = load_or_generate(cfg.data.test, cache, progress=progress)  # the stored float32 frames, bit for bit
    ds = karman_dataset(reference, cfg.data.test)
    ds.attrs.update(run=Path(run_dir).resolve().name, run_config=json.dumps(asdict(cfg), sort_keys=True))
    ds.attrs.update(protocol=protocol or cfg.train.protocols[0], seed=cfg.train.seeds[0] if seed is None else seed)
    for name, result in results.items():
        traj = torch.cat([reference["velocity"][:, :1], result["traj"]], dim=1)
        ds = add_velocity(ds, traj, name, attrs={"variant": name})
    return write_dataset(ds, path, fmt, overwrite=overwrite)
