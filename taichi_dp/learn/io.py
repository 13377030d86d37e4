"""Run-folder I/O: every file is written atomically (write to a temporary file, then rename), so an
interrupted run never leaves a half-written report or checkpoint behind, and every file that is read back
carries a SHA-256 digest recorded at write time and verified on read (bit rot, torn writes and edits are
refused with :class:`IntegrityError` naming the file).

- Checkpoints (``.pt``, :func:`save_checkpoint`): the digest is embedded in the file as its zip archive
  comment ``taichi_dp-sha256:<hex>`` (the digest of the file with an empty comment), so a checkpoint stays
  one atomically renamed file that ``torch.load`` and any zip tool still read.
- JSON files (:func:`write_json`): a sidecar ``<file>.sha256`` in ``sha256sum`` format. While a file is being
  replaced the sidecar lists the old and the new digest, so a crash between the two renames leaves a pair
  that still verifies.
- Files written before digests existed are loaded with a ``RuntimeWarning`` saying they are unverified
  (``unverified="warn"``, the default) or refused (``unverified="error"``); the data cache also carries a
  digest of all its members and checks that instead (``"ignore"``).

Temporary files are named ``.<name>.<host>-<pid>.<random>.tmp``; those left by a killed writer on this host
(its process is gone) are removed by the next write into the same folder (:func:`clean_stale_tmp`).
Written files get the usual permissions (``0666`` minus the umask), not ``mkstemp``'s ``0600``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import socket
import struct
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

_MAGIC = b"taichi_dp-sha256:"
_COMMENT_LEN = len(_MAGIC) + 64
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory signature (22 bytes + comment, at the end of the file)
_STALE_FOREIGN_S = 24 * 3600.0  # temporary files of other hosts are removed only when this old
Unverified = Literal["warn", "error", "ignore"]


class IntegrityError(ValueError):
    """A file the project wrote does not match the digest recorded when it was written (or has none)."""


# ----------------------------------------------------------------------------------------------- writing


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists
        return True
    return True


def _is_stale(tmp: Path, host: str) -> bool:
    """Whether ``tmp`` (``.<name>.<host>-<pid>.<random>.tmp``) was left by a writer that no longer runs."""
    try:
        owner = tmp.name.rsplit(".", 3)[-3]
        owner_host, pid = owner.rsplit("-", 1)
        if owner_host == host:
            return not _pid_alive(int(pid))
    except (ValueError, IndexError):
        pass  # not one of ours (or an older naming): only by age
    try:
        return time.time() - tmp.stat().st_mtime > _STALE_FOREIGN_S
    except OSError:
        return False


def clean_stale_tmp(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Remove the temporary files of killed atomic writes in ``folder`` (and below when ``recursive``); returns
    the removed paths. Temporary files of live writers (this host) and recent ones of other hosts are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = _host()
    removed = []
    for tmp in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        if tmp.is_file() and _is_stale(tmp, host):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """Write ``path`` through ``write(tmp)`` and an atomic rename; on any failure ``path`` is unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            full = OSError(f"no space left on device while writing {path} (not written; any previous version is intact)")
            full.errno = errno.ENOSPC
            raise full from e
        raise
    return path


