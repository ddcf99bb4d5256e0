"""DS18B20 and its 1-Wire relatives (families 10/22/28/3b/42) through Linux w1-gpio + w1_therm.

The kernel does the 1-Wire protocol; the driver reads the slave's ``w1_slave`` text file, checks
both lines, recomputes the temperature from the nine scratchpad bytes (CRC-8 Maxim verified) and
cross-checks the kernel's ``t=``. All file access goes through a small injectable object
(`W1Files`; `SysfsFiles` is the real one, `pibridge.drivers.fakes.w1.FakeW1Bus` the fake), so the same
code runs against real sysfs, a scripted fake tree and ``--simulate``.

Two phases (the caller owns the wait): ``start()`` writes ``trigger`` to the master's
``therm_bulk_read`` (SKIP ROM + CONVERT T: every probe on that master converts at once) and returns
what is left of the conversion time; ``collect()`` reads ``w1_slave``, which then returns the
converted scratchpad without a new conversion (collected too early, e.g. while another process's
trigger runs: the kernel returns nothing, `NotReadyError`). w1_therm's ``trigger_bulk_read`` sleeps
the conversion time (``msleep_interruptible(t_conv)``) before the write returns, in both power
modes (parasite power: holding the bus with the strong pull-up; external power: after releasing the
bus), so the write itself blocks for the conversion; start times it on its clock and returns
``max(0, read_time_s − elapsed)``. Probes on one master share that trigger: they return the same
`DS18B20.group_key` and `DS18B20.start_group` triggers once for all of them, one conversion time
for N probes. Where ``therm_bulk_read`` is not writable (the kernel makes it root-only), start does
nothing, each ``collect()`` converts on its own read (the kernel blocks that read for the
conversion time), and this is logged once per master.

All file access goes through ``files`` (`W1Files`); the real one reads at most
`pibridge.drivers.files.DEFAULT_MAX_BYTES` and gives up after a timeout.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from .base import Driver, Metric, Option, OptionProblem, Resources, RetryPolicy, Sample
from .crc import crc8_maxim
from .errors import (
    BadDataError,
    BusError,
    DeviceNotFoundError,
    ImplausibleValueError,
    NotReadyError,
    SensorError,
)
from .files import read_small_text
from .intmath import c_div

log = logging.getLogger(__name__)

W1_DEVICES = "/sys/bus/w1/devices"
W1_SLAVE_FILE = "w1_slave"
BULK_READ_FILE = "therm_bulk_read"
BULK_TRIGGER = "trigger\n"
#: ``therm_bulk_read`` reads: -1 converting, 1 converted but not read yet, 0 idle.
BULK_CONVERTING = -1

#: family code -> chip name. 10 uses the DS18S20 rule, the others the /16 rule
#: (DS18S20 datasheet: 0.5 °C LSB refined by COUNT_REMAIN; DS18B20: 1/16 °C LSB).
FAMILIES: dict[str, str] = {
    "10": "DS18S20", "22": "DS1822", "28": "DS18B20", "3b": "DS1825", "42": "DS28EA00"}
FAMILY_DS18S20 = "10"
#: a w1 slave's name (any family): family code, "-", 48-bit serial in 12 lowercase hex digits
W1_SLAVE_NAME = r"([0-9a-f]{2})-[0-9a-f]{12}"
W1_SLAVE_RE = re.compile(f"^{W1_SLAVE_NAME}$")
#: a temperature probe's device id: a w1 slave name of one of `FAMILIES`
DEVICE_ID_RE = re.compile(f"^(?=(?:{'|'.join(FAMILIES)})-){W1_SLAVE_NAME}$")

SCRATCHPAD_LEN = 9
CRC_LEN = 8  # the CRC covers bytes 0..7 and is byte 8
# scratchpad byte positions (DS18B20 datasheet; DS18S20 differs in 4, 6, 7)
B_TEMP_LSB, B_TEMP_MSB, B_CONFIG, B_RESERVED6, B_RESERVED7 = 0, 1, 4, 6, 7
COUNT_REMAIN, COUNT_PER_C = 6, 7  # DS18S20 only
CONFIG_RES_SHIFT = 5
CONFIG_RES_MASK = 0x03
MIN_RESOLUTION_BITS = 9
MAX_RESOLUTION_BITS = 12
CONFIG_GX20MH01_BIT = 0x80  # GX20MH01 13/14-bit mode: two extra LSBs in config bits 1..0
CONFIG_EXTRA_BITS_MASK = 0x03
COUNTS_PER_C = 16  # DS18B20 family: raw / 16 = °C
GX20MH01_COUNTS_PER_C = 64
DS18S20_HALF_DEGREE = 0.25  # the "-0.25" of the DS18S20 extended-resolution formula
MILLI = 1000
S16_SIGN, S16_RANGE = 0x8000, 0x10000

POWER_ON_RESERVED6 = 0x0C  # genuine parts: 0x0C until the first conversion
POWER_ON_RAW = 0x0550  # +85 °C, DS18B20 family
POWER_ON_RAW_DS18S20 = 0x00AA  # +85 °C, DS18S20
INSUFFICIENT_POWER_RAW = 0x07FF  # 127.9375 °C: "insufficient power" in the kernel docs
RANGE_C = (-55.0, 125.0)  # datasheet operating range, all families

#: DS18B20 max conversion time (datasheet) per resolution in bits; DS18S20 is always 750 ms.
CONVERSION_TIME_S: dict[int, float] = {9: 0.09375, 10: 0.1875, 11: 0.375, 12: 0.75}
W1_BUS_TIME_S = 0.02  # reset + match ROM + convert + reset + match ROM + 9 bytes, ~70 µs/bit

# ``w1_slave`` as printed by the kernel's w1_slave_show (drivers/w1/slaves/w1_therm.c):
#
#   +-------------------------------+------------------------+
#   | 72 01 4b 46 7f ff 0e 10 57    | : crc=57 YES           |  bytes of THIS read, CRC verdict
#   | 72 01 4b 46 7f ff 0e 10 57    | t=23125                |  LAST GOOD bytes, t= of THIS read
#   +-------------------------------+------------------------+
#   byte: 0 T_LSB  1 T_MSB  2 TH  3 TL  4 config  5 0xFF  6 reserved (0x0C at power-on,
#         0x10-(T_LSB&0x0F) after a conversion)  7 0x10  8 CRC-8 of bytes 0..7
#   DS18S20: 0 T_LSB (0.5 °C)  1 sign  4 0xFF  6 COUNT_REMAIN  7 COUNT_PER_C
_HEX_BYTES = r"((?:[0-9a-f]{2} ){9})"
_LINE1_RE = re.compile(_HEX_BYTES + r": crc=([0-9a-f]{2}) (YES|NO)$")
_LINE2_RE = re.compile(_HEX_BYTES + r"t=(-?\d+)$")


# -- pure functions: bytes/text -> values ---------------------------------------------------------
def _s16(msb: int, lsb: int) -> int:
    value = (msb << 8) | lsb
    return value - S16_RANGE if value & S16_SIGN else value


def kernel_millicelsius(scratchpad: bytes, family: str) -> int:
    """The ``t=`` value the kernel prints for these bytes (w1_therm's integer maths, m°C)."""
    if family == FAMILY_DS18S20:
        if scratchpad[COUNT_PER_C] == 0:
            return 0
        lsb = scratchpad[B_TEMP_LSB]
        t = (lsb >> 1) * MILLI if scratchpad[B_TEMP_MSB] == 0 else MILLI * (-(0x100 - lsb) >> 1)
        t -= MILLI // 4
        t += c_div(MILLI * (scratchpad[COUNT_PER_C] - scratchpad[COUNT_REMAIN]), scratchpad[COUNT_PER_C])
        return t
    config = scratchpad[B_CONFIG]
    if config & CONFIG_GX20MH01_BIT:
        bits = (scratchpad[B_TEMP_MSB] << 8 | scratchpad[B_TEMP_LSB]) << 2
        bits = (bits | (config & CONFIG_EXTRA_BITS_MASK)) & 0xFFFF
        return c_div(_s16(bits >> 8, bits & 0xFF) * MILLI, GX20MH01_COUNTS_PER_C)
    return c_div(_s16(scratchpad[B_TEMP_MSB], scratchpad[B_TEMP_LSB]) * MILLI, COUNTS_PER_C)


def resolution_bits(config: int) -> int:
    """Resolution (9..12 bits) from the config byte: ``(cfg >> 5) + 9``."""
    return ((config >> CONFIG_RES_SHIFT) & CONFIG_RES_MASK) + MIN_RESOLUTION_BITS


def scratchpad_celsius(scratchpad: bytes, family: str) -> float:
    """°C from the scratchpad bytes; undefined low bits below 12-bit resolution are masked off.
    DS18S20: ``T = temp_read - 0.25 + (COUNT_PER_C - COUNT_REMAIN) / COUNT_PER_C``."""
    if family == FAMILY_DS18S20:
        per_c = scratchpad[COUNT_PER_C]
        if per_c == 0:
            raise BadDataError("DS18S20 scratchpad has COUNT_PER_C = 0")
        temp_read = _s16(scratchpad[B_TEMP_MSB], scratchpad[B_TEMP_LSB]) >> 1
        return temp_read - DS18S20_HALF_DEGREE + (per_c - scratchpad[COUNT_REMAIN]) / per_c
    config = scratchpad[B_CONFIG]
    if config & CONFIG_GX20MH01_BIT:
        raw = _s16(scratchpad[B_TEMP_MSB], scratchpad[B_TEMP_LSB]) * 4 + (config & CONFIG_EXTRA_BITS_MASK)
        return raw / GX20MH01_COUNTS_PER_C
    undefined_bits = MAX_RESOLUTION_BITS - resolution_bits(config)
    raw = _s16(scratchpad[B_TEMP_MSB], scratchpad[B_TEMP_LSB]) & ~((1 << undefined_bits) - 1)
    return raw / COUNTS_PER_C


@dataclass(frozen=True)
class W1Reading:
    """One parsed ``w1_slave`` read: the scratchpad of this read, the kernel's t= (m°C), our °C."""

    scratchpad: bytes
    kernel_t_milli: int
    celsius: float


def parse_w1_slave(text: str, family: str) -> W1Reading:
    """Parse and check a ``w1_slave`` text (format drawn above). Raises `BadDataError` for empty,
    malformed, CRC-failed, all-zero or torn reads and `ImplausibleValueError` for the power-on
    85 °C signature, 127.9375 °C and values outside −55..125 °C."""
    if not text.strip():
        raise BadDataError("empty w1_slave read (the kernel's CRC retries failed or the probe is silent)")
    lines = text.splitlines()
    if len(lines) != 2:
        raise BadDataError(f"w1_slave has {len(lines)} lines, expected 2: {text!r}")
    m1, m2 = _LINE1_RE.match(lines[0]), _LINE2_RE.match(lines[1])
    if m1 is None or m2 is None:
        raise BadDataError(f"malformed w1_slave text: {text!r}")
    scratchpad = bytes.fromhex(m1.group(1))
    last_good = bytes.fromhex(m2.group(1))
    kernel_crc, verdict, t_milli = int(m1.group(2), 16), m1.group(3), int(m2.group(2))
    if verdict != "YES":
        raise BadDataError(f"scratchpad CRC mismatch (crc={kernel_crc:02x} NO): {lines[0]}")
    crc = crc8_maxim(scratchpad[:CRC_LEN])
    if crc != scratchpad[CRC_LEN] or crc != kernel_crc:
        raise BadDataError(f"scratchpad CRC {crc:02x} does not match byte 8 / the kernel's crc: {lines[0]}")
    if not any(scratchpad):
        raise BadDataError("all-zero scratchpad: data line held low or probe gone (not a reading)")
    if last_good != scratchpad:
        raise BadDataError(f"torn read: second line {m2.group(1).strip()} differs from the first")
    expected_t = kernel_millicelsius(scratchpad, family)
    if expected_t != t_milli:
        raise BadDataError(f"kernel t={t_milli} does not match the scratchpad ({expected_t})")
    raw = (scratchpad[B_TEMP_MSB] << 8) | scratchpad[B_TEMP_LSB]
    power_on_raw = POWER_ON_RAW_DS18S20 if family == FAMILY_DS18S20 else POWER_ON_RAW
    if raw == power_on_raw and scratchpad[B_RESERVED6] == POWER_ON_RESERVED6:
        raise ImplausibleValueError("85 °C power-on scratchpad: no conversion happened (parasite power?)")
    if family != FAMILY_DS18S20 and raw == INSUFFICIENT_POWER_RAW:
        raise ImplausibleValueError("127.9375 °C (raw 0x07FF): insufficient power on the 1-Wire bus")
    celsius = scratchpad_celsius(scratchpad, family)
    if not RANGE_C[0] <= celsius <= RANGE_C[1]:
        raise ImplausibleValueError(f"{celsius} °C is outside the sensor's range {RANGE_C}")
    return W1Reading(scratchpad, t_milli, celsius)


# -- file access -------------------------------------------------------------------------------
class W1Files(Protocol):
    """The file operations the driver needs; raises `OSError` like the OS does."""

    def read_text(self, path: Path) -> str: ...
    def write_text(self, path: Path, text: str) -> None: ...
    def exists(self, path: Path) -> bool: ...
    def is_writable(self, path: Path) -> bool: ...
    def resolve(self, path: Path) -> Path: ...


class SysfsFiles:
    """`W1Files` on the real filesystem. A ``w1_slave`` read without a bulk conversion blocks in
    the kernel for the conversion time; every read is bounded in size and time
    (`read_small_text`)."""

    def read_text(self, path: Path) -> str:
        return read_small_text(path)

    def write_text(self, path: Path, text: str) -> None:
        with open(path, "w", encoding="ascii") as f:
            f.write(text)

    def exists(self, path: Path) -> bool:
        return os.path.exists(path)

    def is_writable(self, path: Path) -> bool:
        return os.access(path, os.W_OK)

    def resolve(self, path: Path) -> Path:
        return Path(os.path.realpath(path))


_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})
#: Without the w1-gpio overlay there is no w1 bus directory at all (not a probe gone: none was
#: ever there); the same words as `pibridge scan`.
W1_NOT_ENABLED = ("1-Wire is not enabled ({root} not found): add dtoverlay=w1-gpio to "
                  "/boot/firmware/config.txt and reboot")


