"""Differentiation routes: how reverse-mode ``kernel.grad`` runs on an arch, and the known-answer check
that decides which route an arch may use.

Taichi autodiff fails silently, and it fails per arch: on Taichi 1.7.4's Vulkan backend ``kernel.grad``
of a kernel on ``ti.types.ndarray`` arguments leaves every input gradient at zero (torch tensors and
``ti.ndarray`` alike; taichi-dev/taichi#8524), while the same kernel on ``ti.field`` s is differentiated
correctly. So an arch's route is *measured*, never assumed:

- ``"ndarray"``: ``kernel.grad`` directly on the torch tensors (zero-copy; the CPU and CUDA route);
- ``"fields"``: the kernel's *field twin* (the same Python function with every ndarray parameter
  re-annotated as ``ti.template()``, compiled as a second Taichi kernel) is differentiated on
  Taichi-owned ``ti.field`` s: inputs and constant arrays are copied in, the incoming gradient is copied
  into the outputs' adjoints, and the inputs' adjoints are copied out. One mechanism for every bridged
  kernel; no kernel is written twice.

:func:`probe` runs a tiny known-answer kernel through a route (a batched stencil with a per-sample
parameter, parallel and serial loops; milliseconds) and compares values and gradients with the
closed form. :func:`select` returns the first route that passes, or ``None`` with the reasons.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import types
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import taichi as ti
import torch

ROUTES = ("ndarray", "fields")
"""Routes in order of preference (the first that passes the known-answer check is used)."""

UPSTREAM_ISSUE = "taichi-dev/taichi#8524"

_TI_DTYPES = {
    torch.float32: ti.f32,
    torch.float64: ti.f64,
    torch.int8: ti.i8,
    torch.int16: ti.i16,
    torch.int32: ti.i32,
    torch.int64: ti.i64,
    torch.uint8: ti.u8,
}


# ------------------------------------------------------------------------------------ the field route
def _primal(kernel: Any) -> Any:
    """The ``Kernel`` behind a ``@ti.kernel`` function (``kernel.grad`` is one already)."""
    return getattr(kernel, "_primal", kernel)


_twins: dict[int, Any] = {}


def field_twin(kernel: Any) -> Any:
    """The kernel's field twin: the same function, every ``ti.types.ndarray`` parameter annotated
    ``ti.template()`` so that Taichi compiles it for ``ti.field`` arguments (one twin per kernel)."""
    k = _primal(kernel)
    twin = _twins.get(id(k))
    if twin is not None and twin[0] is k:
        return twin[1]
    f = k.func
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    g.__annotations__ = {
        name: ti.template() if isinstance(ann, ti.types.ndarray) else ann for name, ann in f.__annotations__.items()
    }
    g.__qualname__, g.__module__, g.__doc__ = f.__qualname__ + "__fields", f.__module__, f.__doc__
    compiled = ti.kernel(g)
    _twins[id(k)] = (k, compiled)
    return compiled


class _Stage:
    """One set of staging fields for a launch signature: a field per tensor argument, with adjoints for
    float ones, all in one SNode tree (freed when the stage is evicted)."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        fb = ti.FieldsBuilder()
        self.fields = []
        for t in tensors:
            dtype = _TI_DTYPES.get(t.dtype)
            if dtype is None:
                raise TypeError(f"the field differentiation route cannot stage tensors of dtype {t.dtype}")
            grad = t.dtype.is_floating_point
            f = ti.field(dtype, needs_grad=grad)
            axes = ti.axes(*range(t.dim())) if t.dim() > 0 else None
            node = fb.dense(axes, tuple(t.shape)) if t.dim() > 0 else fb
            node.place(f, f.grad) if grad else node.place(f)
            self.fields.append(f)
        self.tree = fb.finalize()


MAX_STAGES = 64
"""Staging field sets kept alive (least recently used evicted; each is one SNode tree)."""

_stages: "OrderedDict[tuple, _Stage]" = OrderedDict()
_stages_prog: list[Any] = [None]


def _stage_for(tensors: Sequence[torch.Tensor]) -> _Stage:
    prog = ti.lang.impl.get_runtime().prog
    if _stages_prog[0] is not prog:  # Taichi was re-initialised: the old trees are gone with it
        _stages.clear()
        _stages_prog[0] = prog
    key = tuple((t.dtype, tuple(t.shape)) for t in tensors)
    stage = _stages.get(key)
    if stage is None:
        stage = _stages[key] = _Stage(tensors)
        while len(_stages) > MAX_STAGES:
            _, old = _stages.popitem(last=False)
            old.tree.destroy()
    _stages.move_to_end(key)
    return stage


def _taichi_call(kernel: Any, *args: Any) -> None:
    kernel(*args)


def grad_on_ndarrays(
    kernel: Any,
    inputs: Sequence[torch.Tensor],
    grad_outputs: Sequence[torch.Tensor],
    rest: Sequence[Any],
    launch: Callable[..., None] = _taichi_call,
) -> list[torch.Tensor]:
    """``[gᵀ ∂out/∂input for each input]`` by ``kernel.grad`` directly on the tensors (the ``"ndarray"``
    route), respecting Taichi's semantics: ``kernel.grad`` *accumulates* into each input's ``.grad`` (fresh
    zero buffers are handed to it) and *zeroes* each output's ``.grad`` (it gets a private copy of the
    incoming gradient); every input is passed with ``requires_grad=True`` (part of the compile key).
    ``launch(kernel.grad, *args)`` runs it (the bridge passes its cached-plan launcher)."""
    ins = []
    for t in inputs:
        leaf = t.detach().requires_grad_(True)
        leaf.grad = torch.zeros_like(leaf)
        ins.append(leaf)
    outs = []
    for g in grad_outputs:
        o = torch.zeros_like(g, memory_format=torch.contiguous_format).requires_grad_(True)
        o.grad = g.detach().clone(memory_format=torch.contiguous_format)
        outs.append(o)
    launch(kernel.grad, *ins, *outs, *rest)
    return [t.grad for t in ins]


