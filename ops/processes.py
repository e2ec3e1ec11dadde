"""Child processes that never outlive their parent and stop as a whole process group."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: Linux sends it SIGTERM when the parent dies.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Popen in a new session (its own process group) that dies with this process."""
    return subprocess.Popen(  # type: ignore[call-overload]
        argv,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        **kwargs,
    )


def terminate_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, without waiting."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM the child's process group, SIGKILL what is left after `timeout`; True if clean."""
    terminate_group(process)
    return reap_group(process, timeout)


def reap_group(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to `timeout` for a terminated child, then SIGKILL its group; True if clean."""
    clean = True
    try:
        process.wait(max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        clean = False
    # The group may still hold grandchildren (a worker's pool, say) after the leader exited.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return clean
