"""Keep large message buffers on the heap: an agent receives and sends activations of
hundreds of kilobytes many times a second.

With glibc's defaults, a block above 128 kB is mapped fresh for every allocation and
unmapped (or the heap trimmed) when it is freed, so the pages of every large message
fault in again: paho's parsing of one 600 kB publish (a few copies of it) took 1.7 ms
instead of 0.3 ms here. :func:`keep_large_buffers` raises both thresholds once, at the
agent's entry point (``splitmq agent``); Mosquitto gets the same settings from its
environment (:data:`splitmq.mosquitto.MALLOC_TUNABLES`). Elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""Blocks below this come from the heap (glibc's ceiling for the setting is 32 MiB)."""
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024
"""Free memory kept at the top of the heap before it is given back to the system."""


def keep_large_buffers() -> bool:
    """Set glibc's mmap and trim thresholds for this process; whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # musl and others: mallopt is absent or does nothing
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = int(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) == 1
    done = int(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) == 1 and done
    if not done:
        log.debug("mallopt refused the thresholds: large buffers stay mapped")
    return done
