"""The store-and-forward queue on real SQLite: commit before put returns, group commits from
many threads, kill -9, durability settings, bounds, the clock-not-set stamping, earlier boots,
dead letters, layouts."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from pibridge.bridge.model import MetricSpec, SensorSpec, TakenSample, Value
from pibridge.bridge.queue import (
    ACK_HOLD_S,
    EARLIER_BOOT_KIND,
    PAGE_SIZE,
    QUEUE_FILE,
    QueueClosed,
    QueuedSample,
    QueueOpenError,
    QueueWriteError,
    SampleQueue,
    read_queued_sensors,
    wall_timestamp_ms,
)

BOOT = "boot-a"
T0_MS = 1_700_000_000_000
AIR = SensorSpec("Air", (MetricSpec("t", "Temperature", unit="SI.Temperature.CELSIUS"),
                         MetricSpec("h", "Humidity", unit="NoSI.Dimensionless.PERCENT")))


def sample(i: int, *, sensor: str = "Air", stamped: bool = True, boot: str = BOOT) -> TakenSample:
    return TakenSample(sensor, {"t": 20.0 + i, "h": 40 + i}, T0_MS + i * 1000 if stamped else None,
                       100.0 + i, boot)


class FakeTime:
    def __init__(self) -> None:
        self.wall = T0_MS / 1000
        self.mono = 1000.0


def test_put_then_fetch_keeps_order_types_and_timestamps(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        values: dict[str, Value] = {"open": True, "label": "front", "count": 3, "v": 1.5}
        queue.put(TakenSample("Door", values, T0_MS, 1.0, BOOT, event=True))
        queue.put_many([sample(i) for i in range(5)])
        rows = queue.fetch(0, 100)
        assert [r.timestamp_ms for r in rows] == [T0_MS] + [T0_MS + i * 1000 for i in range(5)]
        assert rows[0].values == {"open": True, "label": "front", "count": 3, "v": 1.5} and rows[0].event
        assert type(rows[0].values["count"]) is int and type(rows[0].values["open"]) is bool
        assert [r.id for r in queue.fetch(rows[2].id, 2)] == [rows[3].id, rows[4].id]
        assert queue.depth == 6


def test_puts_from_many_threads_are_all_committed(tmp_path: Path) -> None:
    queue = SampleQueue(tmp_path, boot_id=BOOT)
    def producer(k: int) -> None:
        for i in range(200):
            queue.put(sample(k * 1000 + i))

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.close()
    db = sqlite3.connect(tmp_path / QUEUE_FILE)
    assert db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 1600
    db.close()


def test_everything_put_survives_kill_9(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal
        from pibridge.bridge.model import TakenSample
        from pibridge.bridge.queue import SampleQueue
        queue = SampleQueue({str(tmp_path)!r}, boot_id="b")
        for i in range(500):
            queue.put(TakenSample("Air", {{"t": i}}, {T0_MS} + i, float(i), "b"))
        print("stored", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "stored" and done.returncode == -9
    with SampleQueue(tmp_path, boot_id="b") as queue:
        rows = queue.fetch(0, 1000)
        assert [r.values["t"] for r in rows] == list(range(500))


@pytest.mark.parametrize(("durability", "synchronous"), [("process", 1), ("power", 2)])
def test_durability_sets_wal_and_synchronous(tmp_path: Path, durability: str, synchronous: int) -> None:
    with SampleQueue(tmp_path, durability=durability, boot_id=BOOT) as queue:
        queue.put(sample(0))
        assert queue._call(lambda: queue._db.execute("PRAGMA synchronous").fetchone()[0]) == synchronous
    db = sqlite3.connect(tmp_path / QUEUE_FILE)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


@pytest.mark.parametrize("bad", [{"durability": "disk"}, {"max_samples": 0}, {"max_age_s": 0}])
def test_bad_settings_are_refused(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SampleQueue(tmp_path, boot_id=BOOT, **bad)  # type: ignore[arg-type]


def test_ack_deletes_and_a_closed_queue_refuses_puts(tmp_path: Path) -> None:
    queue = SampleQueue(tmp_path, boot_id=BOOT)
    queue.put_many([sample(i) for i in range(10)])
    rows = queue.fetch(0, 10)
    queue.ack([r.id for r in rows[:4]])
    assert [r.id for r in queue.fetch(0, 10)] == [r.id for r in rows[4:]]
    assert queue.stats().depth == 6
    queue.close()
    with pytest.raises(QueueClosed):
        queue.put(sample(11))
    with SampleQueue(tmp_path, boot_id=BOOT) as again:
        assert again.depth == 6
        queue_ids = [r.id for r in again.fetch(0, 10)]
        assert queue_ids == [r.id for r in rows[4:]]


def test_acks_in_runs_and_gaps_delete_exactly_those_rows(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put_many([sample(i) for i in range(12)])
        ids = [r.id for r in queue.fetch(0, 20)]
        acked = [ids[0], ids[1], ids[2], ids[5], ids[7], ids[8], ids[11], ids[1]]  # runs, gaps, a repeat
        queue.ack(acked)
        assert [r.id for r in queue.fetch(0, 20)] == [i for i in ids if i not in acked]
        assert queue.stats().depth == 12 - 7


def test_ids_are_never_reused_after_the_queue_emptied(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put(sample(0))
        first = queue.fetch(0, 1)[0].id
        queue.ack([first])
        queue.put(sample(1))
        assert queue.fetch(first, 1)[0].id > first


def test_max_samples_drops_the_oldest_counts_and_logs_once(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pibridge.bridge.queue")
    with SampleQueue(tmp_path, boot_id=BOOT, max_samples=10) as queue:
        for i in range(15):
            queue.put(sample(i))
        queue.put_many([sample(i) for i in range(15, 20)])
        rows = queue.fetch(0, 100)
        assert [r.values["t"] for r in rows] == [20.0 + i for i in range(10, 20)]
        stats = queue.stats()
        assert stats.depth == 10 and stats.dropped == 10
    dropped = [r.getMessage() for r in caplog.records if "dropped: queue full" in r.getMessage()]
    assert len(dropped) == 1 and dropped[0].startswith("1 samples dropped: queue full")


def test_max_age_drops_old_rows_stamped_and_monotonic_only(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pibridge.bridge.queue")
    now = FakeTime()
    queue = SampleQueue(tmp_path, boot_id=BOOT, max_age_s=3600, clock=lambda: now.wall,
                        monotonic=lambda: now.mono)
    try:
        queue.put(TakenSample("Air", {"t": 1}, None, now.mono - 7200, BOOT))          # 2 h old, unstamped
        queue.put(TakenSample("Air", {"t": 2}, None, now.mono - 60, BOOT))            # fresh, unstamped
        queue.enforce_bounds()
        assert queue.stats().unstamped == 1 and queue.stats().dropped == 1
        queue.put(TakenSample("Air", {"t": 3}, round(now.wall * 1000) - 7_200_000, now.mono, BOOT))  # old
        queue.put(TakenSample("Air", {"t": 4}, round(now.wall * 1000) - 1000, now.mono, BOOT))
        queue.enforce_bounds()
        assert [r.values["t"] for r in queue.fetch(0, 10)] == [4]
        assert queue.stats().depth == 2 and queue.stats().dropped == 2
    finally:
        queue.close()
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped and all(m.startswith("1 samples dropped: too old (older than") for m in dropped)


def test_stamped_rows_are_not_aged_before_the_clock_is_known_set(tmp_path: Path) -> None:
    now = FakeTime()
    with SampleQueue(tmp_path, boot_id=BOOT, max_age_s=3600, clock=lambda: now.wall,
                     monotonic=lambda: now.mono) as queue:
        queue.put(TakenSample("Air", {"t": 1}, None, now.mono, BOOT))
        now.wall -= 10 * 86_400  # a clock not set yet reads years ago... or days: no stamped row yet
        queue.enforce_bounds()
        assert queue.stats().depth == 1


def test_clock_not_set_rows_are_stamped_once_and_never_restamped(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put(sample(0, stamped=False))
        queue.put(sample(1, stamped=False))
        assert queue.fetch(0, 10) == [] and queue.stats().unstamped == 2
        offset = 1_699_000_000_000
        assert queue.resolve_timestamps(BOOT, offset) == 2
        assert [r.timestamp_ms for r in queue.fetch(0, 10)] == [100_000 + offset, 101_000 + offset]
        queue.put(sample(2, stamped=False))  # handed over after the clock was set, still unstamped
        assert queue.resolve_timestamps(BOOT, offset + 5000) == 0  # nothing restamped
        assert [r.timestamp_ms for r in queue.fetch(0, 10)] == [100_000 + offset, 101_000 + offset,
                                                               102_000 + offset]


def test_a_put_racing_with_the_clock_resolution_is_stamped(tmp_path: Path) -> None:
    """A put handed over after the owner took the group that holds `resolve_timestamps`, but
    built before the offset was known, is stamped by its own commit (else: never stamped)."""
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put(sample(0, stamped=False))
        racer: list[threading.Thread] = []

        def land_a_put_in_the_window() -> None:
            queue.before_commit = None  # once: this iteration holds the resolve
            thread = threading.Thread(target=queue.put, args=(sample(1, stamped=False),))
            racer.append(thread)
            thread.start()
            with queue._lock:  # the put has built its row (unstamped: no offset yet)
                assert queue._lock.wait_for(lambda: bool(queue._rows), 10.0)

        queue.before_commit = land_a_put_in_the_window
        offset = 1_699_000_000_000
        assert queue.resolve_timestamps(BOOT, offset) == 1
        racer[0].join(10.0)
        assert not racer[0].is_alive()
        assert queue.stats().unstamped == 0
        assert [r.timestamp_ms for r in queue.fetch(0, 10)] == [100_000 + offset, 101_000 + offset]


def test_stamping_rounds_one_way_on_every_path(tmp_path: Path) -> None:
    """Half a millisecond rounds alike whether a row is stamped at put or by the resolution."""
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put(TakenSample("Air", {"t": 1.0}, None, 0.0025, BOOT))  # stamped by resolve
        queue.resolve_timestamps(BOOT, 0)
        queue.put(TakenSample("Air", {"t": 1.0}, None, 0.0025, BOOT))  # stamped at put
        assert [r.timestamp_ms for r in queue.fetch(0, 10)] == [wall_timestamp_ms(0.0025, 0)] * 2


def test_rows_of_an_earlier_boot_without_wall_time_go_to_dead_letters(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id="boot-1") as queue:
        queue.put(sample(0, stamped=False, boot="boot-1"))
        queue.put(sample(1, boot="boot-1"))
    with SampleQueue(tmp_path, boot_id="boot-2") as queue:
        assert [r.values["t"] for r in queue.fetch(0, 10)] == [21.0]
        dead = queue.dead_letters()
        assert [(d["kind"], d["vals"]) for d in dead] == [(EARLIER_BOOT_KIND, '{"t":20.0,"h":40}')]
        assert "earlier boot" in dead[0]["reason"]
        assert queue.stats().depth == 1 and queue.stats().unstamped == 0


def test_dead_letters_are_moved_counted_and_logged_once_per_kind(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pibridge.bridge.queue")
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put_many([sample(i) for i in range(4)])
        ids = [r.id for r in queue.fetch(0, 10)]
        assert queue.dead_letter([(ids[0], "bad 1", "kind A"), (ids[1], "bad 2", "kind A")]) == 2
        assert queue.dead_letter([(ids[2], "bad 3", "kind B"), (ids[0], "again", "kind A")]) == 1
        assert [r.id for r in queue.fetch(0, 10)] == [ids[3]]
        assert queue.stats().dead_lettered == 3 and queue.stats().dead_letters_stored == 3
    logged = [r.getMessage() for r in caplog.records if "dead letters" in r.getMessage()]
    assert len(logged) == 2 and "kind A" in logged[0] and "kind B" in logged[1]


def test_the_dead_letters_table_keeps_only_the_newest(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from pibridge.bridge import queue as queue_module

    monkeypatch.setattr(queue_module, "DEAD_LETTERS_KEPT", 3)
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put_many([sample(i) for i in range(5)])
        ids = [r.id for r in queue.fetch(0, 10)]
        assert queue.dead_letter([(i, f"bad {i}", "kind A") for i in ids]) == 5
        stats = queue.stats()
        assert stats.dead_lettered == 5 and stats.dead_letters_stored == 3      # counted, not all kept
        assert [d["sample_id"] for d in queue.dead_letters()] == ids[2:]


def test_layouts_record_the_identities_a_sample_was_taken_with(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put(sample(0))  # no spec known yet
        queue.set_specs({"Air": AIR})
        queue.put(sample(1))
        changed = SensorSpec("Air", (MetricSpec("t", "Temperature", value_type="double", annotation="K"),
                                     AIR.metrics[1]))
        queue.set_specs({"Air": changed})
        queue.put(sample(2))
        rows = queue.fetch(0, 10)
        assert [r.metrics for r in rows] == [(), (("t", "unit:SI.Temperature.CELSIUS"),
                                                  ("h", "unit:NoSI.Dimensionless.PERCENT")),
                                             (("t", "type:double"), ("h", "unit:NoSI.Dimensionless.PERCENT"))]
        assert sorted(map(sorted, queue.queued_layouts()["Air"])) == sorted(
            sorted(m.identity for m in spec.metrics) for spec in (AIR, changed))
    assert read_queued_sensors(tmp_path) == {"Air": 3}
    assert read_queued_sensors(tmp_path / "nowhere") == {}


def test_no_write_beyond_the_queue_files(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put_many([sample(i) for i in range(100)])
        queue.ack([r.id for r in queue.fetch(0, 50)])
    assert {p.name for p in tmp_path.iterdir()} <= {QUEUE_FILE, f"{QUEUE_FILE}-wal", f"{QUEUE_FILE}-shm",
                                                 f"{QUEUE_FILE}.record"}


def test_an_unusable_state_dir_is_one_clear_error(tmp_path: Path) -> None:
    """(A queue file that is not a database is moved aside instead: tests/test_queue_corruption.py.)"""
    target = tmp_path / "state"
    target.write_text("a file, not a directory")
    with pytest.raises(QueueOpenError, match="cannot open the sample queue"):
        SampleQueue(target, boot_id=BOOT)


def test_a_failed_commit_fails_only_its_puts_and_the_queue_carries_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A full database (SQLite's own page limit: as a full disk) fails the puts of that group
    with an error, logs once, and the queue stores again once there is room."""
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put(sample(0))
        pages = queue._call(lambda: queue._db.execute("PRAGMA page_count").fetchone()[0])
        queue._call(lambda: queue._db.execute(f"PRAGMA max_page_count = {pages}"))
        big = TakenSample("Air", {"t": 1.0, "note": "x" * 100_000}, T0_MS + 5000, 105.0, BOOT)
        with caplog.at_level(logging.ERROR, logger="pibridge.bridge.queue"):
            for _ in range(3):
                with pytest.raises(QueueWriteError, match="full"):
                    queue.put(big)
        assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1
        assert queue.write_error is not None and "full" in queue.write_error  # for the status
        queue._call(lambda: queue._db.execute("PRAGMA max_page_count = 1073741823"))
        queue.put(sample(1))
        assert queue.write_error is None
        queue.put(big)
        assert [r.timestamp_ms for r in queue.fetch(0, 10)] == [T0_MS, T0_MS + 1000, T0_MS + 5000]
        assert queue.depth == 3


