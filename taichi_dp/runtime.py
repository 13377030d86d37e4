"""Taichi runtime: initialisation, arch probing, precision, and input validation.

This is the only place that calls ``ti.init``. Everything above it asks :func:`ensure_init` for a
runtime and :func:`check_state` to validate the tensors a user hands in, before any kernel runs.

Arch ⇄ torch device: ``cuda`` works on torch CUDA tensors; ``cpu`` and ``vulkan`` on torch CPU tensors.
Precision is global (Taichi's ``default_fp``): every state tensor must have the matching dtype
(``float32`` for ``"f32"``, ``float64`` for ``"f64"``).

Gradients are verified per arch: after starting Taichi, :func:`init` runs the known-answer check of
:mod:`taichi_dp.grad_routes` and records the first differentiation route that passes in
:attr:`Runtime.grad_route`. ``arch="auto"`` skips an arch without one; an explicit arch without one still
starts (forward runs), and the first differentiable use raises :class:`GradientUnavailableError`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass

# Never phone home: set before taichi is imported anywhere in this package.
os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")

import numpy as np
import taichi as ti
import torch

from . import _vulkan, grad_routes

ARCHS = ("auto", "cpu", "cuda", "vulkan")
PRECISIONS = {"f32": torch.float32, "f64": torch.float64}


@dataclass(frozen=True)
class Runtime:
    """What :func:`init` chose: the Taichi arch, the precision, and the matching torch device/dtype."""

    arch: str
    precision: str
    device: torch.device
    dtype: torch.dtype
    check_inputs: bool
    grad_route: str | None = None
    """The verified differentiation route (:data:`taichi_dp.grad_routes.ROUTES`), ``None`` when none passed."""
    grad_failures: tuple[tuple[str, str], ...] = ()
    """``(route, what went wrong)`` for each route that failed the known-answer check."""
    cpu_threads: int | None = None
    """Taichi's CPU-backend thread cap in effect (``cpu_max_num_threads``; its default is every core)."""

    def require_gradients(self) -> str:
        """The route to differentiate with; raises :class:`GradientUnavailableError` when there is none."""
        if self.grad_route is None:
            raise GradientUnavailableError(self)
        return self.grad_route


class GradientUnavailableError(RuntimeError):
    """No differentiation route passed the known-answer check on this arch: a gradient computed here
    could be silently wrong, so none is computed. Forward (no-grad) use keeps working."""

    def __init__(self, rt: Runtime) -> None:
        tried = "; ".join(f"{route}: {why}" for route, why in rt.grad_failures) or "no route tried"
        super().__init__(
            f"taichi_dp cannot compute verified gradients on arch={rt.arch!r} (precision={rt.precision!r}): "
            f"every differentiation route failed the known-answer check ({tried}). Known upstream issue: "
            f"{grad_routes.UPSTREAM_ISSUE}. Use taichi_dp.init(arch='cpu') (or 'cuda') for training, or run "
            f"this arch without gradients (torch.no_grad())."
        )


_current: Runtime | None = None
_ti_key: tuple | None = None  # the ti.init arguments of the current runtime
_KEY_THREADS = 4  # where the requested cpu_threads (None: Taichi's default) sits in _ti_key


def _arch_available(name: str) -> bool:
    """Probe one arch explicitly (never ``ti.gpu``, which can segfault on GPU-less Mesa-EGL hosts)."""
    if name == "cpu":
        return True
    if name == "cuda":
        return torch.cuda.is_available() and bool(ti.lang.misc.is_arch_supported(ti.cuda))
    if name == "vulkan":
        return bool(ti.lang.misc.is_arch_supported(ti.vulkan))
    return False


