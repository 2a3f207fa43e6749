"""One job at a time per output folder: two accelport processes writing into one ``--out-dir`` interleaved their
journals (a later ``--resume`` counted the other sweep's points as its own) and silently replaced each other's
results. Each command holds an advisory lock (``flock``) on its folder from the moment its job is open until it
returns; a second process is refused with exit 2. Ranks after the first of a process group that the command joined
(eval and zoo under torchrun) write under rank 0's lock; a command that joins none (run, bench under torchrun, or a
launcher's stray ``RANK``) takes the lock in every process. Within one process, a command called by another in
the same thread (run's ``--layers-on-fail``) goes on under its lock; a command in another thread is refused like
another process. Where ``fcntl`` does not exist (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from .errors import OutputError

_F = TypeVar("_F", bound=Callable[..., Any])
_scope: ContextVar[contextlib.ExitStack | None] = ContextVar("accelport_job_scope", default=None)
# folder -> the thread whose job holds it: a command called by another in that thread goes on under the lock;
# another thread of this process is refused, naming this process (it used to go on: only the folder was recorded)
_held: dict[Path, int] = {}


def job_scope(function: _F) -> _F:
    """Decorates a command's API entry: the folder lock its job takes is released when it returns or raises."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            token = _scope.set(stack)
            try:
                return function(*args, **kwargs)
            finally:
                _scope.reset(token)
    return wrapper  # type: ignore[return-value]


def hold_out_dir(out_dir: str | Path, flag: str = "--out-dir") -> None:
    """Lock ``out_dir`` (created if missing) for the current command, or refuse it if another process holds it."""
    stack = _scope.get()
    if stack is None or _a_later_rank():
        return
    try:
        import fcntl
    except ImportError:
        return
    path = Path(out_dir).resolve()
    holder = _held.get(path)
    if holder == threading.get_ident():
        return
    if holder is not None:
        raise OutputError(f"{flag} {out_dir}: another accelport job of this process is writing there; wait for it to "
                          "finish or choose another folder")
    created = [folder for folder in (path, *path.parents) if not folder.exists()]  # leaf first
    try:
        path.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDONLY)
    except OSError as exc:  # checked up front (atomic.check_writable_dir), but the folder may have changed since
        raise OutputError(f"{flag} {out_dir}: cannot create or open it ({exc.strerror or exc})") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise OutputError(f"{flag} {out_dir}: another accelport process is writing there; wait for it to finish or "
                          "choose another folder") from None
    except OSError:  # a file system without locks: go on unlocked, as before
        os.close(descriptor)
        return
    _held[path] = threading.get_ident()
    stack.callback(_release, path, descriptor, created)


def _a_later_rank() -> bool:
    """This process joined a process group as a rank other than 0 (not merely has ``RANK`` set: torchrun and
    cluster launchers set it for commands that never join one, and each such process writes on its own)."""
    dist = sys.modules.get("torch.distributed")
    return bool(dist is not None and dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def _release(path: Path, descriptor: int, created: list[Path]) -> None:
    """Unlock; folders made for a job that then wrote nothing (it failed) are removed, from the leaf up: a failed run
    leaves nothing."""
    _held.pop(path, None)
    os.close(descriptor)  # closing the only descriptor releases the lock
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty (written to, or by someone else), or gone: nothing more to undo
            break