def _map_os_error(exc: OSError, what: str) -> SensorError:
    if exc.errno in (errno.EFBIG, errno.ETIMEDOUT):
        return BadDataError(f"{what}: {exc.strerror} from {exc.filename} (not a w1 attribute?)")
    if exc.errno in _GONE_ERRNOS:
        return DeviceNotFoundError(f"{what}: device gone ({os.strerror(exc.errno or 0)})")
    if exc.errno == errno.EIO:
        return BadDataError(f"{what}: I/O error on the 1-Wire bus")
    return BusError(f"{what}: {exc}")


# -- the driver --------------------------------------------------------------------------------
class DS18B20(Driver):
    """One 1-Wire temperature probe (DS18B20, DS18S20, DS1822, DS1825, DS28EA00) via w1_therm."""

    name = "ds18b20"
    description = "1-Wire temperature probe (DS18B20/DS18S20/DS1822/DS1825/DS28EA00) via Linux w1_therm"
    metrics = (Metric("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),)
    options = (
        Option("device_id", str, None, "w1 slave name, e.g. 28-000005abb69d (family 10/22/28/3b/42)",
               required=True),
        Option("w1_root", str, W1_DEVICES, "directory holding the w1 slave entries"),
    )
    read_time_s = CONVERSION_TIME_S[MAX_RESOLUTION_BITS] + W1_BUS_TIME_S
    min_interval_s = 0.0
    retry = RetryPolicy(attempts=2, spacing_s=0.1)
    simulator = "pibridge.drivers.fakes.w1:simulate"
    example_options: ClassVar[Mapping[str, Any]] = {"device_id": "28-000005abb69d"}

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        if DEVICE_ID_RE.match(config["device_id"].strip().lower()):
            return []
        families = ", ".join(FAMILIES)
        return [OptionProblem("device_id", f"option device_id: {config['device_id']!r} is not a w1 "
                              f"temperature slave (families {families} followed by 12 hex digits)")]

    @classmethod
    def resources(cls, config: Mapping[str, Any]) -> Resources:
        """The probe's device id on the 1-Wire master."""
        return Resources(w1=(config["device_id"].strip().lower(),))

    def __init__(self, files: W1Files | None = None, *, clock: Callable[[], float] = time.monotonic,
                 **options: Any) -> None:
        """``files``: the file access (real sysfs by default); ``clock``: monotonic seconds, to time
        the bulk trigger's write (the kernel blocks it for the conversion)."""
        super().__init__(**options)
        self.clock = clock
        device_id = self.config["device_id"].strip().lower()
        self.device_id = device_id
        self.family = device_id[:2]
        self.w1_root = Path(self.config["w1_root"])
        self.files: W1Files = files if files is not None else SysfsFiles()
        self._master: Path | None = None   # the resolved master directory (`master_dir`)

    @property
    def slave_dir(self) -> Path:
        return self.w1_root / self.device_id

    def master_dir(self) -> Path | None:
        """The w1 master directory this probe hangs off (holds ``therm_bulk_read``), or None if
        the probe's directory is gone. Resolved once (a ``realpath``: a few system calls the
        scheduler would otherwise make per probe per slot, for `group_key`) and kept until a read
        of the probe fails: a probe that vanished or came back on another master is looked up
        again for its next slot."""
        if self._master is None:
            if not self.files.exists(self.slave_dir):
                return None
            self._master = self.files.resolve(self.slave_dir).parent
        return self._master

    # -- two phases ----------------------------------------------------------------------------
    def group_key(self) -> Hashable | None:
        """The master directory: probes on one master share one bulk conversion."""
        return self.master_dir()

    def start(self) -> float:
        """One bulk conversion on this probe's master (see `start_group`)."""
        return type(self).start_group([self])

    @classmethod
    def start_group(cls, drivers: Sequence[Driver]) -> float:
        """One ``therm_bulk_read`` trigger per master of ``drivers``; returns what is left of the
        conversion time once every write has returned (the kernel blocks each write for its
        conversion), or 0 when no master could be triggered (each probe's collect then converts
        on its own, blocking in the kernel; logged once per master)."""
        by_master: dict[Path, DS18B20] = {}
        for driver in drivers:
            if not isinstance(driver, DS18B20):
                raise TypeError(f"DS18B20.start_group got a {type(driver).__name__}")
            master = driver.master_dir()
            if master is not None:
                by_master.setdefault(master, driver)
        triggered: list[tuple[DS18B20, float]] = []  # (first probe of a master, when its write began)
        for master, first in by_master.items():
            began = first.clock()
            if _trigger_bulk(master, first.files):
                triggered.append((first, began))
            elif not first.files.exists(master / BULK_READ_FILE):
                # the master is gone (renumbered while the slave's link still resolves): resolved
                # again next slot; a trigger file that is only not writable stays as it is
                for driver in drivers:
                    if isinstance(driver, DS18B20) and driver._master == master:
                        driver._master = None
        return max((max(0.0, first.timing.read_time_s - (first.clock() - began))
                    for first, began in triggered), default=0.0)

    def collect(self) -> Sample:
        """One ``w1_slave`` read (the bulk-converted value, or a conversion of its own): °C."""
        try:
            text = self.files.read_text(self.slave_dir / W1_SLAVE_FILE)
        except OSError as exc:
            self._master = None    # gone or moved: resolved again for the next slot
            if exc.errno in _GONE_ERRNOS and not self.files.exists(self.w1_root):
                raise DeviceNotFoundError(f"{self.device_id}: {W1_NOT_ENABLED.format(root=self.w1_root)}"
                                          ) from exc
            raise _map_os_error(exc, self.device_id) from exc
        if not text.strip() and self._bulk_state() == BULK_CONVERTING:
            raise NotReadyError(f"{self.device_id}: bulk conversion still in progress (collected "
                                "before the conversion time)")
        reading = parse_w1_slave(text, self.family)
        return {"temperature": reading.celsius}

    def _bulk_state(self) -> int | None:
        master = self.master_dir()
        if master is None:
            return None
        try:
            return int(self.files.read_text(master / BULK_READ_FILE).strip())
        except (OSError, ValueError):
            return None


# -- bulk conversion ---------------------------------------------------------------------------
#: Masters already reported as unable to bulk-convert: the warning is logged once per master
#: and process (a state of the log, not of any driver).
_warned_masters: set[Path] = set()
_warned_lock = threading.Lock()


def _trigger_bulk(master: Path, files: W1Files) -> bool:
    """Write ``trigger`` to the master's ``therm_bulk_read``; False (logged once) if it cannot."""
    path = master / BULK_READ_FILE
    if not files.exists(path) or not files.is_writable(path):
        _fall_back(master, "it is missing or not writable (the kernel makes it root-only)")
        return False
    try:
        files.write_text(path, BULK_TRIGGER)
    except OSError as exc:
        _fall_back(master, f"writing it failed: {exc}")
        return False
    return True


def _fall_back(master: Path, why: str) -> None:
    with _warned_lock:
        if master in _warned_masters:
            return
        _warned_masters.add(master)
    log.warning("w1 master %s: no bulk conversion through %s, %s; "
                "each DS18B20 converts on its own read", master, BULK_READ_FILE, why)
