"""The C heap of a long-running process: `limit_malloc_arenas`.

glibc's malloc gives each thread that allocates while another holds the main arena an arena of
its own (up to eight per core), and every arena keeps the memory freed into it. Python's own
small objects live in pymalloc's pools, but OpenSSL, SQLite and Python's larger objects use
malloc, from the bridge's dozen threads: measured on ``pibridge run --simulate`` of the
greenhouse profile (x86_64, VmHWM), one arena for all keeps ~2.5 MB less resident than glibc's
default and ~0.6 MB less than two. The threads seldom allocate at once (they share the GIL; only
SQLite and TLS run without it, a few times a minute), so sharing costs nothing measurable.
``MALLOC_ARENA_MAX`` in the environment wins (glibc reads it at start).
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

#: ``mallopt`` parameter number of ``M_ARENA_MAX`` (glibc's malloc.h)
M_ARENA_MAX = -8
#: Arenas a bridge process keeps: the main one, shared by every thread.
BRIDGE_ARENAS = 1
ARENA_ENV = "MALLOC_ARENA_MAX"


def limit_malloc_arenas(arenas: int = BRIDGE_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (call before starting threads); True if set. A no-op
    off glibc (musl has no arenas) or when ``MALLOC_ARENA_MAX`` is set."""
    if os.environ.get(ARENA_ENV):
        return False
    try:
        os.confstr("CS_GNU_LIBC_VERSION")   # ValueError off glibc
        done = ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas) == 1
    except (ValueError, OSError, AttributeError):
        return False
    if not done:
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
    return done
