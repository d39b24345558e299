"""Children that do not outlive the process that started them.

A process that is killed with SIGKILL runs no cleanup: the processes it started keep
running, reparented to init. On Linux a child can ask the kernel for a signal when its
parent dies (``prctl(PR_SET_PDEATHSIG)``); :func:`die_with_parent` is a ``preexec_fn``
for :class:`subprocess.Popen` that asks for SIGTERM, so a broker, a coordinator or an
agent stops the way it stops on ``kill``, whatever became of its parent.

The kernel sends that signal when the *thread* that forked the child ends: start
children from a thread that lives as long as the parent (the main thread). Elsewhere
than Linux :func:`die_with_parent` is None and children are not bound to their parent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from functools import cache

PR_SET_PDEATHSIG = 1
"""``<linux/prctl.h>``: the signal a process gets when its parent dies."""


@cache
def _prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.prctl
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_ulong]
    function.restype = ctypes.c_int
    prctl: Callable[[int, int], int] = function
    return prctl


def _bind_to_parent(prctl: Callable[[int, int], int], parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: only a C call, a getppid and maybe a kill (it runs after fork)."""

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the call: nobody will tell us
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` binding a child to this process (SIGTERM when it dies); None off Linux.

    Call it in the parent, when starting the child: it resolves ``prctl`` and notes the
    parent's pid there, so the child runs no lookup between fork and exec.
    """
    prctl = _prctl()
    return None if prctl is None else _bind_to_parent(prctl, os.getpid())
