"""A fake Linux w1 bus: a real temp-dir sysfs tree plus the `W1Files` object that answers reads
the way w1_therm does (kernel ≥ 5.10 semantics, drivers/w1/slaves/w1_therm.c).

Tree (``root`` stands for ``/sys/bus/w1/devices``)::

    root/w1_bus_master1/            therm_bulk_read  w1_master_slaves  w1_master_slave_count
    root/w1_bus_master1/28-xxxx/    w1_slave  temperature  resolution  ext_power  conv_time ...
    root/28-xxxx -> w1_bus_master1/28-xxxx          (symlink, as in sysfs)

Every ``w1_slave`` / ``temperature`` read is generated on the spot in the kernel's exact text
(and, with ``mirror_reads``, also written to the file when it differs from what the file holds,
so the tree shows the last read; a simulated run's tree does not: no file written per read).
Paths are resolved once (the tree's links change only
through this object) and served from memory after. A read costs the conversion
time on a `VirtualClock` (nothing really sleeps); writing ``trigger`` to ``therm_bulk_read``
starts one conversion for all probes and blocks the writer for the conversion time, as the
kernel's ``trigger_bulk_read`` does with ``msleep_interruptible(t_conv)`` in both power modes
(parasite power holds the bus meanwhile, external power releases it: the same to one caller).
While it runs (`FakeW1Bus.start_bulk_conversion`: what another reader sees while the writer
sleeps), ``w1_slave`` reads are empty and ``therm_bulk_read`` reads -1; once the conversion time
has passed each probe's next read returns the converted scratchpad without a new conversion.

Faults are scripted per probe as a queue of `Outcome` values consumed one per conversion.
This module implements the kernel's side on its own (table CRC, C integer maths) rather than
reusing the driver's functions, so tests compare two independent implementations.
"""

from __future__ import annotations

import enum
import errno
import math
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .clock import VirtualClock

if TYPE_CHECKING:
    from ..ds18b20 import DS18B20
    from ..simulation import SimulatedWorld

CONVERSION_MS = {9: 95, 10: 190, 11: 375, 12: 750}  # what w1_therm sleeps per resolution
DS18S20_CONVERSION_MS = 750
W1_BUS_TIME_S = 0.02  # reset/select/convert/read of one slave, ~70 µs per bit slot
W1_BULK_CMD_TIME_S = 0.002  # reset + SKIP ROM + CONVERT T
TH_DEFAULT, TL_DEFAULT = 0x4B, 0x46
BYTE5, BYTE7 = 0xFF, 0x10
POWER_ON_RESERVED = 0x0C
COUNT_PER_C = 0x10
CONFIG_FOR_RES = {9: 0x1F, 10: 0x3F, 11: 0x5F, 12: 0x7F}
DS18S20_CONFIG = 0xFF  # byte 4 is reserved (0xFF) on the DS18S20
POWER_ON_RAW = {"10": 0x00AA, "other": 0x0550}
INSUFFICIENT_POWER_RAW = 0x07FF
BULK_IDLE, BULK_READY, BULK_CONVERTING = 0, 1, -1
MASTER = "w1_bus_master1"


class Outcome(enum.StrEnum):
    """What the next conversion/read of a probe does."""

    OK = "ok"  # converts the probe's temperature
    CRC_NO = "crc_no"  # one corrupted byte, printed as a NO line (older kernels)
    EMPTY = "empty"  # CRC failed 5 times: mainline returns an empty read
    POWER_ON = "power_on"  # no conversion happened: 85 °C with byte 6 = 0x0C
    INSUFFICIENT_POWER = "insufficient_power"  # raw 0x07FF (127.9375 °C)
    ALL_ZERO = "all_zero"  # data line held low: zeros, crc=00 YES
    ALL_FF = "all_ff"  # line floats high: ff..., crc=c9 NO
    STUCK = "stuck"  # the probe does not convert: same scratchpad as last time
    ENODEV = "enodev"  # the device vanished during the read


def _crc8_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC8 = _crc8_table()


def w1_calc_crc8(data: bytes) -> int:
    """The kernel's table-driven Maxim CRC-8."""
    crc = 0
    for b in data:
        crc = _CRC8[crc ^ b]
    return crc


def _cdiv(a: int, b: int) -> int:
    """C's ``/`` on ints: truncates toward zero."""
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


