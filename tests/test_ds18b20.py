"""DS18B20 family over a fake w1 sysfs tree: parsing, faults, bulk conversion."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pibridge.drivers.base import check_sample
from pibridge.drivers.ds18b20 import (
    DS18B20,
    crc8_maxim,
    kernel_millicelsius,
    parse_w1_slave,
)
from pibridge.drivers.errors import (
    BadDataError,
    ConfigurationError,
    DeviceNotFoundError,
    ImplausibleValueError,
    NotReadyError,
    SensorError,
)
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.w1 import FakeW1Bus, Outcome, ds18b20_scratchpad, kernel_t
from pibridge.drivers.simulation import Environment, SimulatedWorld

PROBE = "28-000005abb69d"


@pytest.fixture
def bus(tmp_path: Path) -> FakeW1Bus:
    return FakeW1Bus(tmp_path / "devices")


def probe_driver(bus: FakeW1Bus, device_id: str = PROBE) -> DS18B20:
    return DS18B20(files=bus, clock=bus.clock.monotonic, device_id=device_id, w1_root=str(bus.root))


def read_with_retries(driver: DS18B20, bus: FakeW1Bus) -> tuple[dict, list[SensorError]]:
    """The caller's loop for one sample: 1 + retry.attempts tries, spaced on the virtual clock."""
    errors: list[SensorError] = []
    for attempt in range(1 + driver.timing.retry.attempts):
        if attempt:
            bus.clock.sleep(driver.timing.retry.spacing_s)
        try:
            return check_sample(driver, driver.read(bus.clock.sleep)), errors
        except SensorError as exc:
            errors.append(exc)
            if not exc.retryable:
                break
    raise errors[-1]


# -- pure parsing -------------------------------------------------------------------------------
def test_crc8_reference_values() -> None:
    assert crc8_maxim(bytes.fromhex("3f004b467fff0110")) == 0x47
    assert crc8_maxim(b"\xff" * 8) == 0xC9
    assert crc8_maxim(bytes(8)) == 0x00
    assert crc8_maxim(bytes.fromhex("50054b467fff0c10")) == 0x1C


def test_parse_kernel_example() -> None:
    text = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
    reading = parse_w1_slave(text, "28")
    assert reading.celsius == 23.125
    assert reading.kernel_t_milli == 23125


@pytest.mark.parametrize(("celsius", "raw", "t_milli"), [
    (125.0, 0x07D0, 125000), (25.0625, 0x0191, 25062), (10.125, 0x00A2, 10125), (0.5, 0x0008, 500),
    (0.0, 0x0000, 0), (-0.0625, 0xFFFF, -62), (-0.5, 0xFFF8, -500), (-10.125, 0xFF5E, -10125),
    (-25.0625, 0xFE6F, -25062), (-55.0, 0xFC90, -55000),
])
def test_datasheet_table(bus: FakeW1Bus, celsius: float, raw: int, t_milli: int) -> None:
    bus.add_probe(PROBE, temperature=celsius)
    driver = probe_driver(bus)
    text = bus.read_text(bus.root / PROBE / "w1_slave")
    scratchpad = bytes.fromhex(text.split(":")[0])
    assert scratchpad[0] | scratchpad[1] << 8 == raw
    assert text.endswith(f"t={t_milli}\n")
    assert kernel_millicelsius(scratchpad, "28") == t_milli
    assert driver.read(bus.clock.sleep) == {"temperature": celsius}


def test_lower_resolution_masks_undefined_bits() -> None:
    # 9-bit config (0x1F) with garbage in the undefined bits 2..0 of 0x0197: they must be ignored
    pad = bytearray(ds18b20_scratchpad(0x0197, resolution=9))
    pad[6] = 0x10 - (pad[0] & 0x0F)
    pad[8] = crc8_maxim(bytes(pad[:8]))
    line = " ".join(f"{b:02x}" for b in pad) + " "
    text = f"{line}: crc={pad[8]:02x} YES\n{line}t={kernel_t(bytes(pad), '28')}\n"
    assert parse_w1_slave(text, "28").celsius == 0x0190 / 16  # bits 2..0 dropped


