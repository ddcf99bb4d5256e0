"""The inventory probe: notices an agent that lost our sensors while we run.

The full reconciliation runs every ``inventory_check`` (1 h by default), but an agent whose
inventory is lost while we run (a wipe, a reinstall) accepts pushes to our old ids and files them
under sensors it creates implicitly, named by their ids. So every `INVENTORY_PROBE_S`, while
samples were acknowledged since the last good probe, one ``list_sensors`` is compared with the
verified ids (each sensor listed, under its name, with its metrics). A mismatch is reported to
delivery, which closes the push gate and reconciles at once; the samples acknowledged since the
last good probe are reported in one warning (they may sit under those nameless sensors).

A lost inventory is noticed within `INVENTORY_PROBE_S` plus one answer of the first
acknowledgement after it; with nothing acknowledged there is nothing it could have misfiled, and
no probe is sent (an idle bridge sends none between two samples).

Runs on the delivery thread only: `send` and `answered` are called there (the answer's future
hands its result over through delivery's inbox).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future

from pibridge.agent import AgentClient, AgentError, Reply
from pibridge.bridge.inventory import ResolvedInventory

log = logging.getLogger("pibridge.bridge.delivery")  # delivery's lines, named as before the split

#: Seconds between two inventory probes (sent only while samples were acknowledged since the last
#: good one): the bound on how long a live wipe at the agent goes unnoticed once samples are pushed.
INVENTORY_PROBE_S = 30.0

#: What `InventoryProbe.send` calls with the answer's future (on the thread that resolves it).
AnswerHandler = Callable[[AgentClient, ResolvedInventory, "Future[Reply]"], None]


class InventoryProbe:
    """When to send the next probe, and what its answer means (see the module docstring)."""

    def __init__(self, every_s: float = INVENTORY_PROBE_S) -> None:
        self.every_s = every_s
        self.due_at = 0.0  # monotonic
        self.answered_count = 0
        self._probing: ResolvedInventory | None = None  # the inventory a probe in flight checks
        self._acked_since: dict[str, int] = {}  # sensor name → acknowledged since the last good probe
        self._ok_at = time.time()  # wall clock of the last good probe (for the warning)

    def acknowledged(self, sensor: str) -> None:
        """One sample of ``sensor`` was acknowledged: the next probe has something to check."""
        self._acked_since[sensor] = self._acked_since.get(sensor, 0) + 1

    def listed(self, now: float) -> None:
        """A reconciliation just listed the agent's sensors: the next probe is one period away."""
        self.due_at = now + self.every_s

    def wanted(self) -> bool:
        """Whether a probe would be sent once `due_at` comes: none in flight, and something acknowledged."""
        return self._probing is None and bool(self._acked_since)

    def send(self, client: AgentClient, resolved: ResolvedInventory, on_answer: AnswerHandler) -> None:
        """Send one list_sensors to compare with ``resolved``; ``on_answer(client, resolved, future)``
        gets its future once answered (hand it to the delivery thread, then call `answered`)."""
        self.due_at = time.monotonic() + self.every_s
        try:
            future = client.list_sensors_async()
        except AgentError as exc:
            log.debug("inventory probe not sent: %s", exc)
            return
        self._probing = resolved
        future.add_done_callback(lambda done: on_answer(client, resolved, done))

    def answered(self, resolved: ResolvedInventory, future: Future[Reply], *, current: bool) -> list[str]:
        """The names of the sensors of ``resolved`` the agent no longer holds as registered
        (logged once, with how many samples may be misfiled); empty when none, when ``current`` is
        False (the client or inventory changed since) or when it got no answer (a timeout drops
        the connection, and the next one reconciles)."""
        self._probing = None
        if not current or future.exception() is not None:
            return []
        listing = future.result().value
        listed = {str(s.get("sensorId")): s for s in listing if isinstance(s, dict)}
        lost = []
        for name, sensor_id in resolved.sensors.items():
            entry = listed.get(sensor_id)
            metric_ids = {str(m.get("metricId")) for m in entry.get("metrics", []) if isinstance(m, dict)} \
                if entry is not None else set()
            ours = {mid for (sensor, _, _), mid in resolved.metrics.items() if sensor == name}
            # created implicitly under our id (agent-api.md §4: name = id): the inventory was lost.
            # Any other name is a rename in the portal: not a loss (the next reconciliation puts
            # a profile sensor's name back, and a sensor only queued keeps the user's)
            recreated = entry is not None and entry.get("name") == sensor_id != name
            if entry is None or recreated or not ours <= metric_ids:
                lost.append(name)
        self.answered_count += 1
        if lost:
            exposed = sum(self._acked_since.get(name, 0) for name in lost)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._ok_at))
            log.warning("the agent no longer holds %d of our sensors as registered (%s; e.g. its inventory "
                        "was wiped): registering them again; %d samples of them acknowledged since %s may "
                        "have been filed under sensors the agent created implicitly under the old ids",
                        len(lost), ", ".join(sorted(lost)), exposed, since)
        self._acked_since = {}
        self._ok_at = time.time()
        return lost
