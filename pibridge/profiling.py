"""cProfile for every thread of a process, for performance work (not used in normal runs).

(Named cProfile, never "profile": a profile in pibridge is a TOML profile.)
``PIBRIDGE_CPROFILE=/path/stats.prof pibridge emulator serve …`` profiles the serve process: each
thread started meanwhile (the core's channel thread, the mosquitto log reader) gets its own
profiler, and on exit the merged statistics go to the file (read them with ``python -m pstats``
or snakeviz). cProfile slows the profiled code down ~2x; compare shares, not absolute times.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import threading
from collections.abc import Iterator
from pathlib import Path

#: Environment variable naming the stats file; unset or empty: no profiling.
CPROFILE_ENV = "PIBRIDGE_CPROFILE"


@contextlib.contextmanager
def profile_threads(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Profile the calling thread and every thread started inside the block; dump to ``path``."""
    if not path:
        yield
        return
    finished: list[cProfile.Profile] = []
    lock = threading.Lock()
    original_run = threading.Thread.run

    def profiled_run(thread: threading.Thread) -> None:
        profile = cProfile.Profile()
        try:
            profile.runcall(original_run, thread)
        finally:
            with lock:
                finished.append(profile)

    main = cProfile.Profile()
    setattr(threading.Thread, "run", profiled_run)  # noqa: B010 (replacing a method is the point)
    main.enable()
    try:
        yield
    finally:
        main.disable()
        setattr(threading.Thread, "run", original_run)  # noqa: B010
        stats = pstats.Stats(main)
        with lock:  # threads still running (daemons) are left out: a live profile cannot be read
            for profile in finished:
                with contextlib.suppress(TypeError):  # a thread that made no calls
                    stats.add(profile)
        stats.dump_stats(Path(path))
