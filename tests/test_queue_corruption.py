"""The queue survives its own corruption (issue 20 §3), on real SQLite files broken with sqlite3
and the file system: rows that cannot be decoded go to the dead letters and the rest is delivered
(to the real emulator); a file that is not a queue is moved aside; a queue that was truncated,
deleted, replaced or rolled back is said once, loudly, and the bridge starts."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from agent_helpers import settings_for, stored_sensors
from test_bridge_run import Bridge as BridgeProcess

from pibridge.bridge.delivery import Delivery
from pibridge.bridge.model import MetricSpec, SensorSpec, TakenSample
from pibridge.bridge.queue import QUEUE_FILE, SampleQueue, read_queued_sensors
from pibridge.bridge.queue_integrity import (
    BAD_COLUMN,
    BAD_VALUE,
    NOT_JSON,
    NOT_OBJECT,
    NOT_UTF8,
    QueueRecord,
)
from pibridge.mqtt import Backoff
from pibridge.profile import BridgeSettings
from pibridge.testing import Emulator

BOOT = "boot-c"
T0_MS = 1_700_000_000_000
WAIT_S = 30.0
AIR = SensorSpec("Air", (MetricSpec("t", "Temperature", unit="SI.Temperature.CELSIUS"),))
FAST = Backoff(initial=0.05, cap=0.5)

#: (SQL expression for vals, sensor, timestamp, the dead-letter kind). Each inserted with sqlite3
#: as bad luck (a flipped bit, a foreign writer, a bug) would leave it.
CORRUPT_ROWS = [
    ("'{\"t\": 1.0'", "'Air'", T0_MS + 101, NOT_JSON),                 # cut short: not JSON
    ("'not json at all'", "'Air'", T0_MS + 102, NOT_JSON),
    ("CAST(X'7B2274223AFF7D' AS TEXT)", "'Air'", T0_MS + 103, NOT_UTF8),  # text, not UTF-8
    ("X'FFFE00'", "'Air'", T0_MS + 104, NOT_UTF8),                    # a blob, not UTF-8
    ("'[1, 2, 3]'", "'Air'", T0_MS + 105, NOT_OBJECT),                # a list
    ("'null'", "'Air'", T0_MS + 106, NOT_OBJECT),                     # null
    ("'\"a string\"'", "'Air'", T0_MS + 107, NOT_OBJECT),
    ("42", "'Air'", T0_MS + 108, NOT_OBJECT),  # a number (TEXT affinity stores it as "42")
    ("'{\"t\": {\"nested\": 1}}'", "'Air'", T0_MS + 109, BAD_VALUE),
    ("'{\"t\": null}'", "'Air'", T0_MS + 110, BAD_VALUE),
    ("'{\"t\": 1.0}'", "CAST(X'41FF' AS TEXT)", T0_MS + 111, NOT_UTF8),  # sensor name not UTF-8
    ("'{\"t\": 1.0}'", "'Air'", "'yesterday'", BAD_COLUMN),           # timestamp not a number
    ("'{\"t\": ' || replace(hex(zeroblob(50000)), '00', '[')", "'Air'", T0_MS + 112, NOT_JSON),  # deeper than
]                                                                   # the parser goes: RecursionError


def air(i: int) -> TakenSample:
    return TakenSample("Air", {"t": 20.0 + i}, T0_MS + i * 1000, float(i), BOOT)


def corrupt(path: Path) -> None:
    """Insert every row of `CORRUPT_ROWS` into the queue database at ``path`` (between good ones)."""
    db = sqlite3.connect(path)
    with db:
        for vals, sensor, timestamp, _ in CORRUPT_ROWS:
            db.execute("INSERT INTO samples (sensor, layout, vals, timestamp_ms, monotonic_s, boot_id, "
                       f"event) VALUES ({sensor}, NULL, {vals}, {timestamp}, 1.0, '{BOOT}', 0)")
    db.close()


def queue_with_corrupt_rows(state: Path) -> None:
    """5 good rows, every corrupt row, 5 more good rows."""
    with SampleQueue(state, boot_id=BOOT) as queue:
        queue.put_many([air(i) for i in range(5)])
    corrupt(state / QUEUE_FILE)
    with SampleQueue(state, boot_id=BOOT) as queue:
        queue.put_many([air(i) for i in range(5, 10)])


def test_rows_that_cannot_be_decoded_go_to_the_dead_letters_and_the_rest_is_fetched(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    queue_with_corrupt_rows(tmp_path)
    caplog.set_level(logging.WARNING, "pibridge.bridge.queue")
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        assert queue.depth == 10 + len(CORRUPT_ROWS)
        fetched = []
        cursor = 0
        while rows := queue.fetch(cursor, 3):  # small batches: a batch of only bad rows is skipped
            fetched += rows
            cursor = rows[-1].id
        assert [r.values["t"] for r in fetched] == [20.0 + i for i in range(10)]
        dead = queue.dead_letters()
        assert [d["kind"] for d in dead] == [kind for *_, kind in CORRUPT_ROWS]
        assert all(d["reason"] for d in dead)
        assert queue.depth == 10 and queue.stats().dead_lettered == len(CORRUPT_ROWS)
    kinds = {kind for *_, kind in CORRUPT_ROWS}
    logged = [r.getMessage() for r in caplog.records if "dead letters" in r.getMessage()]
    assert len(logged) == len(kinds)  # one line per kind
    assert "Traceback" not in caplog.text


def test_corrupt_rows_never_block_a_real_delivery(emulator: Emulator, tmp_path: Path) -> None:
    """Against the real emulator: every good row arrives with its timestamp, the bad ones are dead
    letters with reasons, and the delivery drains (it used to retry the first bad row for ever)."""
    state = tmp_path / "state"
    queue_with_corrupt_rows(state)
    queue = SampleQueue(state, boot_id=BOOT)
    delivery = Delivery(settings_for(emulator, tmp_path / "certs"),
                        BridgeSettings(state_dir=state, inventory_check_s=3600.0), queue, specs={"Air": AIR},
                        request_timeout=2.0, retry_backoff=FAST, connect_backoff=FAST)
    delivery.start()
    try:
        assert delivery.wait_drained(WAIT_S), delivery.status()
        client_id = delivery.client.client_id if delivery.client else ""
        assert queue.stats().depth == 0 and len(queue.dead_letters()) == len(CORRUPT_ROWS)
        assert {d["kind"] for d in queue.dead_letters()} == {kind for *_, kind in CORRUPT_ROWS}
    finally:
        delivery.stop(5.0)
        queue.close()
    sensor = next(s for s in stored_sensors(emulator, client_id) if s["name"] == "Air")
    values = [(v["timestamp"], v["value"]) for v in sensor["metrics"][0]["values"]]
    assert values == [(T0_MS + i * 1000, 20.0 + i) for i in range(10)]


def test_a_corrupt_layout_or_monotonic_time_does_not_stop_the_queue(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.set_specs({"Air": AIR})
        queue.put(air(0))
        queue.put(TakenSample("Air", {"t": 1.0}, None, 5.0, BOOT))
    db = sqlite3.connect(tmp_path / QUEUE_FILE)
    with db:
        db.execute("UPDATE layouts SET metrics = 'garbage'")
        db.execute("UPDATE samples SET monotonic_s = 'soon' WHERE timestamp_ms IS NULL")
    db.close()
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.enforce_bounds()
        assert queue.resolve_timestamps(BOOT, 0) == 0
        assert [(r.values, r.metrics) for r in queue.fetch(0, 10)] == [({"t": 20.0}, ())]
        assert [d["kind"] for d in queue.dead_letters()] == [BAD_COLUMN]
        assert queue.alive


# -- the file -------------------------------------------------------------------------------------

def filled_queue(state: Path, count: int = 20) -> None:
    with SampleQueue(state, boot_id=BOOT) as queue:
        queue.put_many([air(i) for i in range(count)])


def killed_queue(state: Path, count: int) -> None:
    """``count`` samples put by a process that is then SIGKILLed (its WAL stays)."""
    script = textwrap.dedent(f"""
        import os, signal
        from pibridge.bridge.model import TakenSample
        from pibridge.bridge.queue import SampleQueue
        q = SampleQueue({str(state)!r}, boot_id={BOOT!r})
        for i in range(3):
            q.put(TakenSample("Air", {{"t": float(i)}}, {T0_MS} + i, float(i), {BOOT!r}))
        q._record_due = 0.0
        q.put_many([TakenSample("Air", {{"t": float(i)}}, {T0_MS} + i, float(i), {BOOT!r})
                    for i in range(3, {count})])
        q.stats()  # the owner thread wrote the record after that group
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", script], check=False)


