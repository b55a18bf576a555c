"""One process per run folder: a lock file naming its holder (pid, host, start time).

The holder keeps an exclusive ``flock`` on the file for as long as it lives, so the kernel releases it
when the process dies however it dies (SIGKILL, OOM, power loss): a later process finds the file, gets the
lock, sees the dead holder's name in it and takes over. Where a file system has no ``flock`` (some cluster
file systems), the file's content decides: a holder on this host whose pid is gone is stale, a live pid or
another host is not (the message says which file to remove if that host's process is gone).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from lorma_exp.config import ConfigError

log = logging.getLogger(__name__)


class RunFolderLocked(ConfigError):
    """Another process is training in the run folder."""


def _holder_of(text: str) -> dict[str, Any]:
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive_here(holder: dict[str, Any]) -> bool:
    """Whether the holder is a live process of this host (unknown hosts count as alive: we cannot tell)."""
    if holder.get("host") != socket.gethostname():
        return bool(holder)
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {started})"


class RunLock:
    """The lock of one run folder's lock file: :meth:`acquire` at once or RunFolderLocked, then
    :meth:`release` (which removes the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock now, or raise RunFolderLocked naming its holder; a stale lock is taken over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._lock(descriptor)
            except BaseException:
                os.close(descriptor)
                raise
            if locked and self._still_the_file(descriptor):
                break
            os.close(descriptor)  # the holder removed the file meanwhile: lock the new one
        self._descriptor = descriptor
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(mine) + "\n").encode(), 0)

    def _lock(self, descriptor: int) -> bool:
        """True once this process holds the lock (raises RunFolderLocked when a live holder has it)."""
        holder = _holder_of(os.pread(descriptor, 4096, 0).decode(errors="replace"))
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._locked(holder) from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            if holder and holder.get("pid") != os.getpid() and _alive_here(holder):
                raise self._locked(holder) from None
        if holder:
            log.warning("%s: taking over the lock of %s, which has ended", self.path, _describe(holder))
        return True

    def _still_the_file(self, descriptor: int) -> bool:
        try:
            return os.fstat(descriptor).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _locked(self, holder: dict[str, Any]) -> RunFolderLocked:
        return RunFolderLocked(
            f"run_dir: {self.path.parent} is in use by {_describe(holder)}: one process per run folder. "
            f"Wait for it to end, or use another run_dir; if that process is gone, remove {self.path}."
        )

    def release(self) -> None:
        """Remove the lock file and let go of the lock."""
        if self._descriptor is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._descriptor)
        self._descriptor = None