def kernel_t(rom: bytes, family: str) -> int:
    """``temperature_from_RAM`` of w1_therm: m°C, C integer maths."""
    if family == "10":
        if not rom[7]:
            return 0
        t = (rom[0] >> 1) * 1000 if rom[1] == 0 else 1000 * (-1 * (0x100 - rom[0]) >> 1)
        t -= 250
        return t + _cdiv(1000 * (rom[7] - rom[6]), rom[7])
    bv = rom[0] | rom[1] << 8
    if rom[4] & 0x80:  # GX20MH01 13/14-bit mode
        bv = ((bv << 2) | (rom[4] & 3)) & 0xFFFF
        t = bv - 0x10000 if bv & 0x8000 else bv
        return _cdiv(t * 1000, 64)
    t = bv - 0x10000 if bv & 0x8000 else bv
    return _cdiv(t * 1000, 16)


def _with_crc(body: Iterable[int]) -> bytes:
    data = bytes(body)
    return data + bytes([w1_calc_crc8(data)])


def ds18b20_scratchpad(raw: int, resolution: int = 12, reserved6: int | None = None) -> bytes:
    """Scratchpad of a DS18B20-family part holding ``raw`` (s16, 1/16 °C)."""
    raw &= 0xFFFF
    lsb, msb = raw & 0xFF, raw >> 8
    b6 = (0x10 - (lsb & 0x0F)) if reserved6 is None else reserved6
    return _with_crc([lsb, msb, TH_DEFAULT, TL_DEFAULT, CONFIG_FOR_RES[resolution], BYTE5, b6, BYTE7])


def ds18s20_scratchpad(celsius: float) -> bytes:
    """Scratchpad of a DS18S20 measuring ``celsius`` (9-bit value plus COUNT_REMAIN)."""
    raw = math.floor(celsius * 2 + 0.5)
    temp_read = raw >> 1
    remain = COUNT_PER_C - round((celsius - temp_read + 0.25) * COUNT_PER_C)
    remain = min(COUNT_PER_C, max(0, remain))
    raw &= 0xFFFF
    return _with_crc([raw & 0xFF, raw >> 8, TH_DEFAULT, TL_DEFAULT, DS18S20_CONFIG, BYTE5, remain,
                      COUNT_PER_C])


def celsius_to_raw(celsius: float, resolution: int = 12) -> int:
    """The DS18B20's s16 reading for ``celsius``, undefined low bits zeroed."""
    raw = math.floor(celsius * 16 + 0.5)
    return raw & ~((1 << (12 - resolution)) - 1)


@dataclass
class FakeProbe:
    """One slave on the fake bus. ``temperature`` is °C or a callable giving °C."""

    device_id: str
    temperature: float | Callable[[], float] = 21.5
    resolution: int = 12
    master: str = MASTER
    outcomes: deque[Outcome] = field(default_factory=deque)
    present: bool = True
    scratchpad: bytes = b""
    family_data: bytes = bytes(9)  # the kernel's "last good" copy starts zeroed
    convert_triggered: int = BULK_IDLE
    bulk_done_at: float = 0.0
    conversions: int = 0
    reads: int = 0
    last_outcome: Outcome = Outcome.OK

    @property
    def family(self) -> str:
        return self.device_id[:2]

    def power_on(self) -> bytes:
        if self.family == "10":
            raw = POWER_ON_RAW["10"]
            return _with_crc([raw & 0xFF, raw >> 8, TH_DEFAULT, TL_DEFAULT, DS18S20_CONFIG, BYTE5,
                              POWER_ON_RESERVED, COUNT_PER_C])
        return ds18b20_scratchpad(POWER_ON_RAW["other"], self.resolution, POWER_ON_RESERVED)

    def conversion_s(self) -> float:
        ms = DS18S20_CONVERSION_MS if self.family == "10" else CONVERSION_MS[self.resolution]
        return ms / 1000

    def script(self, *outcomes: Outcome | str) -> None:
        """Queue outcomes for the next conversions (then back to OK)."""
        self.outcomes.extend(Outcome(o) for o in outcomes)

    def measure(self) -> bytes:
        value = self.temperature() if callable(self.temperature) else self.temperature
        if self.family == "10":
            return ds18s20_scratchpad(value)
        return ds18b20_scratchpad(celsius_to_raw(value, self.resolution), self.resolution)