def test_ds18s20_extended_formula(bus: FakeW1Bus) -> None:
    text = "32 00 4b 46 ff ff 0c 10 6b : crc=6b YES\n32 00 4b 46 ff ff 0c 10 6b t=25000\n"
    assert crc8_maxim(bytes.fromhex("32004b46ffff0c10")) == 0x6B
    assert parse_w1_slave(text, "10").celsius == 25 - 0.25 + (16 - 12) / 16  # 25.0
    device = "10-000801b5a2f3"
    bus.add_probe(device, temperature=21.3)
    value = probe_driver(bus, device).read(bus.clock.sleep)["temperature"]
    assert value == pytest.approx(21.3, abs=1 / 32)
    assert value == 21.3125  # 21 - 0.25 + (16 - 7)/16


def test_ds18s20_negative(bus: FakeW1Bus) -> None:
    device = "10-000801b5a2f3"
    bus.add_probe(device, temperature=-10.2)
    assert probe_driver(bus, device).read(bus.clock.sleep)["temperature"] == pytest.approx(-10.2, abs=1 / 32)


# -- faults -------------------------------------------------------------------------------------
def test_crc_no_then_success_within_one_sample(bus: FakeW1Bus) -> None:
    probe = bus.add_probe(PROBE, temperature=18.5)
    probe.script(Outcome.CRC_NO)
    sample, errors = read_with_retries(probe_driver(bus), bus)
    assert sample == {"temperature": 18.5}
    assert len(errors) == 1 and isinstance(errors[0], BadDataError) and "NO" in str(errors[0])


def test_crc_no_line_keeps_last_good_bytes(bus: FakeW1Bus) -> None:
    probe = bus.add_probe(PROBE, temperature=18.5)
    driver = probe_driver(bus)
    driver.read(bus.clock.sleep)
    good = probe.scratchpad
    probe.script(Outcome.CRC_NO)
    text = bus.read_text(bus.root / PROBE / "w1_slave")
    line1, line2 = text.splitlines()
    assert line1.endswith(" NO") and line2.startswith(" ".join(f"{b:02x}" for b in good))


def test_empty_read_is_bad_data(bus: FakeW1Bus) -> None:
    bus.add_probe(PROBE).script(Outcome.EMPTY)
    with pytest.raises(BadDataError, match="empty") as info:
        probe_driver(bus).read(bus.clock.sleep)
    assert info.value.retryable


def test_power_on_85(bus: FakeW1Bus) -> None:
    bus.add_probe(PROBE).script(Outcome.POWER_ON)
    driver = probe_driver(bus)
    with pytest.raises(ImplausibleValueError, match="power-on"):
        driver.read(bus.clock.sleep)
    assert bus.read_text(bus.root / PROBE / "w1_slave").endswith("t=21500\n")  # next one converts


def test_genuine_85_passes(bus: FakeW1Bus) -> None:
    bus.add_probe(PROBE, temperature=85.0)
    # byte 6 is 0x10 after a conversion
    assert probe_driver(bus).read(bus.clock.sleep) == {"temperature": 85.0}


def test_insufficient_power_127(bus: FakeW1Bus) -> None:
    bus.add_probe(PROBE).script(Outcome.INSUFFICIENT_POWER)
    with pytest.raises(ImplausibleValueError, match=r"127\.9375"):
        probe_driver(bus).read(bus.clock.sleep)
    assert "t=127937" in (bus.root / "w1_bus_master1" / PROBE / "w1_slave").read_text()


