"""Run one job in a spawned child process: its memory (TensorFlow, a retrain's arrays) goes back
to the system when it ends, and the child dies with the worker.

`spawn`, not `fork`: the worker has threads (and, on a GPU, TensorFlow), which a fork would copy
in an unknown state. Progress events stream back through a pipe while the job runs.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from worker import memory

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.2


class ChildDied(RuntimeError):
    """The child process ended without a result (killed, or out of memory)."""


def _die_with_parent(parent: int) -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _child(parent: int, target: str, args: tuple[Any, ...], events: Connection) -> None:
    _die_with_parent(parent)
    try:
        module, name = target.split(":")
        job = getattr(importlib.import_module(module), name)
        result = job(*args, lambda event: events.send(("event", event)))
    except BaseException as exc:  # handed to the parent, which raises it
        events.send(("error", exc))
    else:
        events.send(("result", result))
    finally:
        events.close()


def run(target: str, args: tuple[Any, ...], on_event: Callable[[Any], None]) -> Any:
    """`job(*args, emit)` in a child, `target` naming the job as "module:function"; each
    `emit(event)` calls `on_event(event)` here.

    Only the child imports the job's module, so what it imports (TensorFlow) stays out of this
    process. Returns what the job returned, or raises what it raised (its arguments, events and
    result must pickle).
    """
    context = multiprocessing.get_context("spawn")
    # A pipe, not a queue: a queue's semaphores would keep multiprocessing's resource tracker
    # busy, and it is stopped once no child runs (worker/memory.py).
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child, args=(os.getpid(), target, args, sender), name="breedbot-job", daemon=True
    )
    memory.child_started()
    process.start()
    sender.close()  # the child's end: EOF here once the child is gone
    try:
        while True:
            try:
                if not receiver.poll(POLL_SECONDS):
                    continue
                kind, value = receiver.recv()
            except EOFError:  # gone without a word
                process.join(timeout=10)
                code = process.exitcode
                raise ChildDied(f"the job's process ended with code {code}") from None
            if kind == "event":
                on_event(value)
            elif kind == "error":
                raise value
            else:
                return value
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()
        receiver.close()
        memory.child_ended()