def grad_on_fields(
    kernel: Any,
    inputs: Sequence[torch.Tensor],
    grad_outputs: Sequence[torch.Tensor],
    rest: Sequence[Any],
    launch: Callable[..., None] = _taichi_call,
) -> list[torch.Tensor]:
    """``[gᵀ ∂out/∂input for each input]`` of ``kernel(*inputs, *outputs, *rest)`` by Taichi autodiff on
    staging fields (the ``"fields"`` route). ``grad_outputs`` give the outputs' shapes and adjoints;
    tensors in ``rest`` (constant arrays such as masks) are staged too, other values passed through.
    ``launch`` is accepted for a uniform route signature; the field twin is called by Taichi itself."""
    tensors = [*inputs, *grad_outputs, *(v for v in rest if isinstance(v, torch.Tensor))]
    stage = _stage_for(tensors)
    fields = iter(stage.fields)
    ins = [next(fields) for _ in inputs]
    outs = [next(fields) for _ in grad_outputs]
    for f, t in zip(ins, inputs):
        f.from_torch(t.detach())
        f.grad.fill(0)
    for f, g in zip(outs, grad_outputs):
        f.grad.from_torch(g.detach().contiguous())
    args = []
    for v in rest:
        if isinstance(v, torch.Tensor):
            f = next(fields)
            f.from_torch(v.detach())
            args.append(f)
        else:
            args.append(v)
    field_twin(kernel).grad(*ins, *outs, *args)
    ref = inputs[0]
    return [f.grad.to_torch(device=ref.device).reshape(t.shape) for f, t in zip(ins, inputs)]


# ------------------------------------------------------------------------------------ the known-answer check
@ti.kernel
def _probe_kernel(
    x: ti.types.ndarray(ndim=2), c: ti.types.ndarray(ndim=1), y: ti.types.ndarray(ndim=2), serial: ti.template()
):
    """``y[b, i] = c[b]·x[b, i]² + x[b, i+1 mod n]``: a batched stencil with a per-sample parameter."""
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange(x.shape[0], x.shape[1]):
        y[b, i] = c[b] * x[b, i] * x[b, i] + x[b, (i + 1) % x.shape[1]]


def _probe_expected(x: torch.Tensor, c: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    y = c[:, None] * x * x + torch.roll(x, -1, 1)
    gx = 2 * c[:, None] * x * g + torch.roll(g, 1, 1)
    gc = (x * x * g).sum(1)
    return y, gx, gc


_ROUTE_RUNNERS: dict[str, Callable[..., list[torch.Tensor]]] = {"ndarray": grad_on_ndarrays, "fields": grad_on_fields}


def run_route(
    route: str,
    kernel: Any,
    inputs: Sequence[torch.Tensor],
    grad_outputs: Sequence[torch.Tensor],
    rest: Sequence[Any],
    launch: Callable[..., None] = _taichi_call,
) -> list[torch.Tensor]:
    """The vector–Jacobian product through ``route``: the same code the known-answer check verified."""
    return _ROUTE_RUNNERS[route](kernel, inputs, grad_outputs, rest, launch)


def probe(route: str, dtype: torch.dtype, device: torch.device) -> str | None:
    """Run the known-answer kernel's forward (ndarrays) and its gradient through ``route`` on the current
    Taichi runtime; ``None`` when values and gradients match the closed form, else what was wrong."""
    gen = torch.Generator().manual_seed(1234)
    x = torch.rand(3, 17, generator=gen, dtype=torch.float64).add_(0.5).to(dtype=dtype, device=device)
    c = torch.rand(3, generator=gen, dtype=torch.float64).add_(0.5).to(dtype=dtype, device=device)
    g = torch.rand(3, 17, generator=gen, dtype=torch.float64).add_(0.5).to(dtype=dtype, device=device)
    y_ref, gx_ref, gc_ref = _probe_expected(x.double(), c.double(), g.double())
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for serial in (False, True):
        try:
            y = torch.zeros_like(x)
            _probe_kernel(x, c, y, serial)
            gx, gc = run_route(route, _probe_kernel, (x, c), (g,), (serial,))
        except Exception as e:  # a route that cannot even run is a failed route
            return f"{type(e).__name__}: {e}"
        loops = "serial" if serial else "parallel"
        for what, got, ref in (("forward", y, y_ref), ("input gradient", gx, gx_ref), ("parameter gradient", gc, gc_ref)):
            err = float((got.double().cpu() - ref.cpu()).abs().max() / ref.abs().max())
            if not err <= tol:  # also catches NaN
                return f"{what} wrong with {loops} loops (max relative error {err:.2e}; all zero: {bool((got == 0).all())})"
    return None


def select(dtype: torch.dtype, device: torch.device, routes: Sequence[str] | None = None) -> tuple[str | None, dict[str, str]]:
    """The first of ``routes`` (default :data:`ROUTES`) that passes :func:`probe`, and the failures of
    those tried before it."""
    failures: dict[str, str] = {}
    for route in ROUTES if routes is None else routes:
        err = probe(route, dtype, device)
        if err is None:
            return route, failures
        failures[route] = err
    return None, failures
