"""`limit_malloc_arenas`: glibc's arenas capped for ``pibridge run``, the environment's choice kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pibridge.memory import ARENA_ENV, limit_malloc_arenas


def _glibc() -> bool:
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return False
    return True


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_the_cap_is_set_on_glibc() -> None:
    code = "from pibridge.memory import limit_malloc_arenas\nprint(limit_malloc_arenas())"
    env = {k: v for k, v in os.environ.items() if k != ARENA_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "True"


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ARENA_ENV, "4")
    assert limit_malloc_arenas() is False