def _write_bytes(tmp: str, data: bytes) -> None:
    """Write ``data`` to ``tmp`` with plain file I/O, so that a full disk is an ``OSError`` (ENOSPC), not a
    library's internal message."""
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` to ``path`` (no digest: for files that are only read by people)."""
    return _atomic(path, lambda tmp: _write_bytes(tmp, text.encode("utf-8")))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sidecar(path: str | Path) -> Path:
    """The digest file ``<path>.sha256`` of a file written by :func:`write_json`."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _recorded(path: Path) -> list[str] | None:
    """The digests listed in the sidecar of ``path`` (``None``: no sidecar)."""
    side = sidecar(path)
    if not side.is_file():
        return None
    try:
        lines = side.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{side} (the digest of {path}) is unreadable: {e}") from None
    return [line.split()[0] for line in lines if line.strip()]


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON with its digest in the sidecar ``<path>.sha256``."""
    path = Path(path)
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8")
    new = _sha256(data)
    try:
        old = (_recorded(path) or [])[:1] if path.is_file() else []
    except IntegrityError:
        old = []

    def listing(digests: list[str]) -> str:
        return "".join(f"{d}  {path.name}\n" for d in digests)

    _atomic(sidecar(path), lambda tmp: _write_bytes(tmp, listing([new, *old]).encode("ascii")))  # old or new
    _atomic(path, lambda tmp: _write_bytes(tmp, data))
    _atomic(sidecar(path), lambda tmp: _write_bytes(tmp, listing([new]).encode("ascii")))
    return path


def _unverified(path: Path, what: str, unverified: Unverified) -> None:
    if unverified == "ignore":
        return
    msg = f"{path} has no digest ({what}; written by an older taichi_dp?): its content cannot be verified"
    if unverified == "error":
        raise IntegrityError(msg)
    warnings.warn(f"{msg}; loading it unverified", RuntimeWarning, stacklevel=4)


def read_json(path: str | Path, *, unverified: Unverified = "warn") -> Any:
    """The parsed JSON file ``path`` after checking it against its sidecar digest; ``FileNotFoundError``
    when missing, :class:`IntegrityError` (a ``ValueError``) when damaged, ``ValueError`` when not JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    data = path.read_bytes()
    digests = _recorded(path)
    if digests is None:
        _unverified(path, f"no {sidecar(path).name}", unverified)
    elif _sha256(data) not in digests:
        raise IntegrityError(
            f"{path} is corrupt: damaged or modified, its content does not match the digest in {sidecar(path).name}"
        )
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is corrupt or from another experiment: {e}") from None


def read_run_config(run_dir: str | Path, command: str) -> dict[str, Any]:
    """The parsed, verified ``config.json`` of a run folder written by ``python -m taichi_dp {command}``; raises
    ``FileNotFoundError`` (naming the command that makes such a folder) or ``ValueError`` (damaged, not JSON,
    or not a JSON object)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a 'python -m taichi_dp {command}' run folder?")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is corrupt or from another experiment: expected a JSON object, got {type(raw).__name__}")
    return raw


def config_diff(saved: Any, current: Any, *, ignore: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    """Human-readable differences ``"field: saved X, now Y"`` between two JSON-like configurations (dotted
    field names; fields in ``ignore`` are skipped). A field absent from ``saved`` whose current value is an
    empty list is a setting added later and off (e.g. ``train.sweep``), not a difference."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in list(saved) + [k for k in current if k not in saved]:
            name = f"{prefix}{key}"
            if name in ignore or (key not in saved and current[key] == []):
                continue
            if key not in saved or key not in current:
                out.append(f"{name}: saved {saved.get(key, '(absent)')!r}, now {current.get(key, '(absent)')!r}")
            else:
                out += config_diff(saved[key], current[key], ignore=ignore, prefix=f"{name}.")
        return out
    return [] if saved == current else [f"{prefix.rstrip('.')}: saved {saved!r}, now {current!r}"]


def check_run_folder(out: str | Path, config: dict[str, Any], command: str, *, resume: bool, free: tuple[str, ...] = ()) -> bool:
    """Apply the overwrite rule of run folders before anything is written: ``False`` for a new run; ``True``
    when ``resume`` continues the run in ``out``, whose ``config.json`` must equal ``config`` except for the
    fields in ``free`` (dotted names of settings that do not change the result). ``FileExistsError`` for an
    existing run without ``resume``; ``ValueError`` naming every differing field."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} exists and is not a folder")
    if not (out / "config.json").is_file():
        if any(p.is_file() for p in (out / "checkpoints").rglob("*")):
            raise FileExistsError(f"{out} holds checkpoints/ but no config.json: choose another output folder")
        return False
    if not resume:
        raise FileExistsError(f"{out} already holds a run: pass resume=True (--resume) or choose another output folder")
    diff = config_diff(read_run_config(out, command), json.loads(json.dumps(config)), ignore=free)
    if diff:
        may = f" (only {', '.join(free)} may change)" if free else ""
        raise ValueError(
            f"{out}/config.json differs from this configuration: {'; '.join(diff)}; resume needs the same configuration{may}"
        )
    clean_stale_tmp(out, recursive=True)
    return True


# ----------------------------------------------------------------------------------------------- checkpoints


def _sealed(data: bytes) -> bytes:
    """The zip archive ``data`` (written by ``torch.save``) with its digest embedded as the archive comment."""
    eocd = data[-22:]
    if eocd[:4] != _EOCD or eocd[20:] != b"\0\0":
        raise ValueError("torch.save did not write a plain zip archive")
    return data[:-2] + struct.pack("<H", _COMMENT_LEN) + _MAGIC + _sha256(data).encode("ascii")


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> Path:
    """Atomically ``torch.save`` a dict of tensors/plain values (loadable with ``weights_only=True``) with its
    SHA-256 digest embedded (the zip comment). The archive is built in memory and written with plain file I/O
    (a full disk says so: ``OSError`` "no space left on device")."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = _sealed(buffer.getvalue())
    return _atomic(path, lambda tmp: _write_bytes(tmp, data))


def _verify_checkpoint(path: Path, data: bytes, unverified: Unverified) -> None:
    """Check the embedded digest of checkpoint bytes ``data``; :class:`IntegrityError` if it does not match."""
    if data[-22:-18] == _EOCD and data[-2:] == b"\0\0":
        _unverified(path, "no embedded digest", unverified)
        return
    body = len(data) - _COMMENT_LEN
    comment = data[body:]
    if (
        body < 22
        or data[body - 22 : body - 18] != _EOCD
        or data[body - 2 : body] != struct.pack("<H", _COMMENT_LEN)
        or not comment.startswith(_MAGIC)
    ):
        raise IntegrityError(f"checkpoint {path} is corrupt: damaged or truncated, its digest record is missing or broken")
    if _sha256(data[: body - 2] + b"\0\0").encode("ascii") != comment[len(_MAGIC) :]:
        raise IntegrityError(
            f"checkpoint {path} is corrupt: damaged (bit rot, a torn write or an edit), its content does not match the "
            "SHA-256 digest recorded when it was written"
        )


def load_checkpoint(path: str | Path, *, unverified: Unverified = "warn") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)`` after
    verifying its embedded digest.

    Raises ``FileNotFoundError`` when it is missing, :class:`IntegrityError` (a ``ValueError``) when it does
    not match its digest, ``ValueError`` naming the path when it is not a taichi_dp checkpoint. A file without
    a digest (older taichi_dp, plain ``torch.save``) is loaded with a warning (``unverified="warn"``),
    refused (``"error"``), or loaded silently for a caller that verifies the content itself (``"ignore"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    _verify_checkpoint(path, data, unverified)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # wrong format, unpickling refused, ...
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