def test_all_zero_is_not_a_reading_but_real_zero_is(bus: FakeW1Bus) -> None:
    probe = bus.add_probe(PROBE, temperature=0.0)
    driver = probe_driver(bus)
    probe.script(Outcome.ALL_ZERO)
    with pytest.raises(BadDataError, match="all-zero"):
        driver.read(bus.clock.sleep)
    assert driver.read(bus.clock.sleep) == {"temperature": 0.0}
    assert probe.scratchpad[6] == 0x10


def test_all_ff_floating_line(bus: FakeW1Bus) -> None:
    bus.add_probe(PROBE).script(Outcome.ALL_FF)
    text = bus.read_text(bus.root / PROBE / "w1_slave")
    assert text.startswith("ff ff ff ff ff ff ff ff ff : crc=c9 NO\n")
    bus.probes[PROBE].script(Outcome.ALL_FF)
    with pytest.raises(BadDataError):
        probe_driver(bus).read(bus.clock.sleep)


def test_stuck_value_repeats_scratchpad(bus: FakeW1Bus) -> None:
    probe = bus.add_probe(PROBE, temperature=20.0)
    driver = probe_driver(bus)
    assert driver.read(bus.clock.sleep) == {"temperature": 20.0}
    probe.temperature = 30.0
    probe.script(Outcome.STUCK)
    assert driver.read(bus.clock.sleep) == {"temperature": 20.0}
    assert driver.read(bus.clock.sleep) == {"temperature": 30.0}


def test_device_gone(bus: FakeW1Bus) -> None:
    bus.add_probe(PROBE)
    driver = probe_driver(bus)
    driver.read(bus.clock.sleep)
    bus.remove_probe(PROBE)
    with pytest.raises(DeviceNotFoundError) as info:
        driver.read(bus.clock.sleep)
    assert not info.value.retryable
    assert (bus.root / "w1_bus_master1" / "w1_master_slaves").read_text() == "not found.\n"


def test_device_vanishes_during_read(bus: FakeW1Bus) -> None:
    bus.add_probe(PROBE).script(Outcome.ENODEV)
    with pytest.raises(DeviceNotFoundError):
        probe_driver(bus).read(bus.clock.sleep)


def test_torn_or_malformed_text() -> None:
    good = "72 01 4b 46 7f ff 0e 10 57"
    with pytest.raises(BadDataError, match="does not match"):
        parse_w1_slave(f"{good} : crc=57 YES\n{good} t=23000\n", "28")
    with pytest.raises(BadDataError, match="malformed"):
        parse_w1_slave(f"{good} : crc=57 YES\n{good} t=\n", "28")
    with pytest.raises(BadDataError, match="lines"):
        parse_w1_slave(f"{good} : crc=57 YES\n", "28")


def test_bad_device_id() -> None:
    with pytest.raises(ConfigurationError):
        DS18B20(device_id="29-000005abb69d")
    with pytest.raises(ConfigurationError):
        DS18B20()


def test_a_read_costs_one_conversion_time(bus: FakeW1Bus) -> None:
    bus.add_probe(PROBE)
    t0 = bus.clock.monotonic()
    probe_driver(bus).read(bus.clock.sleep)
    assert 0.75 <= bus.clock.monotonic() - t0 <= DS18B20.read_time_s + 0.03  # + trigger and bus time


def test_tree_has_kernel_files(bus: FakeW1Bus) -> None:
    bus.add_probe(PROBE, resolution=11)
    slave = bus.root / PROBE
    assert slave.is_symlink()
    assert (slave / "resolution").read_text() == "11\n"
    assert (bus.root / "w1_bus_master1" / "w1_master_slaves").read_text() == f"{PROBE}\n"
    assert bus.read_text(slave / "temperature").endswith("\n")
    assert bus.read_text(bus.root / "w1_bus_master1" / "therm_bulk_read") == "0\n"


