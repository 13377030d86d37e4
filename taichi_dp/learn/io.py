"""Run-folder I/O: every file is written atomically (write to a temporary file, then rename), so an
interrupted run never leaves a half-written report or checkpoint behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` to ``path``."""

    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return _atomic(path, w)


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_run_config(run_dir: str | Path, command: str) -> dict[str, Any]:
    """The parsed ``config.json`` of a run folder written by ``python -m taichi_dp {command}``; raises
    ``FileNotFoundError`` (naming the command that makes such a folder) or ``ValueError`` (unreadable JSON)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a 'python -m taichi_dp {command}' run folder?")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is corrupt or from another experiment: {e}") from None


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> Path:
    """Atomically ``torch.save`` a dict of tensors/plain values (loadable with ``weights_only=True``)."""
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    Raises ``FileNotFoundError`` or ``ValueError`` with the path when it is missing or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format, unpickling refused, ...
        raise ValueError(f"checkpoint {path} is corrupt or not a taichi_dp checkpoint: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path} does not contain a dict (got {type(obj).__name__})")
    return obj


def save_figure(path: str | Path, fig: Any) -> Path:
    """Atomically save a matplotlib figure (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    suffix = Path(path).suffix.lstrip(".") or "png"
    out = _atomic(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return out
