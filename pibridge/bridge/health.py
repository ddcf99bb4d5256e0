"""One sensor's health as the scheduler sees it: whether it is failing (and how, since when),
when to tell the agent again, and how long to wait before rebuilding a driver that could not be
built.

    fine ──failure──▶ failing(kind) ──same kind──▶ reported again after `ERROR_REPEAT_S`
      ▲                     │ ──other kind──▶ failing(other kind), reported at once
      └─────a reading───────┘

A change of state is logged once (a warning when it starts failing or fails differently, info
when it recovers); the agent hears of each change and, while it lasts, every `ERROR_REPEAT_S`.
"""

from __future__ import annotations

import logging

#: the scheduler's logger: these lines are the scheduler's to a reader of the log
log = logging.getLogger("pibridge.bridge.scheduler")

#: While a sensor keeps failing, its error is reported to the agent again this often (seconds).
ERROR_REPEAT_S = 600.0
#: Rebuilding a driver that could not be built: first wait, factor, cap (seconds).
REBUILD_FIRST_S = 2.0
REBUILD_FACTOR = 2.0
REBUILD_MAX_S = 300.0


class SensorHealth:
    """``failing``: the kind of the current failure (an exception's class name, ``"Hung"``,
    ``"Build:…"``), None while fine; ``failing_since``: wall-clock seconds it began;
    ``last_error``: the newest failure's text (kept after recovery, for ``pibridge status``)."""

    def __init__(self, name: str, rebuild_first_s: float = REBUILD_FIRST_S) -> None:
        self.name = name
        self.failing: str | None = None
        self.failing_since: float | None = None
        self.last_error = ""
        self._reported_mono = 0.0
        self._rebuild_first_s = rebuild_first_s
        self._rebuild_delay_s = rebuild_first_s

    def failed(self, kind: str, text: str, now_mono: float, now_wall: float) -> bool:
        """One failure of ``kind``; True when the agent should hear of it now (a new or different
        failure, or the same one `ERROR_REPEAT_S` after it was last reported)."""
        self.last_error = text
        if self.failing == kind and now_mono - self._reported_mono < ERROR_REPEAT_S:
            return False
        if self.failing != kind:
            log.warning("sensor %s: failing: %s", self.name, text)
            if self.failing is None:
                self.failing_since = now_wall
        self.failing = kind
        self._reported_mono = now_mono
        return True

    def recovered(self) -> None:
        """A reading (or a build, after build failures) succeeded."""
        if self.failing is None:
            return
        log.info("sensor %s: recovered", self.name)
        self.failing, self.failing_since = None, None

    def next_rebuild_s(self) -> float:
        """Seconds to wait before the next build after a failed one (doubling up to the cap)."""
        delay = self._rebuild_delay_s
        self._rebuild_delay_s = min(REBUILD_MAX_S, delay * REBUILD_FACTOR)
        return delay

    def built(self) -> None:
        """The driver was built: the next failed build waits the first delay again."""
        self._rebuild_delay_s = self._rebuild_first_s