# -- writes an SD card can live with -------------------------------------------------------------
WAL_HEADER = 32
WAL_FRAME_HEADER = 24


def wal_commits(db_path: Path) -> list[list[int]]:
    """The pages of each transaction in the WAL, in order (frame header: page number, then the
    database size after a commit frame, 0 for the others; sqlite.org/fileformat2.html#walformat)."""
    wal = db_path.with_name(db_path.name + "-wal")
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < WAL_HEADER:
        return []
    page_size = int.from_bytes(data[8:12], "big")
    commits: list[list[int]] = []
    pages: list[int] = []
    for offset in range(WAL_HEADER, len(data) - WAL_FRAME_HEADER + 1, WAL_FRAME_HEADER + page_size):
        pages.append(int.from_bytes(data[offset:offset + 4], "big"))
        if int.from_bytes(data[offset + 4:offset + 8], "big"):
            commits.append(pages)
            pages = []
    return commits


def test_a_batch_and_the_acks_before_it_are_one_small_transaction(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put_many([sample(i) for i in range(20)])
        before = len(wal_commits(queue.path))
        queue.ack([r.id for r in queue.fetch(0, 100)])
        assert queue.stats().depth == 0 and queue.fetch(0, 100) == []  # hidden at once…
        assert len(wal_commits(queue.path)) == before  # …but no transaction of their own
        queue.put_many([sample(i) for i in range(20, 40)])
        commits = wal_commits(queue.path)
        assert len(commits) == before + 1  # the 20 rows and the 20 deletes: one commit
        page_size = sqlite3.connect(queue.path).execute("PRAGMA page_size").fetchone()[0]
        assert page_size == PAGE_SIZE
        assert len(commits[-1]) * (page_size + WAL_FRAME_HEADER) / 20 <= 512  # bytes per sample
        assert [r.timestamp_ms for r in queue.fetch(0, 100)] == [T0_MS + i * 1000 for i in range(20, 40)]
    with SampleQueue(tmp_path, boot_id=BOOT) as again:
        assert again.depth == 20


def test_held_acks_are_deleted_at_close_and_before_exact_reads(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put_many([sample(i, sensor="Air" if i % 2 else "Soil") for i in range(6)])
        rows = queue.fetch(0, 10)
        queue.ack([r.id for r in rows if r.sensor == "Soil"])
        assert queue.queued_sensors() == {"Air": 3}
        assert read_queued_sensors(tmp_path) == {"Air": 3}   # deleted on disk for that read
        queue.ack([r.id for r in rows if r.sensor == "Air"][:1])
    assert read_queued_sensors(tmp_path) == {"Air": 2}       # and at close


def test_acks_without_new_samples_are_deleted_after_the_hold(tmp_path: Path) -> None:
    now = FakeTime()
    with SampleQueue(tmp_path, boot_id=BOOT, monotonic=lambda: now.mono) as queue:
        queue.put_many([sample(i) for i in range(3)])
        queue.ack([r.id for r in queue.fetch(0, 10)])
        assert read_queued_sensors(tmp_path) == {"Air": 3}   # held: not deleted yet
        queue.fetch(0, 10)                                   # the owner turns: too early
        assert read_queued_sensors(tmp_path) == {"Air": 3}
        now.mono += ACK_HOLD_S
        queue.fetch(0, 10)           # the owner's next turn (its timer, here a read) deletes them
        assert read_queued_sensors(tmp_path) == {}


def test_a_stamped_row_stores_no_boot_id_an_unstamped_one_does(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put_many([sample(0), sample(1, stamped=False)])
        rows = sqlite3.connect(queue.path).execute(
            "SELECT timestamp_ms, monotonic_s, boot_id FROM samples ORDER BY id").fetchall()
        assert rows == [(T0_MS, 0.0, ""), (None, 101.0, BOOT)]
        queue.resolve_timestamps(BOOT, 5)
        assert [r.timestamp_ms for r in queue.fetch(0, 10)] == [T0_MS, wall_timestamp_ms(101.0, 5)]


def test_stats_of_an_unchanged_queue_are_answered_without_the_owner_thread(tmp_path: Path) -> None:
    with SampleQueue(tmp_path, boot_id=BOOT) as queue:
        queue.put_many([sample(i) for i in range(3)])
        first = queue.stats()
        assert first.depth == 3 and first.oldest_timestamp_ms == T0_MS

        def no_owner(*args: object, **kwargs: object) -> None:
            raise AssertionError("stats went to the owner thread")
        call = queue._call
        queue._call = no_owner  # type: ignore[method-assign,assignment]
        assert queue.stats() == first
        queue._call = call  # type: ignore[method-assign]
        queue.ack([queue.fetch(0, 1)[0].id])
        after = queue.stats()                   # changed: read again
        assert after.depth == 2 and after.oldest_timestamp_ms == T0_MS + 1000
        queue.put(sample(5))
        assert queue.stats().depth == 3


def test_a_commit_hands_its_stamped_rows_over_as_fetch_would_return_them(tmp_path: Path) -> None:
    handed: list[list[QueuedSample] | None] = []
    with SampleQueue(tmp_path, boot_id=BOOT, max_samples=6) as queue:
        queue.set_specs({"Air": AIR})
        queue.add_batch_listener(handed.append)
        queue.put_many([sample(0), sample(1, stamped=False), sample(2)])
        queue.put(sample(3))
        assert len(handed) == 2 and handed[0] is not None and handed[1] is not None
        assert [r.timestamp_ms for r in handed[0]] == [T0_MS, T0_MS + 2000]   # the unstamped one: not
        assert handed[0] + handed[1] == [r for r in queue.fetch(0, 10)]       # ids, layout, values, event
        queue.put_many([sample(i) for i in range(4, 8)])                       # the bound drops two
        assert handed[2] is None                                               # read the disk
