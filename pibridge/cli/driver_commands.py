"""`pibridge drivers`, `pibridge read` and `pibridge scan`: the sensor-driver commands.

* ``drivers``: every registered driver (built-in and ``pibridge.drivers`` entry points) with its
  metrics, units and options.
* ``read DRIVER [--option KEY=VALUE ...] [--simulate] [--json]``: one sample, with the retries
  the driver's `RetryPolicy` allows.
* ``scan``: what answers on each ``/dev/i2c-N`` (BME280 vs BMP280 told apart by the chip id) and
  which 1-Wire devices the kernel lists.
"""

from __future__ import annotations

import argparse
import errno
import json
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pibridge.cli import CliError
from pibridge.drivers import registry
from pibridge.drivers.base import Driver, Option, read_with_retries
from pibridge.drivers.errors import SensorError

# --- scan constants -----------------------------------------------------------------------------
I2C_DEV_ROOT = Path("/dev")
W1_DEVICES_ROOT = Path("/sys/bus/w1/devices")
I2C_FIRST_ADDRESS = 0x03   #: 0x00-0x02 and 0x78-0x7F are reserved (as i2cdetect)
I2C_LAST_ADDRESS = 0x77
BOSCH_ADDRESSES = (0x76, 0x77)
BOSCH_CHIP_ID_REGISTER = 0xD0
BOSCH_CHIP_IDS = {0x60: "BME280", 0x58: "BMP280", 0x56: "BMP280 (sample)", 0x57: "BMP280 (sample)",
                  0x61: "BME680", 0x55: "BMP180"}
