"""Acknowledged = stored, whatever happens to the agent's answers (issue 20 §1; the argument is
in `pibridge.agent.pending`): the core's session dropped for a moment, the core paused past the
timeout, a lost list_sensors answer, injected errors under a flood, and a soak under random
answer faults (lost, late, duplicated, reordered, re-sent after the agent's reconnect) injected by
the emulator."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_helpers import raw_session, settings_for
from test_bridge_delivery import AIR, DOOR, T0_MS, WAIT_S, Bridge, air, values_of

from pibridge import protocol
from pibridge.agent import AgentClient, AgentSettings, RequestTimeout, provision
from pibridge.bridge.model import MetricSpec, SensorSpec, TakenSample
from pibridge.mqtt import Backoff, NotConnected
from pibridge.protocol import Op
from pibridge.testing import Emulator

FAST = Backoff(initial=0.05, cap=0.5)
#: The small soak of the suite; PIBRIDGE_SOAK_ANSWER_FAULTS=N runs N samples (the closing note's
#: figure: N = 15000, with ``--timeout 1800``).
SOAK_SAMPLES = int(os.environ.get("PIBRIDGE_SOAK_ANSWER_FAULTS", "1500"))
SOAK_DRAIN_S = 60.0
SOAK_FAULTS = ("drop:0.003", "dup:0.03", "delay:0.002:1.5", "reorder:0.05", "redeliver:0.01")
BOOT = "boot-test"


@pytest.fixture
def bridges(tmp_path: Path) -> Iterator[Callable[..., Bridge]]:
    made: list[Bridge] = []

    def make(emulator: Emulator, specs: dict[str, SensorSpec] | None = None) -> Bridge:
        bridge = Bridge(emulator, tmp_path / f"bridge{len(made)}", specs or {"Air": AIR, "Door": DOOR})
        made.append(bridge)
        return bridge

    yield make
    for bridge in made:
        bridge.stop()


def wait_for(predicate: Callable[[], bool], bridge: Bridge) -> None:
    assert bridge.delivery is not None
    assert bridge.delivery.wait_until(predicate, WAIT_S), bridge.delivery.status()


def probing_bridge(emulator: Emulator, tmp_path: Path, specs: dict[str, SensorSpec], *,
                   probe_s: float) -> Bridge:
    """A started delivery (and its queue) that probes the inventory every ``probe_s`` seconds."""
    from pibridge.bridge.delivery import Delivery
    from pibridge.bridge.queue import SampleQueue

    bridge = Bridge(emulator, tmp_path / "bridge", specs)
    bridge.queue = SampleQueue(bridge.bridge_settings.state_dir, boot_id=BOOT)
    bridge.delivery = Delivery(bridge.settings, bridge.bridge_settings, bridge.queue, specs=bridge.specs,
                               request_timeout=1.0, retry_backoff=FAST, connect_backoff=FAST,
                               inventory_probe_s=probe_s)
    bridge.delivery.start()
    return bridge


def assert_every_air_sample_stored(bridge: Bridge, count: int) -> None:
    """Drained (every sample acknowledged) and every one of them at the agent, exactly."""
    bridge.drained()
    [sensor] = bridge.held()["Air"]
    assert values_of(sensor, "Temperature") == [(T0_MS + i * 1000, 20.0 + i / 10) for i in range(count)]
    assert values_of(sensor, "Humidity") == [(T0_MS + i * 1000, 40.0 + i % 7) for i in range(count)]


def test_core_session_dropped_for_a_moment_acknowledges_only_what_was_stored(
        bridges: Callable[..., Bridge], emulator: Emulator) -> None:
    """Requests routed to the core while its session is gone are lost: they must time out and
    be resent, never be credited with a later request's answer (issue: 4 samples acknowledged,
    neither at the agent nor in the queue)."""
    bridge = bridges(emulator)
    delivery = bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    count = 1500
    bridge.put([air(i) for i in range(1, count)])
    for round_ in range(1, 4):
        wait_for(lambda r=round_: delivery.pushed >= 1 + r * 200, bridge)
        emulator.drop_core_session()
    assert_every_air_sample_stored(bridge, count)


def test_core_paused_past_the_timeout_and_its_session_lost_then_resumed_delivers_everything(
        bridges: Callable[..., Bridge], emulator: Emulator) -> None:
    """The issue's SIGSTOP for 100 s: requests time out, mosquitto's keepalive drops the paused
    core's session (taken over here, instead of waiting 90 s), the core resumes. Delivery goes on
    by itself after a reconnection, and nothing is acknowledged that was not stored."""
    bridge = bridges(emulator)
    delivery = bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    emulator.pause_core()
    try:
        bridge.put([air(i) for i in range(1, 300)])
        wait_for(lambda: delivery.resent > 0, bridge)  # pushes timed out meanwhile
        emulator.drop_core_session()  # what the keepalive check does to a core paused 90 s
    finally:
        emulator.resume_core()
    bridge.put([air(i) for i in range(300, 400)])
    assert_every_air_sample_stored(bridge, 400)


def test_a_lost_list_sensors_answer_costs_one_reconnection_not_every_later_request(
        settings: AgentSettings, emulator: Emulator) -> None:
    client = AgentClient(settings, request_timeout=1.0, backoff=FAST)
    client.connect(WAIT_S)
    try:
        emulator.pause_core()
        try:
            lost = client.list_sensors_async()
            emulator.drop_core_session()  # the request goes with the core's session
        finally:
            emulator.resume_core()
        with pytest.raises(RequestTimeout):
            lost.result(WAIT_S)
        assert client.wait_connected(WAIT_S)
        for _ in range(3):
            assert client.list_sensors().value == []  # each later request gets its own answer
    finally:
        client.close()


class Flooder:
    """Another client flooding the emulator with QoS-0 pushes and QoS-1 pings, as fast as paho
    sends (the issue: 80k + 20k)."""

    def __init__(self, emulator: Emulator, folder: Path, pushes: int, pings: int) -> None:
        settings = settings_for(emulator, folder)
        provision(settings)
        from pibridge.agent import CredentialFiles

        self.cid = CredentialFiles(settings.cert_folder, settings.client_name).client_id()
        self.session = raw_session(emulator, settings)
        self.pushes, self.pings = pushes, pings
        self.refused = 0
        self.thread = threading.Thread(target=self._run, name="flooder", daemon=True)

    def _run(self) -> None:
        push = protocol.topic(protocol.OPERATIONS[Op.PUSH].request, self.cid, "flood")
        ping = protocol.topic(protocol.OPERATIONS[Op.PING].request, self.cid)
        every = max(1, self.pushes // max(1, self.pings))
        for i in range(self.pushes):
            try:
                self.session.publish(push, b'{"metrics":[{"metricId":"m","value":%d}],"timestamp":%d}'
                                     % (i, T0_MS + i), qos=0)
                if i % every == 0:
                    self.session.publish(ping, b'{"request":"flood"}', qos=1)
            except NotConnected:  # its own paho ran out of message ids: a flooder carries on
                self.refused += 1

    def __enter__(self) -> Flooder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(120)
        self.session.close()


def test_injected_error_3_while_another_client_floods_acknowledges_only_what_was_stored(
        bridges: Callable[..., Bridge], emulator_factory: Callable[..., Emulator], tmp_path: Path) -> None:
    """The issue: 30 % error 3 while another client floods: 1,743 pushes reported acknowledged and
    never stored. The flood cost answers then ("Message queue full" in the core, fixed since: see
    test_emulator_isolation); 1 % of the answers are dropped here to stand for them. Every sample
    must end up stored, the retries notwithstanding."""
    emulator = emulator_factory(inject_errors=[(3, 0.3)], inject_answer_faults=["drop:0.005"], seed=20)
    bridge = bridges(emulator)
    delivery = bridge.start()
    count = 500
    with Flooder(emulator, tmp_path / "flooder", pushes=20_000, pings=5_000):
        bridge.put([air(i) for i in range(count)])
        # a bound, not a timing assertion: each lost answer costs a timeout, a reconnection and
        # a reconciliation, whose requests meet error 3 too
        assert delivery.wait_drained(SOAK_DRAIN_S * 2), delivery.status()
    assert_every_air_sample_stored(bridge, count)


COUNTER = SensorSpec("Counter", (MetricSpec("count", "Count", value_type="integer", annotation="pulses"),))
#: The soak's samples start an hour ago: a large soak spans hours of samples, and the queue drops
#: samples older than its max age (30 days), which T0_MS is.
SOAK_T0_MS = (int(time.time()) - 3600) * 1000


def soak_samples(i: int) -> list[TakenSample]:
    at = SOAK_T0_MS + i * 1000
    return [TakenSample("Air", {"temperature": 20.0 + i / 10, "humidity": 40.0 + i % 7}, at, float(i), BOOT),
            TakenSample("Door", {"open": i % 2 == 0}, at + 1, float(i), BOOT, event=True),
            TakenSample("Counter", {"count": i}, at + 2, float(i), BOOT)]


@pytest.mark.parametrize("samples_per_push", [1, None], ids=["one-sample-a-push", "backlog-pushes"])
def test_soak_random_answer_faults_acknowledge_only_what_was_stored_and_nothing_sticks(
        samples_per_push: int | None, bridges: Callable[..., Bridge],
        emulator_factory: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch) -> None:
    """Samples of three sensors under lost, late (the answer stream held 1.5 s, beyond the 1 s
    timeout), duplicated, reordered and re-sent answers (the last few again, echoes included, as
    an agent re-sends after its own reconnect) plus 5 % error 3: everything is delivered by
    itself, and every acknowledged sample is stored. Once with one sample a push (an answer per
    sample: the most answers to get wrong), once with the delivery's backlog pushes of several.
    ``PIBRIDGE_SOAK_ANSWER_FAULTS=15000`` (and ``--timeout 1800``) for the closing note's figure
    (prints the counts with ``-s``)."""
    if samples_per_push is not None:
        monkeypatch.setattr("pibridge.bridge.pushes.MAX_SAMPLES_PER_PUSH", samples_per_push)
    emulator = emulator_factory(inject_errors=[(3, 0.05)], inject_answer_faults=SOAK_FAULTS, seed=7)
    bridge = bridges(emulator, {"Air": AIR, "Door": DOOR, "Counter": COUNTER})
    delivery = bridge.start()
    per_sensor = SOAK_SAMPLES // 3
    for start in range(0, per_sensor, 500):  # as a scheduler would: in pieces, while delivering
        stop = min(per_sensor, start + 500)
        bridge.put([s for i in range(start, stop) for s in soak_samples(i)])
    # a bound, not a timing assertion: every lost answer costs a timeout and a reconnection
    assert delivery.wait_drained(SOAK_DRAIN_S + SOAK_SAMPLES * 0.05), delivery.status()
    bridge.drained()
    status = delivery.status()
    assert bridge.queue is not None
    assert status.dead_lettered == {} and status.dropped == 0, (status, bridge.queue.dead_letters()[:3])
    held = bridge.held()
    [air_sensor], [door_sensor], [counter_sensor] = held["Air"], held["Door"], held["Counter"]
    every = range(per_sensor)
    assert values_of(air_sensor, "Temperature") == [(SOAK_T0_MS + i * 1000, 20.0 + i / 10) for i in every]
    assert values_of(door_sensor, "Door open") == [(SOAK_T0_MS + i * 1000 + 1, i % 2 == 0) for i in every]
    assert values_of(counter_sensor, "Count") == [(SOAK_T0_MS + i * 1000 + 2, i) for i in every]
    client = delivery.client
    assert client is not None
    print(f"\nanswer-fault soak: {3 * per_sensor} samples in {delivery.pushes_sent} pushes, "
          f"faults {SOAK_FAULTS} + 5 % error 3: "
          f"{status.pushed} acknowledged, {3 * per_sensor} stored, {status.resent} resent, "
          f"{client._pending.ignored} answers ignored (duplicates and late ones) on the last connection, "
          f"{client._pending.replays} replays recognised")
    assert status.pushed == 3 * per_sensor


def test_a_live_wipe_is_noticed_by_the_probe_and_everything_is_registered_again(
        emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 20 §2: a wipe while the bridge runs made pushes land under implicitly created
    nameless sensors for up to an hour. The probe (one list_sensors every `inventory_probe_s`)
    notices, re-registers, and reports the samples exposed once."""
    bridge = probing_bridge(emulator, tmp_path, {"Air": AIR}, probe_s=0.5)
    delivery = bridge.delivery
    assert delivery is not None
    try:
        bridge.put([air(i) for i in range(10)])
        bridge.drained()
        reconciled = delivery.reconciliations
        with caplog.at_level("WARNING", logger="pibridge.bridge.delivery"):
            emulator.wipe()
            bridge.put([air(i) for i in range(10, 20)])  # may go to the old ids: implicit creation
            wait_for(lambda: delivery.reconciliations > reconciled, bridge)
            bridge.put([air(i) for i in range(20, 30)])
            bridge.drained()
        [sensor] = bridge.held()["Air"]  # registered again under its name
        assert {m["name"] for m in sensor["metrics"]} >= {"Temperature", "Humidity"}
        after = [(T0_MS + i * 1000, 20.0 + i / 10) for i in range(20, 30)]
        assert values_of(sensor, "Temperature")[-10:] == after
        said = [r.getMessage() for r in caplog.records if "no longer holds" in r.getMessage()]
        assert len(said) == 1 and "registering them again" in said[0] and "Air" in said[0], said
    finally:
        bridge.stop()


