"""Keep a long-running app's memory flat under concurrent use (glibc only; a no-op elsewhere).

Gradio runs handlers on a pool of up to 40 threads.  glibc gives threads their own malloc arenas
(up to 8 per core) and hands freed memory back to the system only from the top of each heap, so
the server's RSS creeps up with every burst of concurrent requests although no Python object
leaks.  ``benchmarks/load.py`` measured +611 MB over 240 requests with glibc's defaults and
+167 MB with two arenas; trimming the heaps now and then removes most of the rest (numbers in the
README's Reliability section).
"""
from __future__ import annotations

import ctypes
import functools
import sys
import threading

M_ARENA_MAX = -8  # mallopt parameter from glibc's malloc.h


@functools.cache  # loaded once; the trimmer asks every 15 s
def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    # musl and other C libraries have no malloc_trim
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def limit_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas for threads created from now on; True when it took effect."""
    libc = _glibc()
    return bool(libc and libc.mallopt(M_ARENA_MAX, count))


def trim() -> bool:
    """Return the free pages of every malloc heap to the system; True when some were released."""
    libc = _glibc()
    return bool(libc and libc.malloc_trim(0))


def start_trimmer(interval_s: float = 15.0) -> threading.Thread | None:
    """A daemon thread that calls :func:`trim` every ``interval_s`` seconds (a few ms each)."""
    if _glibc() is None:
        return None
    stop = threading.Event()

    def loop():
        while not stop.wait(interval_s):
            trim()

    thread = threading.Thread(target=loop, name="ferlab-malloc-trim", daemon=True)
    thread.start()
    return thread
