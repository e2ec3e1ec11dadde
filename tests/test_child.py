"""worker/child.py: a job in a spawned child streams events back, returns or raises, and dies
with its parent. No TensorFlow: the jobs here are tiny."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

import contract
from worker import child

REPO = Path(__file__).resolve().parents[1]


def counting(n: int, emit: Callable[[int], None]) -> dict[str, int]:
    """Emit 0..n-1, then return the child's pid."""
    for i in range(n):
        emit(i)
    return {"pid": os.getpid()}


def refusing(emit: Callable[[str], None]) -> None:
    """Refuse, as a retrain on a bad dataset does."""
    emit("started")
    raise contract.Refused("too few images", "too_few_images", {"min": 3})


def dying(emit: Callable[[str], None]) -> None:
    """Die without a word, as an out-of-memory kill does."""
    os._exit(3)


def sleeping(seconds: float, emit: Callable[[int], None]) -> None:
    """Say which pid sleeps, then sleep."""
    emit(os.getpid())
    time.sleep(seconds)


def test_events_stream_back_and_the_result_returns() -> None:
    seen: list[int] = []
    result = child.run("tests.test_child:counting", (5,), seen.append)
    assert seen == [0, 1, 2, 3, 4]
    assert result["pid"] != os.getpid() and not psutil.pid_exists(result["pid"])


def test_a_refusal_is_raised_here_with_its_code() -> None:
    seen: list[str] = []
    with pytest.raises(contract.Refused) as refused:
        child.run("tests.test_child:refusing", (), seen.append)
    assert seen == ["started"]
    assert (refused.value.problem, refused.value.params) == ("too_few_images", {"min": 3})


def test_a_child_that_dies_is_reported() -> None:
    with pytest.raises(child.ChildDied, match="code 3"):
        child.run("tests.test_child:dying", (), lambda _: None)


def test_the_child_dies_with_its_parent() -> None:
    """SIGKILL the process that started the job: the job's process goes too."""
    code = (
        "from worker import child\n"
        "child.run('tests.test_child:sleeping', (60,), lambda pid: print(pid, flush=True))\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    assert psutil.pid_exists(grandchild)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(grandchild) and psutil.Process(grandchild).status() != "zombie":
        assert time.monotonic() < deadline, "the job's process outlived its parent"
        time.sleep(0.05)


def test_no_resource_tracker_is_left_once_the_job_ends() -> None:
    """multiprocessing's tracker (13 MB) started for the child goes once no child runs."""

    def trackers() -> list[psutil.Process]:
        return [
            c for c in psutil.Process().children()
            if "resource_tracker" in " ".join(c.cmdline())
        ]  # fmt: skip

    child.run("tests.test_child:counting", (1,), lambda _: None)
    assert trackers() == []
    child.run("tests.test_child:counting", (1,), lambda _: None)  # a new one starts, and goes
    assert trackers() == []