# -- two phases and bulk conversion -------------------------------------------------------------
def make_probes(bus: FakeW1Bus, n: int) -> list[DS18B20]:
    drivers = []
    for i in range(n):
        device_id = f"28-{0x5abb6900 + i:012x}"
        bus.add_probe(device_id, temperature=15.0 + i)
        drivers.append(probe_driver(bus, device_id))
    return drivers


def collect_all(probes: list[DS18B20]) -> dict[str, object]:
    results: dict[str, object] = {}
    for probe in probes:
        try:
            results[probe.device_id] = probe.collect()
        except SensorError as exc:
            results[probe.device_id] = exc
    return results


def test_bulk_one_trigger_serves_all(bus: FakeW1Bus) -> None:
    probes = make_probes(bus, 4)
    assert len({p.group_key() for p in probes}) == 1
    t0 = bus.clock.monotonic()
    wait = DS18B20.start_group(probes)  # blocks for the conversion, returns the rest
    assert bus.clock.monotonic() - t0 + wait == pytest.approx(DS18B20.read_time_s)
    bus.clock.sleep(wait)
    results = collect_all(probes)
    elapsed = bus.clock.monotonic() - t0
    assert results == {p.device_id: {"temperature": 15.0 + i} for i, p in enumerate(probes)}
    assert bus.bulk_triggers == 1 and bus.conversions == 1
    assert 0.75 <= elapsed < 2 * 0.75  # N probes cost one conversion time
    assert all(p.conversions == 1 for p in bus.probes.values())


def test_the_trigger_blocks_for_the_conversion_like_the_kernel(bus: FakeW1Bus) -> None:
    """w1_therm's trigger_bulk_read sleeps t_conv before the write returns (either power mode):
    start_group times the write and returns only what is left of read_time_s (the bus time)."""
    probes = make_probes(bus, 2)
    t0 = bus.clock.monotonic()
    wait = DS18B20.start_group(probes)
    blocked = bus.clock.monotonic() - t0
    assert blocked >= 0.75  # the 12-bit conversion, inside the write
    assert wait == pytest.approx(max(0.0, DS18B20.read_time_s - blocked))
    assert bus.clock.monotonic() - t0 + wait == pytest.approx(max(blocked, DS18B20.read_time_s))
    master = probes[0].master_dir()
    assert master is not None
    assert bus.read_text(master / "therm_bulk_read") == "1\n"  # converted, unread
    assert collect_all(probes) == {probes[0].device_id: {"temperature": 15.0},
                                   probes[1].device_id: {"temperature": 16.0}}
    assert bus.read_text(master / "therm_bulk_read") == "0\n"
    assert bus.conversions == 1


def test_trigger_states_seen_while_the_writer_sleeps(bus: FakeW1Bus) -> None:
    """What another reader sees during a trigger's sleep: -1 and empty w1_slave reads."""
    probes = make_probes(bus, 2)
    master = probes[0].master_dir()
    assert probes[0].group_key() == master is not None
    t_conv = bus.start_bulk_conversion()
    assert bus.read_text(master / "therm_bulk_read") == "-1\n"  # converting
    with pytest.raises(NotReadyError, match="in progress"):
        probes[0].collect()
    bus.clock.sleep(t_conv)
    assert bus.read_text(master / "therm_bulk_read") == "1\n"  # converted, unread
    assert probes[0].collect() == {"temperature": 15.0}
    assert bus.read_text(master / "therm_bulk_read") == "1\n"
    probes[1].collect()
    assert bus.read_text(master / "therm_bulk_read") == "0\n"
    assert bus.conversions == 1


