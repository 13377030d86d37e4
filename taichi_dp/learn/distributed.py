"""Data-parallel training over processes with PyTorch Distributed (``torchrun`` + DistributedDataParallel).

One process per device. ``torchrun`` starts the processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them, initialises this
process's Taichi runtime on its own device and joins the process group:

- ``arch="cuda"``: the process is pinned to GPU ``LOCAL_RANK`` (the ``LOCAL_RANK``-th entry of
  ``CUDA_VISIBLE_DEVICES`` when that is set) through ``CUDA_VISIBLE_DEVICES``, because Taichi 1.7
  always opens the first visible CUDA device and the torch tensors handed to its kernels must live on
  that same device. Inside the process that GPU is ``cuda:0``. Backend: NCCL.
- ``arch="cpu"`` (and ``vulkan``): backend gloo.

Every rank holds a full replica of the model (wrapped by :func:`wrap` in DDP, whose backward all-reduces
the gradients, including those that flowed through the solver's Taichi kernels) and computes the loss on
its slice (:func:`shard`) of the global mini-batch, which every rank draws from the same seeded
generator. :func:`taichi_dp.learn.train` does the sharding, the loss scaling and rank-0-only writing.

Failure: a rank that dies closes its sockets, so its peers' next collective fails at once; ``torchrun``
also notices the dead worker, stops the others and exits non-zero naming the failed rank. A rank that
hangs instead is caught by the process-group ``timeout``. Restart with the same command plus ``--resume``.

Without ``torchrun`` (or before :func:`setup`) every helper is the single-process identity: rank 0 of 1,
:func:`is_main` is true, :func:`barrier` does nothing, :func:`wrap` returns the model unchanged.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import runtime

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT_S = 180.0

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job and the device its Taichi runtime runs on."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    timeout_s: float


_ctx: DistContext | None = None
_alone = 0  # depth of single_process() blocks


def launched_by_torchrun() -> bool:
    """Whether the environment of a ``torchrun`` worker (:data:`ENV_VARS`) is present."""
    return all(v in os.environ for v in ENV_VARS)


def _env_int(name: str) -> int:
    raw = os.environ.get(name)
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"environment variable {name} must be an integer (set by torchrun), got {raw!r}") from None
    if value < 0:
        raise ValueError(f"environment variable {name} must be >= 0, got {value}")
    return value


def _pin_cuda_device(local_rank: int) -> None:
    """Make GPU ``local_rank`` the only visible CUDA device of this process (before CUDA starts)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if torch.cuda.is_initialized():
        raise RuntimeError(
            "distributed.setup must run before anything uses CUDA in this process (it pins the process to GPU "
            "LOCAL_RANK through CUDA_VISIBLE_DEVICES, the only device selection Taichi 1.7 honours)"
        )
    if visible is not None and visible.strip() != "":
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        if local_rank >= len(devices):
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but CUDA_VISIBLE_DEVICES={visible!r} lists only {len(devices)} GPU(s): "
                "start at most that many processes per node (torchrun --nproc_per_node)"
            )
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[local_rank]
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(local_rank)


def setup(
    arch: str = "cpu",
    precision: str = "f32",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    backend: str | None = None,
) -> DistContext:
    """Join the ``torchrun`` job described by the environment: initialise Taichi (``arch``, ``precision``)
    on this rank's device and the process group (``backend``: ``"nccl"`` for CUDA, ``"gloo"`` otherwise,
    unless given). ``timeout_s`` bounds every collective, so a hung peer fails the job instead of
    blocking it. Idempotent for the same job; raises ``RuntimeError`` outside ``torchrun``."""
    global _ctx
    if _ctx is not None:
        return _ctx
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"distributed training needs the torchrun environment; missing {', '.join(missing)}. "
            "Launch with: torchrun --nproc_per_node=N -m taichi_dp train karman --distributed ..."
        )
    if not (timeout_s > 0):
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
    if arch not in ("cpu", "cuda", "vulkan"):
        raise ValueError(f"arch must be 'cpu', 'cuda' or 'vulkan' in a distributed run (all ranks must agree), got {arch!r}")
    rank, world, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    if world < 1 or rank >= world:
        raise ValueError(f"RANK={rank} must be < WORLD_SIZE={world} (WORLD_SIZE >= 1)")
    if arch == "cuda":
        _pin_cuda_device(local_rank)
    rt = runtime.init(arch, precision)
    if backend is None:
        backend = "nccl" if rt.arch == "cuda" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl" and rt.arch != "cuda":
        raise ValueError(f"backend='nccl' needs arch='cuda', but Taichi runs on {rt.arch!r}; use backend='gloo'")
    if rt.arch == "cuda":
        torch.cuda.set_device(rt.device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=rt.device if backend == "nccl" else None,
        )
    _ctx = DistContext(rank, world, local_rank, backend, rt.device, float(timeout_s))
    return _ctx