class FakeW1Bus:
    """The tree under ``root`` plus the files object (read_text/write_text/exists/is_writable/
    resolve) a `pibridge.drivers.ds18b20.DS18B20` is given. ``bulk_writable=False`` models the kernel's
    root-only ``therm_bulk_read``. ``mirror_reads``: each generated ``w1_slave`` / ``temperature``
    text is also written into the tree (a test reads the files; a simulated run has no reader,
    and a file written per read would cost the run a disk write the Pi's sysfs does not)."""

    def __init__(self, root: Path, clock: Any = None, bulk_writable: bool = True,
                 mirror_reads: bool = True) -> None:
        self.root = Path(root)
        self.mirror_reads = mirror_reads
        self.clock = clock or VirtualClock()
        self.probes: dict[str, FakeProbe] = {}
        self.conversions = 0
        self.bulk_triggers = 0
        #: path -> real path; the links change only in add_probe/remove_probe, which clear it
        self._resolved: dict[Path, Path] = {}
        #: generated file -> the text last written to it (written again only when it changes)
        self._shown: dict[Path, str] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        self._make_master(MASTER, bulk_writable)

    # -- building the tree -------------------------------------------------------------------
    def _make_master(self, name: str, bulk_writable: bool) -> None:
        master = self.root / name
        master.mkdir(exist_ok=True)
        (master / "therm_bulk_read").write_text(f"{BULK_IDLE}\n")
        self.set_bulk_writable(bulk_writable, name)
        self._write_slave_list(name)

    def set_bulk_writable(self, writable: bool, master: str = MASTER) -> None:
        mode = 0o644 if writable else 0o444  # the kernel: S_IRUGO | S_IWUSR, owned by root
        os.chmod(self.root / master / "therm_bulk_read", mode)

    def add_probe(self, device_id: str, temperature: float | Callable[[], float] = 21.5,
                  resolution: int = 12, master: str = MASTER) -> FakeProbe:
        probe = FakeProbe(device_id, temperature, resolution, master)
        probe.scratchpad = probe.power_on()
        self.probes[device_id] = probe
        d = self.root / master / device_id
        d.mkdir()
        for name, text in (("w1_slave", ""), ("temperature", ""), ("ext_power", "1\n"),
                           ("conv_time", f"{int(probe.conversion_s() * 1000)}\n"), ("features", "0\n"),
                           ("alarms", f"{TL_DEFAULT} {TH_DEFAULT}\n"), ("name", f"{device_id}\n")):
            (d / name).write_text(text)
        if probe.family != "10":
            (d / "resolution").write_text(f"{resolution}\n")
        link = self.root / device_id
        link.symlink_to(Path(master) / device_id)
        self._write_slave_list(master)
        self._forget_paths()
        return probe

    def remove_probe(self, device_id: str) -> None:
        """The probe is unplugged and the master's search has noticed: its directory goes."""
        probe = self.probes[device_id]
        probe.present = False
        (self.root / device_id).unlink()
        d = self.root / probe.master / device_id
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
        self._write_slave_list(probe.master)
        self._forget_paths()

    def _forget_paths(self) -> None:
        self._resolved.clear()
        self._shown.clear()

    def _write_slave_list(self, master: str) -> None:
        names = [p.device_id for p in self.probes.values() if p.master == master and p.present]
        m = self.root / master
        (m / "w1_master_slaves").write_text("".join(f"{n}\n" for n in names) or "not found.\n")
        (m / "w1_master_slave_count").write_text(f"{len(names)}\n")

    # -- W1Files -----------------------------------------------------------------------------
    def exists(self, path: Path) -> bool:
        return os.path.exists(path)

    def resolve(self, path: Path) -> Path:
        real = self._resolved.get(path)
        if real is None:
            real = self._resolved[path] = Path(os.path.realpath(path))
        return real

    def is_writable(self, path: Path) -> bool:
        return bool(os.stat(path).st_mode & stat.S_IWUSR)

    def read_text(self, path: Path) -> str:
        real = self.resolve(path)
        if real.name == "therm_bulk_read":
            return f"{self._bulk_state(real.parent.name)}\n"
        probe = self._probe_at(real.parent)
        if probe is None or real.name not in ("w1_slave", "temperature"):
            return real.read_text()  # static attribute, or ENOENT like the OS
        text = self._slave_show(probe) if real.name == "w1_slave" else self._temperature_show(probe)
        if self.mirror_reads and probe.present and self._shown.get(real) != text:
            real.write_text(text)
            self._shown[real] = text
        return text

    def write_text(self, path: Path, text: str) -> None:
        real = self.resolve(path)
        if not self.is_writable(real):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        if real.name == "therm_bulk_read" and text.strip() == "trigger":
            self._trigger_bulk(real.parent.name)
            return
        self._shown.pop(real, None)
        real.write_text(text)

    # -- kernel behaviour ----------------------------------------------------------------------
    def _probe_at(self, slave_dir: Path) -> FakeProbe | None:
        probe = self.probes.get(slave_dir.name)
        if probe is None:
            return None
        if not probe.present:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(slave_dir))
        return probe

    def _bulk_state(self, master: str) -> int:
        states = [self._triggered(p) for p in self.probes.values() if p.master == master and p.present]
        if BULK_CONVERTING in states:
            return BULK_CONVERTING
        return BULK_READY if BULK_READY in states else BULK_IDLE

    def _triggered(self, probe: FakeProbe) -> int:
        if probe.convert_triggered == BULK_CONVERTING and self.clock.monotonic() >= probe.bulk_done_at:
            probe.convert_triggered = BULK_READY
        return probe.convert_triggered

    def start_bulk_conversion(self, master: str = MASTER) -> float:
        """Issue SKIP ROM + CONVERT T on ``master`` without waiting (as seen by another reader
        while the writer sleeps). Returns the conversion time in seconds."""
        members = [p for p in self.probes.values() if p.master == master and p.present]
        t_conv = max((p.conversion_s() for p in members), default=0.0)
        self.bulk_triggers += 1
        self.conversions += 1
        self.clock.sleep(W1_BULK_CMD_TIME_S)
        for p in members:
            p.convert_triggered = BULK_CONVERTING
            p.bulk_done_at = self.clock.monotonic() + t_conv
            self._convert(p)
        return t_conv

    def _trigger_bulk(self, master: str) -> None:
        t_conv = self.start_bulk_conversion(master)
        self.clock.sleep(t_conv)  # the writer blocks like the kernel's msleep(t_conv), either power mode

    def _convert(self, probe: FakeProbe) -> Outcome:
        """One CONVERT T on the probe: updates its scratchpad per the scripted outcome."""
        outcome = probe.outcomes.popleft() if probe.outcomes else Outcome.OK
        probe.conversions += 1
        if outcome is Outcome.OK:
            probe.scratchpad = probe.measure()
        elif outcome is Outcome.POWER_ON:
            probe.scratchpad = probe.power_on()
        elif outcome is Outcome.INSUFFICIENT_POWER:
            probe.scratchpad = ds18b20_scratchpad(INSUFFICIENT_POWER_RAW, probe.resolution)
        # the other outcomes act on the read itself
        probe.last_outcome = outcome
        return outcome

    def _read_rom(self, probe: FakeProbe, outcome: Outcome) -> bytes:
        """The 9 bytes the master clocks in for this read."""
        if outcome is Outcome.ALL_ZERO:
            return bytes(9)
        if outcome is Outcome.ALL_FF:
            return b"\xff" * 9
        if outcome is Outcome.CRC_NO:
            corrupted = bytearray(probe.scratchpad)
            corrupted[0] ^= 0x04
            return bytes(corrupted)
        return probe.scratchpad

    def _read_slave(self, probe: FakeProbe) -> bytes | None:
        """convert_t / read_scratchpad of w1_therm; None means the kernel returned an error."""
        probe.reads += 1
        state = self._triggered(probe)
        if state == BULK_CONVERTING:
            return None  # "Conversion in progress, retry later": 0 bytes
        if state == BULK_READY:
            probe.convert_triggered = BULK_IDLE
            outcome = probe.last_outcome
        else:
            outcome = self._convert(probe)
            self.conversions += 1
            self.clock.sleep(probe.conversion_s())
        self.clock.sleep(W1_BUS_TIME_S)
        if outcome is Outcome.ENODEV:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        if outcome is Outcome.EMPTY:
            return None
        return self._read_rom(probe, outcome)

    def _slave_show(self, probe: FakeProbe) -> str:
        rom = self._read_slave(probe)
        if rom is None:
            return ""
        crc = w1_calc_crc8(rom[:8])
        verdict = crc == rom[8]
        line1 = "".join(f"{b:02x} " for b in rom) + f": crc={crc:02x} {'YES' if verdict else 'NO'}\n"
        if verdict:
            probe.family_data = rom
        line2 = "".join(f"{b:02x} " for b in probe.family_data) + f"t={kernel_t(rom, probe.family)}\n"
        return line1 + line2

    def _temperature_show(self, probe: FakeProbe) -> str:
        rom = self._read_slave(probe)
        if rom is None or w1_calc_crc8(rom[:8]) != rom[8]:
            return ""
        return f"{kernel_t(rom, probe.family)}\n"


SOIL_OFFSET_C = -4.0  #: a soil probe: a few degrees below the air


def simulate(world: SimulatedWorld, cls: type[DS18B20], options: dict[str, Any]) -> DS18B20:
    """A DS18B20 driver on the world's one fake w1 tree (one master: every simulated probe shares
    it, so a bulk conversion covers them all), its probe following the soil temperature."""
    options = dict(options)  # the user's options only: a missing device_id fails as on a Pi
    config = cls.check_options(options)
    bus = world.shared("w1", lambda: FakeW1Bus(world.scratch_dir("w1"), clock=world.clock,
                                               mirror_reads=False))
    device_id = config["device_id"].strip().lower()
    if device_id not in bus.probes:
        bus.add_probe(device_id, temperature=lambda: world.environment.air_temperature(SOIL_OFFSET_C))
    options["w1_root"] = str(bus.root)
    return cls(files=bus, clock=world.clock.monotonic, **options)
