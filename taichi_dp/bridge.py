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
Taichi's reverse-mode ``kernel.grad`` on the same memory. The Taichi semantics it must respect, all
handled here and nowhere else:

- ``kernel.grad`` *accumulates* into each input's ``.grad``: we hand it fresh zero buffers;
- ``kernel.grad`` *zeroes* each output's ``.grad``: we hand it a clone of the incoming gradient;
- ``requires_grad`` of a tensor argument is part of Taichi's compile key: forward always passes
  detached tensors and backward always passes every input with ``requires_grad=True``, so each kernel
  compiles exactly twice (forward, backward) per dtype/arch, whatever the caller differentiates.

Kernel-writing rules that keep ``kernel.grad`` correct (checked by the gradcheck tests, not by Taichi):
one top-level ``for`` loop and no statement before it; never read an output; inner dynamic loops
longer than ~30 iterations need ``ad_stack_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .runtime import ensure_init

SERIAL_BELOW = 1 << 17
"""On the CPU arch, kernels whose first output has fewer elements run serially (see module doc)."""


def serial_for(out_shapes: Sequence[Sequence[int]]) -> bool:
    """The ``serial`` flag for a launch whose first output has shape ``out_shapes[0]`` (also used by
    forward-only kernels outside the bridge)."""
    n = 1
    for d in out_shapes[0]:
        n *= int(d)
    return ensure_init().arch == "cpu" and n < SERIAL_BELOW


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
        self.kernel(*(t.detach() for t in inputs), *outs, *consts, serial_for(out_shapes))
        return outs

    def vjp(
        self,
        inputs: Sequence[torch.Tensor],
        grad_outputs: Sequence[torch.Tensor | None],
        out_shapes: Sequence[Sequence[int]],
        consts: Sequence[Any],
    ) -> list[torch.Tensor]:
        """Vector-Jacobian product by Taichi reverse-mode autodiff: ``[gᵀ ∂out/∂input for each input]``."""
        ins = []
        for t in inputs:
            leaf = t.detach().requires_grad_(True)
            leaf.grad = torch.zeros_like(leaf)  # kernel.grad accumulates here
            ins.append(leaf)
        outs = []
        ref = inputs[0]
        for shape, g in zip(out_shapes, grad_outputs):
            o = torch.zeros(tuple(shape), dtype=ref.dtype, device=ref.device, requires_grad=True)
            # kernel.grad zeroes the outputs' gradients: give it a private copy.
            o.grad = torch.zeros_like(o) if g is None else g.detach().clone(memory_format=torch.contiguous_format)
            outs.append(o)
        self.kernel.grad(*ins, *outs, *consts, serial_for(out_shapes))
        return [t.grad for t in ins]


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
