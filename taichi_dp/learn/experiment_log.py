"""Experiment logging (``--log tensorboard``): training curves, validation errors and images of a run.

Off by default and never required: :func:`make_log` with ``"none"`` gives a no-op :class:`ExperimentLog`
that imports nothing and hands the trainer no callback, so a run without logging takes exactly the code
path it took before logging existed. ``"tensorboard"`` writes TensorBoard event files through
``torch.utils.tensorboard`` (the ``tensorboard`` package: ``pip install taichi_dp[log]``) under
``RUN_DIR/tensorboard/<sub-run>/``, one sub-run per trained model (e.g. ``NON``, ``SOL-8``, or
``updates/seed0/SOL-4``) so that their curves overlay in one chart::

    tensorboard --logdir RUN_DIR/tensorboard

Steps count completed updates: ``train/loss`` at step ``i`` is the loss of the mini-batch evaluated after
``i`` updates (``TrainResult.losses[i]``), and validation values are logged at step = the number of updates
the evaluated model received. A sub-run writes its first event with a purge marker at that step when the
step is > 0 (a resumed session), so TensorBoard drops what an interrupted earlier session logged from there on
instead of drawing the replayed steps twice.

The logging option is not part of a run's configuration: it does not change the result (with the
``wall`` protocol of the karman study the few microseconds per update spent writing scalars count towards
the time budget, like any other load on the machine).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .trainer import TrainResult

LOG_KINDS = ("none", "tensorboard")
"""The values of ``--log`` (``log=`` of the experiments' ``run``)."""

LOG_FOLDER = "tensorboard"
"""The folder of a run folder that holds the TensorBoard sub-runs."""


class RunLog:
    """The log of one sub-run (one trained model). This base class is the no-op one."""

    enabled = False

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Record ``value`` for ``tag`` at ``step`` (no-op here)."""

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Record every ``{tag: value}`` at ``step``."""
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """Record an RGB image ``(3, H, W)`` with values in ``[0, 1]`` (see :func:`colour_image`) (no-op here)."""

    def training_callback(self, offset: int = 0) -> Callable[[int, TrainResult], None] | None:
        """The ``callback`` for :func:`taichi_dp.learn.trainer.train` that logs ``train/loss`` and ``train/lr`` at
        step ``offset + iteration`` (``offset``: updates of earlier training stages of the same model), or
        ``None`` when nothing is logged (the trainer then runs exactly as without logging)."""
        if not self.enabled:
            return None

        def callback(iteration: int, result: TrainResult) -> None:
            self.scalars({"train/loss": result.losses[-1], "train/lr": result.learning_rate}, offset + iteration)

        return callback

    def close(self) -> None:
        """Flush and close (no-op here)."""


class ExperimentLog:
    """The log of a run folder: one :class:`RunLog` per sub-run name. This base class is the no-op one."""

    enabled = False

    def run(self, name: str) -> RunLog:
        """The log of sub-run ``name`` (the same object for the same name until :meth:`close`)."""
        return RunLog()

    def close(self) -> None:
        """Flush and close every sub-run."""

    def __enter__(self) -> ExperimentLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summary_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or a RuntimeError saying which extra to install."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard's own error does not name the package to install)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise RuntimeError(
            f"--log tensorboard needs the tensorboard package ({e}): pip install 'taichi_dp[log]' (or: pip install tensorboard)"
        ) from None
    return SummaryWriter


class TensorBoardRunLog(RunLog):
    """One TensorBoard sub-run folder; the event file is opened at the first record (with a purge marker at
    that step when it is > 0, see the module docstring)."""

    enabled = True

    def __init__(self, folder: str | Path, writer_class: Any) -> None:
        self.folder = Path(folder)
        self._writer_class = writer_class
        self._writer: Any = None

    def _writer_at(self, step: int) -> Any:
        if self._writer is None:
            self._writer = self._writer_class(str(self.folder), purge_step=step if step > 0 else None)
        return self._writer

    def scalar(self, tag: str, value: float, step: int) -> None:
        value = float(value)
        if not math.isfinite(value):
            return  # the trainer stops on a non-finite loss; a NaN error curve would hide the finite points
        self._writer_at(step).add_scalar(tag, value, step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be an RGB tensor (3, H, W), got shape {tuple(image.shape)}")
        self._writer_at(step).add_image(tag, image.detach().float().clamp(0, 1).cpu().numpy(), step, dataformats="CHW")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class TensorBoardLog(ExperimentLog):
    """Sub-runs under ``folder`` (normally ``RUN_DIR/tensorboard``)."""

    enabled = True

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._writer_class = _summary_writer_class()
        self._runs: dict[str, TensorBoardRunLog] = {}

    def run(self, name: str) -> RunLog:
        if name not in self._runs:
            self._runs[name] = TensorBoardRunLog(self.folder / name, self._writer_class)
        return self._runs[name]

    def close(self) -> None:
        for log in self._runs.values():
            log.close()
        self._runs.clear()


def make_log(kind: str, run_dir: str | Path) -> ExperimentLog:
    """The experiment log ``kind`` (one of :data:`LOG_KINDS`) of the run folder ``run_dir``: ``"none"`` is a
    no-op that imports nothing; ``"tensorboard"`` writes under ``run_dir/tensorboard/`` (RuntimeError naming
    the extra to install when the ``tensorboard`` package is missing, before any work)."""
    if kind == "none":
        return ExperimentLog()
    if kind == "tensorboard":
        return TensorBoardLog(Path(run_dir) / LOG_FOLDER)
    raise ValueError(f"log must be one of {', '.join(LOG_KINDS)}, got {kind!r}")


def colour_image(field: torch.Tensor, vmax: float, cmap: str = "RdBu_r") -> torch.Tensor:
    """A 2D field ``(H, W)`` (row 0 at the bottom, as the plots draw it) as an RGB image ``(3, H, W)`` in
    ``[0, 1]``: values in ``[-vmax, vmax]`` mapped through the diverging colour map ``cmap``."""
    import matplotlib

    if field.dim() != 2:
        raise ValueError(f"field must be 2D (H, W), got shape {tuple(field.shape)}")
    scale = vmax if math.isfinite(vmax) and vmax > 0 else 1.0
    normalised = (field.detach().float().cpu().flip(0) / scale * 0.5 + 0.5).clamp(0, 1)
    rgba = matplotlib.colormaps[cmap](normalised.numpy())
    return torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float().contiguous()