BH1750_ADDRESSES = (0x23, 0x5C)
#: 1-Wire family code (the part of the slave name before "-") -> chip
W1_FAMILIES = {"10": "DS18S20", "22": "DS1822", "28": "DS18B20", "3b": "DS1825", "42": "DS28EA00"}
#: a slave entry: family code, "-", 48-bit serial in 12 lowercase hex digits
W1_SLAVE_RE = re.compile(r"^([0-9a-f]{2})-[0-9a-f]{12}$")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the top-level parser."""
    p = sub.add_parser("drivers", help="list the sensor drivers, their metrics and options")
    p.set_defaults(handler=cmd_drivers)

    p = sub.add_parser("read", help="take one reading from a sensor")
    p.add_argument("driver", help="driver name (see `pibridge drivers`)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="driver option (repeatable), e.g. --option address=0x77")
    p.add_argument("--simulate", action="store_true",
                   help="read the driver's fake hardware fed by a simulated greenhouse")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_read)

    p = sub.add_parser("scan", help="list I2C chips and 1-Wire devices found on this machine")
    p.set_defaults(handler=cmd_scan)


# ================================================================================================
# pibridge drivers
# ================================================================================================

def _option_line(option: Option) -> str:
    parts = [f"{option.key} ({option.kind_label})"]
    if option.required:
        parts.append("required")
    else:
        default = option.default
        shown = f"0x{default:02x}" if option.key == "address" and isinstance(default, int) else repr(default)
        parts.append(f"default {shown}")
    if option.choices is not None:
        parts.append("one of " + ", ".join(
            f"0x{c:02x}" if option.key == "address" and isinstance(c, int) else str(c)
            for c in option.choices))
    elif option.minimum is not None or option.maximum is not None:
        low = "" if option.minimum is None else f"{option.minimum:g}"
        high = "" if option.maximum is None else f"{option.maximum:g}"
        parts.append(f"range {low}..{high}")
    return f"    {', '.join(parts)}: {option.help}"


def describe_driver(cls: type[Driver]) -> list[str]:
    """The lines `pibridge drivers` prints for one driver class."""
    lines = [f"{cls.name}: {cls.description}", "  metrics:"]
    lines += [f"    {m.key}: {m.name} [{m.unit_label}]" for m in cls.metrics]
    lines.append("  options:" if cls.options else "  options: none")
    lines += [_option_line(o) for o in cls.options]
    lines.append(f"  read time {cls.read_time_s * 1000:g} ms, min interval {cls.min_interval_s:g} s, "
                 f"retries {cls.retry.attempts} x {cls.retry.spacing_s:g} s")
    return lines


def cmd_drivers(args: argparse.Namespace) -> int:
    blocks = []
    for name in registry.names():
        try:
            cls = registry.get(name)
        except (ImportError, AttributeError, SensorError) as exc:
            blocks.append([f"{name}: not available ({type(exc).__name__}: {exc})"])
            continue
        blocks.append(describe_driver(cls))
    print("\n\n".join("\n".join(b) for b in blocks))
    return 0


# ================================================================================================
# pibridge read
# ================================================================================================

def parse_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> dict; the driver converts and checks the values."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--option {pair!r}: expected KEY=VALUE, e.g. --option address=0x77")
        options[key.strip()] = value.strip()
    return options


def _format_value(value: Any) -> str:
    return str(round(value, 4)) if isinstance(value, float) else str(value)


def _error_line(name: str, exc: SensorError) -> str:
    """One line naming the driver once and the error type."""
    text = str(exc)
    kind = type(exc).__name__
    return f"{kind}: {text}" if text.startswith(name) else f"{name}: {kind}: {text}"


def cmd_read(args: argparse.Namespace, sleep: Callable[[float], None] = time.sleep) -> int:
    options = parse_options(args.option)
    try:
        cls = registry.get(args.driver)
    except SensorError as exc:
        raise CliError(str(exc)) from None
    except (ImportError, AttributeError) as exc:
        raise CliError(f"driver {args.driver!r} cannot be loaded: {exc}") from None
    try:
        if args.simulate:
            from pibridge.drivers.simulation import Environment

            driver = cls.simulated(Environment(), **options)
        else:
            driver = cls(**options)
    except NotImplementedError as exc:
        raise CliError(str(exc)) from None
    except SensorError as exc:
        raise CliError(_error_line(args.driver, exc)) from None
    try:
        sample = read_with_retries(driver, sleep)
        metrics = {m.key: m for m in driver.active_metrics()}
    except SensorError as exc:
        raise CliError(_error_line(args.driver, exc)) from None
    finally:
        driver.close()

    if args.json:
        print(json.dumps({
            "driver": args.driver,
            "simulated": bool(args.simulate),
            "values": sample,
            "units": {key: metrics[key].unit_label for key in sample},
        }, sort_keys=True))
    else:
        width = max(len(k) for k in sample)
        for key, value in sample.items():
            print(f"{key:<{width}}  {_format_value(value)} {metrics[key].unit_label}")
    return 0


# ================================================================================================
# pibridge scan
# ================================================================================================

def i2c_bus_numbers(dev_root: Path = I2C_DEV_ROOT) -> list[int]:
    """N for every /dev/i2c-N."""
    numbers = []
    for path in dev_root.glob("i2c-*"):
        suffix = path.name.removeprefix("i2c-")
        if suffix.isdigit():
            numbers.append(int(suffix))
    return sorted(numbers)


def open_smbus(number: int) -> Any:
    """A real ``smbus2.SMBus(number)`` (imported here only)."""
    import smbus2

    return smbus2.SMBus(number)


def identify_i2c(bus: Any, address: int) -> str:
    """The probable chip at ``address``: Bosch parts by their chip id, BH1750 by address."""
    if address in BOSCH_ADDRESSES:
        try:
            chip_id = bus.read_byte_data(address, BOSCH_CHIP_ID_REGISTER)
        except OSError:
            return "unknown (no answer at chip-id register 0xD0)"
        name = BOSCH_CHIP_IDS.get(chip_id)
        return f"{name} (chip id 0x{chip_id:02x})" if name else f"unknown (chip id 0x{chip_id:02x})"
    if address in BH1750_ADDRESSES:
        return "BH1750 (probable, by address)"
    return "unknown"


def scan_i2c_bus(bus: Any) -> list[tuple[int, str]]:
    """(address, probable chip) for every address 0x03..0x77 that acknowledges a read_byte
    (i2cdetect -r style: a read is harmless for the chips pibridge knows)."""
    found = []
    for address in range(I2C_FIRST_ADDRESS, I2C_LAST_ADDRESS + 1):
        try:
            bus.read_byte(address)
        except OSError as exc:
            if exc.errno in (errno.EREMOTEIO, errno.ENXIO, errno.EIO, errno.ETIMEDOUT):
                continue
            raise
        found.append((address, identify_i2c(bus, address)))
    return found


def w1_devices(root: Path = W1_DEVICES_ROOT) -> list[tuple[str, str]]:
    """(slave name, family name) for each 1-Wire slave the kernel lists."""
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        match = W1_SLAVE_RE.match(entry.name)
        if match is None:  # w1_bus_master1 and anything else that is not a slave
            continue
        family = match.group(1)
        found.append((entry.name, W1_FAMILIES.get(family, f"unknown family 0x{family}")))
    return found


def scan(dev_root: Path = I2C_DEV_ROOT, w1_root: Path = W1_DEVICES_ROOT,
         opener: Callable[[int], Any] = open_smbus) -> list[str]:
    """The report lines of `pibridge scan`."""
    lines = []
    buses = i2c_bus_numbers(dev_root)
    if not buses:
        lines.append(f"I2C: no buses ({dev_root}/i2c-* not found; on a Pi enable I2C with raspi-config)")
    for number in buses:
        try:
            bus = opener(number)
        except OSError as exc:
            lines.append(f"I2C bus {number}: cannot open {dev_root}/i2c-{number}: {exc.strerror or exc}")
            continue
        try:
            found = scan_i2c_bus(bus)
        except OSError as exc:
            lines.append(f"I2C bus {number}: scan failed: {exc.strerror or exc}")
            continue
        finally:
            bus.close()
        if not found:
            lines.append(f"I2C bus {number}: no devices")
        for address, chip in found:
            lines.append(f"I2C bus {number} 0x{address:02x}: {chip}")
    if not w1_root.is_dir():
        lines.append(f"1-Wire: no bus ({w1_root} not found; enable dtoverlay=w1-gpio)")
    else:
        devices = w1_devices(w1_root)
        if not devices:
            lines.append("1-Wire: no devices")
        lines += [f"1-Wire {name}: {family}" for name, family in devices]
    return lines


def cmd_scan(args: argparse.Namespace) -> int:
    print("\n".join(scan(I2C_DEV_ROOT, W1_DEVICES_ROOT, open_smbus)))  # looked up now: patchable
    return 0