def truncated_with_wal(state: Path) -> None:
    killed_queue(state, 185)
    assert (state / f"{QUEUE_FILE}-wal").exists()
    os.truncate(state / QUEUE_FILE, 0)


def deleted(state: Path) -> None:
    filled_queue(state)
    for name in (QUEUE_FILE, f"{QUEUE_FILE}-wal", f"{QUEUE_FILE}-shm"):
        (state / name).unlink(missing_ok=True)


def replaced(state: Path) -> None:
    filled_queue(state)
    other = state.parent / "other"
    filled_queue(other, 3)
    shutil.copy(other / QUEUE_FILE, state / QUEUE_FILE)


def rolled_back(state: Path) -> None:
    filled_queue(state, 5)
    backup = state.parent / "backup.sqlite3"
    shutil.copy(state / QUEUE_FILE, backup)
    filled_queue(state, 10)
    shutil.copy(backup, state / QUEUE_FILE)


def garbage(state: Path) -> None:
    filled_queue(state)
    (state / QUEUE_FILE).write_bytes(b"garbage, not SQLite\n" * 64)


def wrong_schema(state: Path) -> None:
    filled_queue(state)
    (state / QUEUE_FILE).unlink()
    db = sqlite3.connect(state / QUEUE_FILE)
    db.execute("CREATE TABLE samples (id INTEGER PRIMARY KEY, payload BLOB)")
    db.commit()
    db.close()