def init(
    arch: str = "auto",
    precision: str = "f32",
    *,
    check_inputs: bool = True,
    offline_cache: bool = True,
    debug: bool = False,
    cpu_threads: int | None = None,
) -> Runtime:
    """Initialise Taichi for taichi_dp and return the :class:`Runtime` actually chosen.

    Args:
        arch: ``"auto"`` tries :func:`auto_candidates` (``cuda``, a hardware ``vulkan`` device, ``cpu``) and
            takes the first whose gradients pass the known-answer check; ``"cpu" | "cuda" | "vulkan"``
            request one arch and raise ``RuntimeError`` if it is unavailable (an arch without a verified
            gradient route starts, and differentiating there raises :class:`GradientUnavailableError`).
        precision: ``"f32"`` (default) or ``"f64"`` (gradient checks, users who need it).
        check_inputs: validate states (shape, dtype, device, contiguity, NaN/Inf) before every op.
            Turning it off saves one reduction per op; bad input then gives wrong numbers, not errors.
        offline_cache: keep Taichi's compiled-kernel cache on disk between processes.
        debug: Taichi debug mode (bounds checks in kernels; slow).
        cpu_threads: an integer ≥ 1 caps the CPU threads of both Taichi's CPU backend (``ti.init``'s
            ``cpu_max_num_threads``) and torch (``torch.set_num_threads``, process-wide). ``None`` (default)
            keeps the current setting: at first start Taichi's default (every core) and torch's own.
            On a few shared cores fewer threads can be faster (no oversubscription by other processes).

    Idempotent: a second call with the same arguments returns the current runtime unchanged; a change
    of ``check_inputs`` alone takes effect without touching Taichi; any other change re-initialises
    Taichi (compiled kernels are recompiled on next use, from the offline cache when enabled).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    if cpu_threads is not None:
        if isinstance(cpu_threads, bool) or not isinstance(cpu_threads, (int, np.integer)):
            raise TypeError(f"cpu_threads must be an integer >= 1 or None, got {type(cpu_threads).__name__} {cpu_threads!r}")
        if cpu_threads < 1:
            raise ValueError(f"cpu_threads must be an integer >= 1 or None, got {cpu_threads!r}")
        cpu_threads = int(cpu_threads)
    threads = cpu_threads if cpu_threads is not None or _ti_key is None else _ti_key[_KEY_THREADS]

    if arch != "auto" and not _arch_available(arch):
        raise RuntimeError(f"arch={arch!r} was requested but is not available on this machine (use arch='auto' or 'cpu')")
    global _current
    candidates = auto_candidates() if arch == "auto" else [arch]
    for chosen in candidates:
        last = chosen == candidates[-1]
        known = _routes_seen.get((chosen, precision))
        if known is not None and known[0] is None and not last:
            continue  # this arch failed the gradient check earlier in this process
        if _current is not None and (chosen, precision, offline_cache, debug, threads) == _ti_key:
            if _current.check_inputs != check_inputs:  # nothing Taichi-side changed: no re-initialisation
                _current = dataclasses.replace(_current, check_inputs=check_inputs)
            rt = _current
        else:
            rt = _start(chosen, precision, check_inputs=check_inputs, offline_cache=offline_cache, debug=debug, threads=threads)
        if rt.grad_route is not None or last:
            if cpu_threads is not None:
                torch.set_num_threads(cpu_threads)
            return rt
    raise AssertionError("unreachable: the last candidate is always returned")


def auto_candidates() -> list[str]:
    """What ``arch="auto"`` tries, in order: ``cuda`` (with a CUDA build of torch), ``vulkan`` when a
    hardware Vulkan device exists (never a CPU-type software device such as llvmpipe), then ``cpu``.
    An arch whose gradients fail the known-answer check is skipped (``cpu`` is kept as the last resort)."""
    out = [a for a in ("cuda", "vulkan") if _arch_available(a) and (a != "vulkan" or _vulkan.has_hardware_device())]
    return [*out, "cpu"]


def _start(
    chosen: str, precision: str, *, check_inputs: bool, offline_cache: bool, debug: bool, threads: int | None = None
) -> Runtime:
    """(Re-)start Taichi on ``chosen`` and verify its differentiation routes; ``threads`` caps Taichi's CPU
    backend (``None``: Taichi's default)."""
    global _current, _ti_key
    if _current is not None:
        ti.reset()
        _current = _ti_key = None

    ti.init(
        arch=getattr(ti, chosen),
        default_fp=ti.f64 if precision == "f64" else ti.f32,
        default_ip=ti.i32,
        offline_cache=offline_cache,
        debug=debug,
        **({} if os.environ.get("TI_LOG_LEVEL") else {"log_level": ti.WARN}),  # Taichi's own variable wins
        **({} if threads is None else {"cpu_max_num_threads": threads}),
    )
    got = str(ti.lang.impl.current_cfg().arch).split(".")[-1]
    got = "cpu" if got in ("x64", "arm64") else got
    if got != chosen:  # Taichi fell back silently: refuse rather than run on the wrong device
        ti.reset()
        raise RuntimeError(f"Taichi could not start arch={chosen!r} (it fell back to {got!r})")

    _ti_key = (chosen, precision, offline_cache, debug, threads)
    device = torch.device("cuda", torch.cuda.current_device()) if chosen == "cuda" else torch.device("cpu")
    route, failures = _verified_route(chosen, precision, device)
    effective = int(ti.lang.impl.current_cfg().cpu_max_num_threads)
    _current = Runtime(chosen, precision, device, PRECISIONS[precision], check_inputs, route, failures, effective)
    return _current


_routes_seen: dict[tuple[str, str], tuple[str | None, tuple[tuple[str, str], ...]]] = {}


def _verified_route(arch: str, precision: str, device: torch.device) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """The first differentiation route that passes the known-answer check here (measured once per process
    for each arch and precision: re-initialising Taichi does not change what the arch computes)."""
    key = (arch, precision)
    if key not in _routes_seen:
        route, failures = grad_routes.select(PRECISIONS[precision], device)
        _routes_seen[key] = (route, tuple(failures.items()))
    return _routes_seen[key]


def sync() -> None:
    """Wait for every queued kernel (Taichi's and torch's) on the current device; benchmarks time with it."""
    if _current is not None:
        ti.sync()
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ensure_init() -> Runtime:
    """The current runtime; initialises with defaults (``arch="auto"``, ``"f32"``) on first use."""
    if _current is None:
        return init()
    return _current


def current() -> Runtime | None:
    """The current runtime, or ``None`` before :func:`init`."""
    return _current


# --------------------------------------------------------------------------------------------------
# Validation: every public op validates its tensors once, here, before any kernel runs.
# --------------------------------------------------------------------------------------------------


def check_state(
    name: str,
    x: object,
    spatial: tuple[int, ...] | None = None,
    *,
    channels: int | None = None,
    batch: int | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Validate a state tensor of layout ``(B, C, *spatial)`` and return it.

    Raises ``TypeError``/``ValueError`` naming ``name``, the expected and the received value.
    """
    rt = ensure_init()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not rt.check_inputs:
        return x
    nd = None if spatial is None else len(spatial)
    if nd is not None and x.ndim != nd + 2:
        layout = "(B, C, " + ", ".join({1: ("N",), 2: ("H", "W"), 3: ("D", "H", "W")}.get(nd, ("...",))) + ")"
        hint = " (add a batch dimension with x[None])" if x.ndim == nd + 1 else ""
        raise ValueError(f"{name} must have layout {layout}, i.e. {nd + 2} dims; got shape {tuple(x.shape)}{hint}")
    if spatial is not None and tuple(x.shape[2:]) != tuple(spatial):
        raise ValueError(f"{name} must have spatial shape {tuple(spatial)} (the grid's), got {tuple(x.shape[2:])}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s) in dim 1, got shape {tuple(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} must have batch size {batch} (dim 0), got shape {tuple(x.shape)}")
    check_tensor(name, x, finite=finite)
    return x


def check_tensor(name: str, x: torch.Tensor, *, finite: bool = True) -> torch.Tensor:
    """Check dtype (runtime precision), device (runtime arch), contiguity, and optionally finiteness."""
    rt = ensure_init()
    if not rt.check_inputs:
        return x
    if x.dtype != rt.dtype:
        raise TypeError(
            f"{name} must have dtype {rt.dtype} (taichi_dp runs with precision={rt.precision!r}), got {x.dtype}; "
            f"convert with .to({rt.dtype}) or re-initialise with taichi_dp.init(precision=...)"
        )
    if x.device.type != rt.device.type:
        raise ValueError(
            f"{name} must be on torch device {rt.device.type!r} (taichi_dp runs on arch={rt.arch!r}), "
            f"got {x.device}; move it with .to({str(rt.device)!r})"
        )
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous (got strides {x.stride()}); call .contiguous() first")
    if finite and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf value(s); the state has diverged or the input is corrupt")
    return x


def check_positive(name: str, x: object) -> float:
    """``float(x)`` for a finite real number ``x > 0`` (not a bool); ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a finite number > 0, got {type(x).__name__} {x!r}")
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {x!r}")
    return float(x)


def check_param(name: str, value: float | torch.Tensor, *, positive: bool = False) -> None:
    """Validate a physical parameter: a finite float, or a 0-d/1-d tensor of the runtime dtype/device."""
    rt = ensure_init()
    if isinstance(value, torch.Tensor):
        if value.ndim > 1:
            raise ValueError(f"{name} must be a float, a 0-d tensor or a (B,) tensor; got shape {tuple(value.shape)}")
        if value.dtype != rt.dtype:
            raise TypeError(f"{name} must have dtype {rt.dtype} (precision={rt.precision!r}), got {value.dtype}")
        if value.device.type != rt.device.type:
            raise ValueError(f"{name} must be on torch device {rt.device.type!r} (arch={rt.arch!r}), got {value.device}")
        if rt.check_inputs:
            v = value.detach()
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"{name} contains NaN/Inf: {v.tolist()}")
            if positive and bool((v < 0).any()):
                raise ValueError(f"{name} must be >= 0, got {v.tolist()}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def as_batch_param(name: str, value: float | torch.Tensor, batch: int, *, positive: bool = False) -> torch.Tensor:
    """A per-batch physical parameter (viscosity, dt, ...) as a contiguous ``(B,)`` tensor.

    Accepts a Python float, a 0-d tensor, or a ``(1,)``/``(B,)`` tensor; tensors keep their autograd
    history, so gradients w.r.t. e.g. viscosity or dt flow back to the caller.
    """
    check_param(name, value, positive=positive)
    if isinstance(value, torch.Tensor):
        if value.ndim == 1 and value.shape[0] not in (1, batch):
            raise ValueError(f"{name} has shape {tuple(value.shape)} but the state's batch size is {batch}")
        return value.reshape(-1).expand(batch).contiguous()
    rt = ensure_init()
    return torch.full((batch,), float(value), dtype=rt.dtype, device=rt.device)
