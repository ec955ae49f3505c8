"""Snakemake's directory lock after a kill -9: the same command runs again without `--unlock`.

Snakemake locks a working directory with files under `.snakemake/locks/` and removes them when it exits.
A killed Snakemake (kill -9, a lost node, an out-of-memory kill) leaves them behind, and the next run stops
with a LockException until someone runs `snakemake --unlock`. Snakemake cannot tell a stale lock from a live
one because its lock files name no process. So the workflow records its own: `onstart` (after Snakemake took
the lock) writes the main process's pid, host and start time to `.snakemake/pipeline-owner.json`, and the
next start, before Snakemake looks at the lock, removes the locks when that process has died. Locks are left
alone when the owner runs on another host (it cannot be asked), when it is still alive, or when no owner was
recorded (a lock taken by a Snakemake not running this workflow, or by a version before this file existed).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

OWNER_FILE = "pipeline-owner.json"


def record_owner(snakemake_dir: Path) -> None:
    """Called from `onstart`: this process holds the lock now."""
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid())}
    path = Path(snakemake_dir) / OWNER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(owner) + "\n")
    os.replace(tmp, path)


def forget_owner(snakemake_dir: Path) -> None:
    """Called from `onsuccess` / `onerror`: Snakemake releases its lock as it exits."""
    Path(snakemake_dir, OWNER_FILE).unlink(missing_ok=True)


def release_stale_locks(snakemake_dir: Path) -> str | None:
    """Remove the locks of a recorded owner that is no longer running on this host; returns a note saying
    so, or None when nothing was removed."""
    snakemake_dir = Path(snakemake_dir)
    locks, owner_path = snakemake_dir / "locks", snakemake_dir / OWNER_FILE
    if not owner_path.is_file():
        return None
    try:
        owner = json.loads(owner_path.read_text())
        pid, host, started = int(owner["pid"]), str(owner["host"]), owner.get("started")
    except (ValueError, KeyError, TypeError):
        return None  # half-written or foreign: leave the lock to Snakemake's own message
    if host != socket.gethostname() or _running(pid, started):
        return None
    had_locks = locks.is_dir() and any(locks.iterdir())
    shutil.rmtree(locks, ignore_errors=True)
    owner_path.unlink(missing_ok=True)
    if not had_locks:
        return None
    return f"removed the stale lock of Snakemake process {pid}, which stopped without releasing it (killed?)"


def _running(pid: int, started: float | None) -> bool:
    """Whether `pid` is alive and is the process that was recorded (pids are reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process holds the pid: not ours to judge
    return started is None or _start_time(pid) in (None, started)


def _start_time(pid: int) -> float | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count from its closing parenthesis.
    return float(stat.rsplit(")", 1)[1].split()[19])