def another_database(state: Path) -> None:
    filled_queue(state)
    (state / QUEUE_FILE).unlink()
    db = sqlite3.connect(state / QUEUE_FILE)
    db.execute("CREATE TABLE clients (id TEXT PRIMARY KEY)")
    db.commit()
    db.close()


#: (how the file was broken, what the one line says, samples the new queue holds, moved aside)
BROKEN = [
    pytest.param(truncated_with_wal, "was emptied or truncated", 0, False, id="truncated-to-0-with-wal"),
    pytest.param(deleted, "is gone (deleted)", 0, False, id="deleted"),
    pytest.param(replaced, "was replaced by another queue", 3, False, id="replaced-by-another-queue"),
    pytest.param(rolled_back, "went back in time", 5, False, id="rolled-back"),
    pytest.param(garbage, "file is not a database", 0, True, id="garbage-bytes"),
    pytest.param(wrong_schema, "not a queue database (table", 0, True, id="wrong-schema"),
    pytest.param(another_database, "a database of something else", 0, True, id="another-database"),
]


@pytest.mark.parametrize(("breaks", "says", "holds", "moved"), BROKEN)
def test_a_broken_queue_file_is_said_once_and_a_queue_starts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, breaks: object, says: str, holds: int,
        moved: bool) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "inventory.json").write_text("{}")  # the bridge's other state: never touched
    assert callable(breaks)
    breaks(state)
    caplog.set_level(logging.ERROR, "pibridge.bridge.queue")
    with SampleQueue(state, boot_id=BOOT) as queue:
        assert queue.incident is not None and says in queue.incident
        assert queue.depth == holds
        queue.put(air(99))
        assert [r.values["t"] for r in queue.fetch(0, 100)][-1] == 119.0
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and says in lines[0], lines
    aside = sorted(p.name for p in state.iterdir() if ".corrupt-" in p.name)
    assert bool(aside) == moved
    if moved:
        assert aside[0] in lines[0] and "moved aside" in lines[0]
    assert (state / "inventory.json").read_text() == "{}"
    with SampleQueue(state, boot_id=BOOT) as queue:  # said once: the next start is quiet
        assert queue.incident is None and queue.depth == holds + 1


def test_the_line_counts_what_the_record_knew(tmp_path: Path) -> None:
    truncated_with_wal(tmp_path)
    record = QueueRecord.read(tmp_path / QUEUE_FILE)
    assert record is not None and record.last_id == 185 and record.waiting == 185
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        assert queue.incident is not None and "185 samples waiting" in queue.incident


def test_a_healthy_queue_and_an_old_one_without_a_record_are_quiet(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pibridge.bridge.queue")
    filled_queue(tmp_path)
    QueueRecord.path_for(tmp_path / QUEUE_FILE).unlink()  # as a queue written before the record
    for _ in range(2):
        with SampleQueue(tmp_path, boot_id=BOOT) as queue:
            assert queue.incident is None and queue.depth == 20
    assert not caplog.records


def test_the_record_is_not_rewritten_per_sample(tmp_path: Path) -> None:
    """Its cost: written at open and at the first commit, then at most every RECORD_INTERVAL_S."""
    with SampleQueue(tmp_path, boot_id=BOOT, monotonic=lambda: 1000.0) as queue:
        record = QueueRecord.path_for(queue.path)
        queue.put(air(0))
        queue.stats()  # the owner thread finished that group (the record is written after it)
        first = record.stat().st_ino
        for i in range(1, 50):
            queue.put(air(i))
        queue.stats()
        assert record.stat().st_ino == first  # replaced by rename: the same inode means not rewritten


def test_a_bridge_starts_on_a_garbage_queue(tmp_path: Path) -> None:
    """`pibridge run` as a real process: the line, then it runs (it used to refuse to start)."""
    state = tmp_path / "state"
    garbage(state)
    profile = tmp_path / "bridge.toml"
    profile.write_text('[[sensor]]\nname = "Pi SoC"\ndriver = "cpu_temperature"\ninterval = 1\n')
    bridge = BridgeProcess(profile, state)
    try:
        line = bridge.wait_line(lambda text: "not a queue database" in text)
        assert "moved aside" in line
        bridge.wait_line(lambda text: "sample Pi SoC" in text)
        assert bridge.stop(signal.SIGTERM) == 0
    finally:
        if bridge.proc.poll() is None:
            bridge.proc.kill()
            bridge.proc.wait()
    assert not any("Traceback" in line for line in bridge.lines)


def test_read_queued_sensors_counts_around_a_damaged_sensor_name(tmp_path: Path) -> None:
    """``inventory --prune`` asks which sensors have rows waiting: one damaged name must not make
    the answer "none" (it would prune sensors whose samples still wait)."""
    filled_queue(tmp_path, 3)
    corrupt(tmp_path / QUEUE_FILE)
    counts = read_queued_sensors(tmp_path)
    assert counts["Air"] == 3 + len(CORRUPT_ROWS) - 1 and len(counts) == 2