def teardown() -> None:
    """Leave the process group (no-op when none was joined)."""
    global _ctx
    if dist.is_available() and dist.is_initialized():
        try:  # leave together: a rank tearing down while a peer still talks to it can abort in gloo's threads
            dist.barrier()
        except RuntimeError:
            pass  # a peer is already gone: nothing to wait for
        dist.destroy_process_group()
    _ctx = None


def context() -> DistContext | None:
    """The context of :func:`setup`, or ``None`` in a single-process run."""
    return _ctx


def is_distributed() -> bool:
    """Whether this process is one of several ranks of an initialised process group (and not inside
    :func:`single_process`)."""
    return _alone == 0 and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Work one rank does alone (e.g. rank 0's evaluation): inside the block the data helpers and the
    trainer behave as in a single-process run and issue no collectives (which would wait for peers
    that never join)."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks in the job (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files (rank 0, or the only process)."""
    return rank() == 0


def _device_ids() -> list[int] | None:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return [torch.cuda.current_device()]
    return None


def barrier() -> None:
    """Wait for every rank (bounded by the process-group timeout); no-op when not distributed."""
    if is_distributed():
        dist.barrier(device_ids=_device_ids())


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over all ranks (a new tensor on ``x``'s device); ``x`` itself when not distributed."""
    if not is_distributed():
        return x
    y = x.detach().to(_collective_device(), copy=True)
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y.to(x.device)


def broadcast_from_main(values: Sequence[float]) -> list[float]:
    """Rank 0's ``values`` on every rank (float64; used for decisions all ranks must share)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.broadcast(t, src=0)
    return t.cpu().tolist()


def all_gather_objects(obj: T) -> list[T]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (pickled; for small/medium CPU data)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of a global batch of indices (``torch.tensor_split`` order: the first
    ``len % world`` ranks get one more); the whole batch when not distributed."""
    if not is_distributed():
        return indices
    return torch.tensor_split(indices, world_size())[rank()]


def shard_range(n: int) -> range:
    """This rank's contiguous slice of ``range(n)`` (same split as :func:`shard`; may be empty)."""
    if not is_distributed():
        return range(n)
    w, r = world_size(), rank()
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return range(start, start + base + (1 if r < extra else 0))


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when distributed (parameters
    broadcast from rank 0, gradients averaged over ranks in backward), else ``model`` unchanged.

    Buffers are not re-broadcast at every forward (``forward_sync_buffers=False``): the hybrid models'
    buffers are constant masks, and a SOL-k loss calls the model k times per update.
    """
    if not is_distributed() or isinstance(model, DistributedDataParallel):
        return model
    ids = _device_ids()
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None, forward_sync_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (``model`` itself otherwise): what checkpoints store."""
    return model.module if isinstance(model, DistributedDataParallel) else model


_PEER_FAILURE_MARKERS = ("gloo", "nccl", "connection", "timed out", "timeout", "processgroup", "peer")


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is a failed collective (a peer died, hung past the timeout, or the network broke):
    c10d's ``DistError`` family, or the ``RuntimeError`` gloo raises (``Connection reset by peer``, ...)."""
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in _PEER_FAILURE_MARKERS)


def is_wrapped(model: nn.Module) -> bool:
    """Whether ``model`` is a DDP wrapper."""
    return isinstance(model, DistributedDataParallel)