def test_bulk_fallback_when_not_writable(bus: FakeW1Bus, caplog: pytest.LogCaptureFixture) -> None:
    bus.set_bulk_writable(False)
    probes = make_probes(bus, 3)
    with caplog.at_level(logging.WARNING, logger="pibridge.drivers.ds18b20"):
        for _ in range(3):
            t0 = bus.clock.monotonic()
            assert DS18B20.start_group(probes) == 0.0  # nothing to wait for: each read converts
            results = collect_all(probes)
            assert all(not isinstance(r, SensorError) for r in results.values())
            assert bus.clock.monotonic() - t0 >= 3 * 0.75  # one conversion per probe
    assert bus.bulk_triggers == 0 and bus.conversions == 9
    warnings = [r for r in caplog.records if "therm_bulk_read" in r.getMessage()
                and str(probes[0].master_dir()) in r.getMessage()]
    assert len(warnings) == 1


def test_bulk_reports_errors_per_probe(bus: FakeW1Bus) -> None:
    probes = make_probes(bus, 3)
    bus.probes[probes[1].device_id].script(Outcome.POWER_ON)
    bus.remove_probe(probes[2].device_id)
    assert probes[2].group_key() is None
    bus.clock.sleep(DS18B20.start_group(probes))
    results = collect_all(probes)
    assert results[probes[0].device_id] == {"temperature": 15.0}
    assert isinstance(results[probes[1].device_id], ImplausibleValueError)
    assert isinstance(results[probes[2].device_id], DeviceNotFoundError)


def test_start_group_refuses_other_drivers(bus: FakeW1Bus) -> None:
    from pibridge.drivers.cpu_temperature import CPUTemperature

    with pytest.raises(TypeError):
        DS18B20.start_group([CPUTemperature(read_text=lambda p: "1\n")])


