"""The one generic mechanism that turns a Taichi kernel into a differentiable PyTorch op.

A bridged kernel has the signature ``kernel(*inputs, *outputs, *consts)``:

- ``inputs``: float ndarrays the op is differentiable in (states, velocities, per-batch parameters
  such as viscosity or dt as ``(B,)`` tensors);
- ``outputs``: float ndarrays the kernel *writes and never reads* (Taichi autodiff silently returns
  wrong gradients for a kernel that reads an array after writing it);
- ``consts``: everything else, passed through unchanged (``ti.template()`` boundary codes, Python
  scalars such as grid spacings, integer masks);
- a final ``serial: ti.template()`` flag that the bridge appends: kernels start with
  ``ti.loop_config(serialize=serial)``. On the CPU arch a parallel loop costs ~170 µs more per launch
  than a serial one (thread-pool hand-off, measured on 2 cores), which dominates small grids; the
  bridge serialises launches whose output has fewer than :data:`SERIAL_BELOW` elements on CPU.

Forward runs ``kernel`` on the tensors' memory (``ti.types.ndarray`` is zero-copy). Backward runs
Taichi's reverse-mode ``kernel.grad`` through the runtime's *verified* differentiation route
(:attr:`taichi_dp.runtime.Runtime.grad_route`, chosen at init by a known-answer check): on the same
memory (``"ndarray"``: CPU, CUDA), or on staging fields through the kernel's field twin (``"fields"``:
Vulkan, where ndarray gradients come back silently zero; :mod:`taichi_dp.grad_routes`). Without a
verified route the backward raises instead of returning an unverified gradient. Both routes live in
:mod:`taichi_dp.grad_routes` (the code the check runs is the code the backward runs), which handles the
Taichi semantics of ``kernel.grad`` in one place:

- ``kernel.grad`` *accumulates* into each input's ``.grad``: it gets fresh zero buffers;
- ``kernel.grad`` *zeroes* each output's ``.grad``: it gets a clone of the incoming gradient;
- ``requires_grad`` of a tensor argument is part of Taichi's compile key: forward always passes
  detached tensors and backward always passes every input with ``requires_grad=True``, so each kernel
  compiles exactly twice (forward, backward) per dtype/arch, whatever the caller differentiates.

Every launch goes through :func:`launch`, which replays a cached argument plan instead of Taichi's
generic per-call argument inspection (~100–200 µs of Python per launch with tensor arguments on a
2-core CPU; see :func:`launch`).

Kernel-writing rules that keep ``kernel.grad`` correct (checked by the gradcheck tests, not by Taichi):
one top-level ``for`` loop and no statement before it; never read an output; inner dynamic loops
longer than ~30 iterations need ``ad_stack_size``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import taichi as ti
import torch
from taichi.types import primitive_types

from . import grad_routes
from .runtime import ensure_init

SERIAL_BELOW = 1 << 20
"""On the CPU arch, kernels whose first output has fewer elements run serially (see module doc; on 2
cores parallel loops did not pay for their hand-off below ~1M elements: the karman step at 256×512 took
39.5 ms with its 264k-face kernels parallel, 36.1 ms serial)."""

FORCE_PARALLEL = os.environ.get("TAICHI_DP_PARALLEL_LOOPS", "") == "1"
"""``TAICHI_DP_PARALLEL_LOOPS=1``: every bridged launch and every multigrid solve uses parallel loops at
every size, so the GPU-shaped code path is tested on the CPU (CI runs the operator and solver tests so)."""


def serial_for(out_shapes: Sequence[Sequence[int]]) -> bool:
    """The ``serial`` flag for a launch whose first output has shape ``out_shapes[0]`` (also used by
    forward-only kernels outside the bridge)."""
    if FORCE_PARALLEL:
        return False
    n = 1
    for d in out_shapes[0]:
        n *= int(d)
    return ensure_init().arch == "cpu" and n < SERIAL_BELOW


class _Plan:
    """How to launch one compiled instance of a kernel: the C++ kernel, its compiled data and, per
    runtime argument, its launch slot and kind (``"a"`` array, ``"f"`` float, ``"i"`` int)."""

    __slots__ = ("ckd", "prog", "slots", "t_kernel")

    def __init__(self, kernel: Any, args: tuple) -> None:
        k = getattr(kernel, "_primal", kernel)  # the Kernel behind a @ti.kernel function (kernel.grad is one)
        key = k.ensure_compiled(*args)
        self.t_kernel = k.compiled_kernels[key]
        self.prog = ti.lang.impl.get_runtime().prog
        self.ckd = self.prog.compile_kernel(self.prog.config(), self.prog.get_device_caps(), self.t_kernel)
        self.slots = []
        slot = 0
        for i, arg in enumerate(k.arguments):
            ann = arg.annotation
            if isinstance(ann, ti.template):
                continue
            if isinstance(ann, ti.types.ndarray) and ann.dtype is None:
                self.slots.append((slot, i, "a"))
            elif id(ann) in primitive_types.real_type_ids:
                self.slots.append((slot, i, "f"))
            elif id(ann) in primitive_types.integer_type_ids and ann not in (ti.u8, ti.u16, ti.u32, ti.u64):
                self.slots.append((slot, i, "i"))
            else:
                raise TypeError(f"{k.func.__name__}: argument {arg.name} ({ann}) has no fast launch path")
            slot += 1

    def __call__(self, args: tuple) -> None:
        ctx = self.t_kernel.make_launch_context()
        for slot, i, kind in self.slots:
            v = args[i]
            if kind == "a":
                if v.requires_grad and v.grad is None:  # as Taichi does: the adjoint kernel writes here
                    v.grad = torch.zeros_like(v)
                g = v.grad.data_ptr() if v.requires_grad else 0
                ctx.set_arg_external_array_with_shape((slot,), v.data_ptr(), v.element_size() * v.nelement(), tuple(v.shape), g)
            elif kind == "f":
                ctx.set_arg_float((slot,), float(v))
            else:
                ctx.set_arg_int((slot,), int(v))
        self.prog.launch_kernel(self.ckd, ctx)


launches = 0
"""Number of Taichi kernel launches made through :func:`launch` so far (benchmarks read it)."""
_plans: dict[tuple, _Plan | None] = {}
_plans_prog: list[Any] = [None]


def _arg_key(v: Any, template: bool) -> Any:
    if isinstance(v, torch.Tensor):
        if not v.is_contiguous():
            raise ValueError("Taichi kernels need contiguous tensors; call .contiguous() first")
        return (v.dtype, v.dim(), v.requires_grad, v.device.type)
    return v if template else type(v)


def launch(kernel: Any, *args: Any) -> None:
    """Launch ``kernel(*args)`` (a ``@ti.kernel`` or its ``.grad``) with a cached argument plan.

    The first call with a given signature (tensor dtypes, ndims, ``requires_grad`` and devices; template
    values; scalar types) goes through Taichi's own call, which compiles and validates. Later calls
    replay the plan: one launch context, one ``set_arg`` per runtime argument, one launch; Taichi's
    type dispatch and compile-key lookup are skipped. Plans are dropped when Taichi is re-initialised.
    Tensors on a device Taichi cannot address directly (e.g. CUDA tensors on the CPU arch) always take
    Taichi's own path, which copies them.
    """
    prog = ti.lang.impl.get_runtime().prog
    if _plans_prog[0] is not prog:
        _plans.clear()
        _plans_prog[0] = prog
    global launches
    launches += 1
    k = getattr(kernel, "_primal", kernel)
    if not hasattr(k, "arguments"):  # not a Taichi kernel (e.g. a profiling wrapper around one)
        kernel(*args)
        return
    try:
        key = (id(k), *(_arg_key(v, isinstance(a.annotation, ti.template)) for v, a in zip(args, k.arguments)))
        hash(key)
    except TypeError:  # an unhashable template value: no plan
        kernel(*args)
        return
    plan = _plans.get(key, False)
    if plan is False:
        kernel(*args)  # compiles (first use) and checks the arguments the Taichi way
        direct = ensure_init().device.type
        ok = all(not isinstance(v, torch.Tensor) or v.device.type == direct for v in args)
        try:
            _plans[key] = _Plan(kernel, args) if ok else None
        except TypeError:
            _plans[key] = None
        return
    if plan is None:
        kernel(*args)
    else:
        plan(args)


class KernelOp:
    """A Taichi kernel exposed as a differentiable torch op (see module docstring for the contract).

    Args:
        kernel: a ``@ti.kernel`` with signature ``kernel(*inputs, *outputs, *consts, serial)``.
        n_inputs: number of differentiable float array inputs.
        n_outputs: number of float array outputs.
        name: for error messages and profiling.
    """

    def __init__(self, kernel: Any, n_inputs: int, n_outputs: int, name: str | None = None) -> None:
        self.kernel = kernel
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self.name = name or getattr(kernel, "__name__", "kernel")

    def __repr__(self) -> str:
        return f"KernelOp({self.name}, inputs={self.n_inputs}, outputs={self.n_outputs})"

    def __call__(
        self,
        inputs: Sequence[torch.Tensor],
        out_shapes: Sequence[Sequence[int]],
        consts: Sequence[Any] = (),
    ) -> tuple[torch.Tensor, ...]:
        """Run the op. ``inputs`` must be contiguous tensors of the runtime dtype/device (validated by
        the caller); returns freshly allocated outputs of ``out_shapes``."""
        if len(inputs) != self.n_inputs or len(out_shapes) != self.n_outputs:
            raise TypeError(
                f"{self.name}: expected {self.n_inputs} inputs and {self.n_outputs} outputs, "
                f"got {len(inputs)} and {len(out_shapes)}"
            )
        ensure_init()
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            outs = _KernelFunction.apply(self, tuple(tuple(s) for s in out_shapes), tuple(consts), *inputs)
            return outs if isinstance(outs, tuple) else (outs,)
        return self.forward(inputs, out_shapes, consts)

    def forward(
        self, inputs: Sequence[torch.Tensor], out_shapes: Sequence[Sequence[int]], consts: Sequence[Any]
    ) -> tuple[torch.Tensor, ...]:
        """Run the kernel without autograd; returns the outputs."""
        ref = inputs[0]
        outs = tuple(torch.empty(tuple(s), dtype=ref.dtype, device=ref.device) for s in out_shapes)
        launch(self.kernel, *(t.detach() for t in inputs), *outs, *consts, serial_for(out_shapes))
        return outs

    def vjp(
        self,
        inputs: Sequence[torch.Tensor],
        grad_outputs: Sequence[torch.Tensor | None],
        out_shapes: Sequence[Sequence[int]],
        consts: Sequence[Any],
    ) -> list[torch.Tensor]:
        """Vector-Jacobian product by Taichi reverse-mode autodiff: ``[gᵀ ∂out/∂input for each input]``,
        through the runtime's verified route (raises ``GradientUnavailableError`` when there is none)."""
        route = ensure_init().require_gradients()
        ref = inputs[0]
        gs = [
            torch.zeros(tuple(shape), dtype=ref.dtype, device=ref.device) if g is None else g
            for shape, g in zip(out_shapes, grad_outputs)
        ]
        return grad_routes.run_route(route, self.kernel, inputs, gs, (*consts, serial_for(out_shapes)), launch)


class _KernelFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, op: KernelOp, out_shapes: tuple, consts: tuple, *inputs: torch.Tensor) -> Any:
        outs = op.forward(inputs, out_shapes, consts)
        ctx.op, ctx.out_shapes, ctx.consts = op, out_shapes, consts
        ctx.save_for_backward(*inputs)
        return outs if len(outs) > 1 else outs[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> Any:
        inputs = ctx.saved_tensors
        grads = ctx.op.vjp(inputs, grad_outputs, ctx.out_shapes, ctx.consts)
        grads = [g if need else None for g, need in zip(grads, ctx.needs_input_grad[3:])]
        return (None, None, None, *grads)