def test_redeliver_publishes_the_last_answers_again_in_their_order() -> None:
    """The ``redeliver`` fault as `pibridge.agent.pending` (c) describes an agent's re-send: the
    answer, then the last few answers up to it (echoes included) again, in their order; messages
    that are not answers (livedata) are never repeated."""
    import random

    from pibridge.emulator.faults import REDELIVER_MAX, AnswerFault, AnswerFaults

    sent: list[str] = []
    faults = AnswerFaults([AnswerFault("redeliver", 0.25)], random.Random(3))
    originals = [f"/v1.0/c/sensor/s{i}/info/inbox" if i % 3 else f"/v1.0/c/ping{i}/ping/info/inbox"
                 for i in range(60)]
    for topic in originals:
        faults.publish([(topic, b"", 1), ("/v1.0/c/sensor/s/livedata", b"{}", 0)],
                       lambda t, _p, _q: sent.append(t))
    assert sent.count("/v1.0/c/sensor/s/livedata") == len(originals)
    answers = [t for t in sent if t.endswith("/inbox")]
    position, runs = 0, 0
    for index, topic in enumerate(originals):
        assert answers[position] == topic  # the originals keep their order
        position += 1
        following = originals[index + 1] if index + 1 < len(originals) else None
        end = position
        while end < len(answers) and answers[end] != following:
            end += 1
        copies = answers[position:end]
        if copies:  # a re-send: the last k answers published, ending with this one
            runs += 1
            assert 1 <= len(copies) <= REDELIVER_MAX
            assert copies == originals[index + 1 - len(copies):index + 1]
        position = end
    assert position == len(answers) and runs == faults.counts["redeliver"] > 0


