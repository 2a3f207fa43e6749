"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A run's artifacts belong together (summary.json beside the report.md rendered from it), so they are
written as a set: every file goes into a staging folder inside the output folder, a manifest written last
marks the set complete, then each file is renamed into place. A failure before the manifest (a full disk)
removes the staging folder and leaves the old set untouched. A crash after it (kill -9 during the
renames) is finished by the next writer to that folder (``recover_interrupted``), so the set becomes
all-new; one before it is discarded (all-old). Temporary names carry the writer's pid, so a later run
removes what a killed one left behind and never what a live one is writing.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import OutputError

_logger = logging.getLogger(__name__)

Writer = Callable[[IO[bytes]], object]  # what it returns (a byte count) is ignored
STAGING_PREFIX = ".accelport-staging.pid"
MANIFEST = "MANIFEST.json"
_PROBE_BYTES = 64 * 1024  # a full file system refuses this much; an almost full one is caught at write time
_TEMP_NAME = re.compile(r"^\..+\.pid(\d+)\.[^.]+\.tmp$")


def _write_file(path: Path, write: Writer) -> None:
    with open(path, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o666 & ~_current_umask())  # mkstemp/mkdtemp are private; results are ordinary files


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Writer) -> Path:
    """Write through ``write(fh)`` into a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _write_file(Path(tmp), write)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_set_atomic(out_dir: str | Path, writers: dict[str, Writer]) -> dict[str, Path]:
    """Write ``{file name: writer}`` into ``out_dir`` as one set: all files new, or (on failure) all old."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recover_interrupted(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}.", dir=out_dir))
    try:
        for name, write in writers.items():
            _write_file(staging / name, write)
        _write_file(staging / f".{MANIFEST}.tmp", lambda fh: fh.write(json.dumps(list(writers)).encode()))
        os.replace(staging / f".{MANIFEST}.tmp", staging / MANIFEST)  # the commit point
        _fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _finish(staging)
    return {name: out_dir / name for name in writers}


def write_artifact_set(out_dir: str | Path, writers: dict[str, Writer]) -> dict[str, Path]:
    """``write_set_atomic`` for a command's artifacts: a write that fails (a full disk) is an OutputError (exit 2)
    naming ``--out-dir``; the earlier set is whole."""
    try:
        return write_set_atomic(out_dir, writers)
    except OSError as exc:
        raise OutputError(f"--out-dir {out_dir}: cannot write the artifacts ({exc.strerror or exc}); nothing was "
                          "written") from None


def _finish(staging: Path) -> None:
    """Rename every file the manifest lists into the folder above (those already moved are skipped)."""
    out_dir = staging.parent
    for name in json.loads((staging / MANIFEST).read_text()):
        if (staging / name).exists():
            os.replace(staging / name, out_dir / name)
    _fsync_dir(out_dir)
    shutil.rmtree(staging)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def recover_interrupted(out_dir: str | Path) -> None:
    """Finish or discard what a killed writer left in ``out_dir``: committed sets roll forward, the rest goes."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    for entry in sorted(out_dir.iterdir()):
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir():
            pid = entry.name.removeprefix(STAGING_PREFIX).split(".")[0]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            if (entry / MANIFEST).is_file():
                _logger.warning("%s: finishing the artifact set of an interrupted run (pid %s)", out_dir, pid)
                _finish(entry)
            else:
                shutil.rmtree(entry, ignore_errors=True)
        elif (match := _TEMP_NAME.match(entry.name)) and entry.is_file() and not _pid_alive(int(match.group(1))):
            entry.unlink(missing_ok=True)


def check_writable_dir(path: str | Path, flag: str) -> None:
    """Refuse, before any compute, an output folder that is a file, lies under a file, is read-only or full.

    Nothing is created: the probe file goes into the folder, or into its nearest existing parent.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise OutputError(f"{flag} {path}: {where}, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".accelport-probe.pid{os.getpid()}.", suffix=".tmp", dir=existing)
        try:
            if os.write(fd, b"\0" * _PROBE_BYTES) != _PROBE_BYTES:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def text_writer(text: str) -> Writer:
    return lambda fh: fh.write(text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """``value`` with every NaN and infinity as ``None``: JSON has no such numbers, and the ``NaN`` token Python
    writes by default is refused by strict parsers (JavaScript's, ``jq --strict``); the counts of non-finite values
    sit beside the metrics (``nonfinite_*``), so ``null`` there means "not a number", never zero."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _utf8(value)
    if isinstance(value, dict):
        return {_utf8(key) if isinstance(key, str) else key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _utf8(text: str) -> str:
    """A file name that is not UTF-8 (undecodable bytes kept by Python as lone surrogates) with those bytes as
    ``\\xff``: a lone surrogate written as ``\\udcff`` is JSON that strict parsers refuse."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def json_writer(data: Any) -> Writer:
    """Standard JSON (non-finite numbers as ``null``, see ``json_safe``), indented for people."""
    return text_writer(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def npy_writer(array: Any) -> Writer:
    import numpy as np

    return lambda fh: np.save(fh, np.asarray(array))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, text_writer(text))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_atomic(path, json_writer(data))


def save_npy_atomic(path: str | Path, array: Any) -> Path:
    return write_atomic(path, npy_writer(array))