def test_read_cost_benchmark_runs_and_shows_the_bulk_gain() -> None:
    """The benchmark script stays runnable; its DS18B20 section (10 probes under the fake's
    conversion-time model) shows one conversion instead of ten."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench" / "read_cost.py"
    result = subprocess.run([sys.executable, str(script), "--reads", "3", "--budget", "0.05"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        mode, _, details = line.strip().partition(" ")
        if mode in ("single", "bulk"):
            rows[mode] = dict(pair.split() for pair in details.split(", "))
    assert rows["single"]["conversions"] == "10" and rows["bulk"]["conversions"] == "1"
    assert float(rows["single"]["virtual_s"]) >= 10 * 0.75 > 2 * 0.75 > float(rows["bulk"]["virtual_s"])
    assert rows["single"]["failed"] == rows["bulk"]["failed"] == "0"


def test_simulated_follows_environment() -> None:
    env = Environment(seed=3, noise=0.0, clock=lambda: 14 * 3600.0)
    clock = VirtualClock()
    with SimulatedWorld(env, clock=clock) as world:
        driver = world.build("ds18b20", {"device_id": "28-0000075e3a1c"})
        value = check_sample(driver, driver.read(clock.sleep))["temperature"]
        assert value == pytest.approx(env.air_temperature(-4.0), abs=1 / 16)


def test_simulated_reads_write_no_file() -> None:
    """A simulated run's w1 tree answers reads from memory: no ``w1_slave`` file written per
    read (a Pi's sysfs costs no disk write; the fake's files would)."""
    clock = VirtualClock()
    with SimulatedWorld(Environment(seed=3, noise=0.5, clock=lambda: 14 * 3600.0), clock=clock) as world:
        driver = world.build("ds18b20", {"device_id": "28-0000075e3a1c"})
        slave_file = driver.slave_dir.resolve() / "w1_slave"
        before = slave_file.stat()
        for _ in range(3):
            clock.sleep(DS18B20.start_group([driver]))
            check_sample(driver, driver.collect())
        after = slave_file.stat()
        assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size) == (
            before.st_mtime_ns, 0)


def test_simulated_world_probes_share_one_master_and_one_conversion() -> None:
    """Under --simulate two probes sit on the world's one fake master: one start_group, one
    bulk conversion, both values."""
    clock = VirtualClock()
    with SimulatedWorld(Environment(seed=3, noise=0.0, clock=lambda: 14 * 3600.0), clock=clock) as world:
        probes = [world.build("ds18b20", {"device_id": device_id})
                  for device_id in ("28-000000000001", "28-000000000002")]
        assert probes[0].group_key() == probes[1].group_key() is not None
        fake = world.shared("w1", lambda: None)
        assert fake is not None and fake.conversions == 0
        clock.sleep(DS18B20.start_group(probes))
        values = [p.collect()["temperature"] for p in probes]
        assert fake.bulk_triggers == 1 and fake.conversions == 1
        assert values[0] == values[1]
        root = fake.root
    assert not root.exists()  # the world removed its fake tree


def test_real_files_are_read_bounded(tmp_path: Path) -> None:
    """SysfsFiles (the production file access) on a tree whose w1_slave is endless: one
    BadDataError, not a hang or a huge read."""
    slave = tmp_path / "28-000005abb69d"
    slave.mkdir()
    (slave / "w1_slave").symlink_to("/dev/zero")
    driver = DS18B20(device_id="28-000005abb69d", w1_root=str(tmp_path))
    with pytest.raises(BadDataError, match="more than"):
        driver.collect()


def test_without_the_w1_overlay_it_says_so_and_names_it(tmp_path: Path) -> None:
    """No /sys/bus/w1/devices at all: 1-Wire is not enabled (not "device gone"), and the fix
    is named as `pibridge scan` names it."""
    driver = DS18B20(device_id="28-000005abb69d", w1_root=str(tmp_path / "w1" / "devices"))
    with pytest.raises(DeviceNotFoundError) as info:
        driver.collect()
    assert "1-Wire is not enabled" in str(info.value) and "dtoverlay=w1-gpio" in str(info.value)
    assert "gone" not in str(info.value)


def test_master_resolved_once_and_again_after_a_failed_read(bus: FakeW1Bus) -> None:
    """`group_key` runs per probe per slot: the master's ``realpath`` is looked up once, and
    again only after a read failed (the probe gone, or back on another master)."""
    bus.add_probe(PROBE, temperature=20.0)
    driver = probe_driver(bus)
    resolved: list[Path] = []
    resolve = bus.resolve

    def counting_resolve(path: Path) -> Path:
        resolved.append(path)
        return resolve(path)

    bus.resolve = counting_resolve  # type: ignore[method-assign]
    for _ in range(3):
        assert driver.group_key() == bus.root / "w1_bus_master1"
        bus.clock.sleep(DS18B20.start_group([driver]))
        assert driver.collect() == {"temperature": 20.0}
    assert resolved.count(driver.slave_dir) == 1             # (the fake resolves its own paths too)
    bus.remove_probe(PROBE)
    with pytest.raises(DeviceNotFoundError):
        driver.collect()
    assert driver.group_key() is None                       # looked up again: gone
    (bus.root / "w1_bus_master2").mkdir()
    (bus.root / "w1_bus_master2" / "therm_bulk_read").write_text("0\n")
    bus.add_probe(PROBE, temperature=19.0, master="w1_bus_master2")
    assert driver.group_key() == bus.root / "w1_bus_master2"   # back, on another master
    bus.clock.sleep(DS18B20.start_group([driver]))
    assert driver.collect() == {"temperature": 19.0}
    looked_up = resolved.count(driver.slave_dir)
    bus.set_bulk_writable(False, "w1_bus_master2")          # the trigger fails for good (root-only)
    assert DS18B20.start_group([driver]) == 0.0
    assert driver.collect() == {"temperature": 19.0}        # converted on its own read
    assert driver.group_key() == bus.root / "w1_bus_master2"
    assert resolved.count(driver.slave_dir) == looked_up    # the master is still there: kept
    (bus.root / "w1_bus_master2" / "therm_bulk_read").unlink()   # the master gone (renumbered)
    assert DS18B20.start_group([driver]) == 0.0
    driver.group_key()
    assert resolved.count(driver.slave_dir) == looked_up + 1   # looked up again