def test_a_sensor_renamed_in_the_portal_is_not_taken_for_a_lost_inventory(
        emulator: Emulator, tmp_path: Path) -> None:
    """The probe tells a lost inventory by a sensor missing or re-created implicitly (name = id),
    not by a name: a user's rename in the portal is not a loss (reconciling for it renamed a
    profile sensor back at once, and reconciled at every probe for a sensor that only has samples
    queued, which no reconciliation renames)."""
    bridge = probing_bridge(emulator, tmp_path, {"Air": AIR, "Door": DOOR}, probe_s=0.2)
    delivery = bridge.delivery
    assert delivery is not None
    try:
        bridge.put([air(0)])
        bridge.drained()
        [sensor] = bridge.held()["Air"]
        with AgentClient(bridge.settings) as portal:  # the same client, as the portal acts for it
            portal.update_sensor(sensor["sensorId"], "Greenhouse air")
        reconciled = delivery.reconciliations
        for i in range(1, 4):  # a probe follows each acknowledgement
            probed = delivery.probe.answered_count
            bridge.put([air(i)])
            wait_for(lambda: delivery.probe.answered_count > probed, bridge)  # noqa: B023 (waited here)
        assert delivery.reconciliations == reconciled
    finally:
        bridge.stop()


def test_a_wipe_during_a_burst_loses_only_what_the_warning_reports(
        emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Samples still in flight to the old ids when the probe notices the loss are acknowledged
    by the agent under the sensor it creates implicitly: they are sent again under the new ids,
    so the only samples left in that orphan alone are those the warning counted (the wipe itself
    deleted what was stored before it)."""
    import re

    bridge = probing_bridge(emulator, tmp_path, {"Air": AIR}, probe_s=0.05)
    delivery = bridge.delivery
    assert delivery is not None
    count = 3000
    try:
        bridge.put([air(0)])
        bridge.drained()
        reconciled = delivery.reconciliations
        with caplog.at_level("WARNING", logger="pibridge.bridge.delivery"):
            bridge.put([air(i) for i in range(1, count)])  # one sensor: one push at a time (R1)
            wait_for(lambda: delivery.pushed >= 50, bridge)
            emulator.wipe()
            wait_for(lambda: delivery.reconciliations > reconciled, bridge)
            bridge.drained()
        said = [r.getMessage() for r in caplog.records if "no longer holds" in r.getMessage()]
        assert len(said) == 1, said
        match = re.search(r"(\d+) samples of them acknowledged", said[0])
        assert match is not None, said
        [sensor] = bridge.held()["Air"]  # the id re-created implicitly, renamed and adopted again
        stored = {at for at, _ in values_of(sensor, "Temperature")}
        # the metrics the agent created implicitly (named by their ids): the orphaned samples
        in_orphan = {v["timestamp"] for m in sensor["metrics"] if m["name"] not in ("Temperature", "Humidity")
                     for v in m["values"]}
        assert in_orphan and len(in_orphan - stored) <= int(match.group(1)), (len(in_orphan - stored), said)
        first_after_wipe = min(in_orphan)
        assert stored >= set(range(first_after_wipe, T0_MS + count * 1000, 1000)) - in_orphan
    finally:
        bridge.stop()
