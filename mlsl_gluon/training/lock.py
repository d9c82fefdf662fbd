"""One process per run folder: a lock file that a killed process does not leave behind for ever.

``OUT/LOCK`` is created with ``O_CREAT | O_EXCL`` (atomic, also on NFS v3+) and holds the owner's
host name, PID and process start time as JSON. A second process on the same folder reads it:

- owner on this host and still alive: refused at once ("<out> is in use by PID n on host h");
- owner on this host but gone (no such PID, or the PID now belongs to a younger process): the
  lock is stale and taken over, with a warning;
- owner on another host: its liveness cannot be checked from here, so the run is refused unless
  the caller passes ``break_foreign=True`` (``train --break-lock``) after making sure it is gone.

``fcntl.flock`` would free itself when the owner dies, but it is not reliable across hosts on
network file systems, where run folders of multi-host training live; hence the PID record.
"""
import json
import logging
import os
import socket
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_NAME = "LOCK"
# An empty lock file younger than this is being written by its owner, not left by a killed one.
_CREATING_S = 10.0


class RunLockedError(RuntimeError):
    """The run folder is in use by another process (or holds another host's lock)."""


def _start_time(pid):
    """Start time of ``pid`` in clock ticks since boot (Linux), or None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19])


def _alive(pid, start_time):
    """Whether ``pid`` runs on this host and is the process that wrote the lock."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    current = _start_time(pid)
    return start_time is None or current is None or current == start_time


class RunLock:
    """Exclusive use of a run folder by this process, as a context manager.

    Parameters
    ----------
    folder : str or Path
        The run folder (created if missing).
    break_foreign : bool
        Take over a lock written on another host (whose process cannot be checked from here).

    Raises
    ------
    RunLockedError
        On entering, when a live process (or another host's process) holds the folder.
    """

    def __init__(self, folder, break_foreign=False):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.break_foreign = break_foreign
        self.held = False

    def _record(self):
        pid = os.getpid()
        return {"pid": pid, "host": socket.gethostname(), "start_time": _start_time(pid),
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}

    def read(self):
        """The owner's record, or None when there is no (readable) lock file."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Killed between creating and writing the file: an empty or partial record.
            return {}

    def acquire(self):
        """Take the lock (see the class docstring for stale and foreign locks)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._clear_stale(self.read())
                continue
            with os.fdopen(fd, "w") as stream:
                json.dump(self._record(), stream)
            self.held = True
            return self
        raise RunLockedError(f"{self.folder}: could not take {self.path} (another process keeps "
                             "taking it); run one command per --out at a time")

    def _clear_stale(self, owner):
        if owner is None:
            return  # released meanwhile
        if not owner and self._age() < _CREATING_S:
            raise RunLockedError(f"{self.folder} is being taken by another process just now ({self.path}); "
                                 "run one command per --out at a time")
        host, pid = owner.get("host"), owner.get("pid")
        here = socket.gethostname()
        if host == here and isinstance(pid, int):
            if pid != os.getpid() and _alive(pid, owner.get("start_time")):
                raise RunLockedError(
                    f"{self.folder} is in use by PID {pid} on host {host} (since {owner.get('since')}); "
                    "wait for it to finish or stop it, or use another --out")
            logger.warning("%s: taking over the lock of PID %s on %s, which is no longer running",
                           self.path, pid, host)
        elif host is not None and not self.break_foreign:
            raise RunLockedError(
                f"{self.folder} is in use by PID {pid} on host {host} (since {owner.get('since')}); "
                f"that host's processes cannot be checked from {here}: if it is no longer running "
                "there, pass --break-lock")
        else:
            logger.warning("%s: removing the lock %s", self.path, owner or "(empty record)")
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _age(self):
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return float("inf")

    def release(self):
        """Remove the lock file if this process holds it."""
        if self.held:
            owner = self.read()
            if owner and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
