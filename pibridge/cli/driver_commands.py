"""`pibridge drivers`, `pibridge read` and `pibridge scan`: the sensor-driver commands.

* ``drivers``: every registered driver (built-in and ``pibridge.drivers`` entry points) with its
  metrics, units and options.
* ``read DRIVER [--option KEY=VALUE ...] [--simulate] [--json]``: one sample, with the retries
  the instance's own `Timing` allows (``--simulate``: built in a `SimulatedWorld`).
* ``scan``: what answers on each ``/dev/i2c-N``, named from the I2C drivers' own declarations
  (their addresses, chip-id register or register signature), which 1-Wire devices the kernel
  lists, and which serial ports exist (and whether the Pi's serial console holds one).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pibridge.cli import CliError
from pibridge.drivers import registry, serialport
from pibridge.drivers.base import Driver, Option, default_timing, describe_timing, read_with_retries
from pibridge.drivers.ds18b20 import FAMILIES as W1_FAMILIES
from pibridge.drivers.ds18b20 import W1_SLAVE_RE
from pibridge.drivers.errors import SensorError
from pibridge.drivers.i2c import CommandId, I2CDriver

# --- scan constants -----------------------------------------------------------------------------
I2C_DEV_ROOT = Path("/dev")
W1_DEVICES_ROOT = Path("/sys/bus/w1/devices")
SYS_TTY_ROOT = serialport.SYS_TTY_CLASS   #: where ttyS* show whether a real UART is behind them
I2C_FIRST_ADDRESS = 0x03   #: 0x00-0x02 and 0x78-0x7F are reserved (as i2cdetect)
I2C_LAST_ADDRESS = 0x77


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

    p = sub.add_parser("scan", help="list I2C chips, 1-Wire devices and serial ports found on this machine")
    p.set_defaults(handler=cmd_scan)


# ================================================================================================
# pibridge drivers
# ================================================================================================

def _option_line(option: Option) -> str:
    parts = [f"{option.key} ({option.kind_label})"]
    if option.required:
        parts.append("required")
    elif option.default is None:
        parts.append("optional, no default")
    else:
        shown = option.show(option.default) if option.hex else repr(option.default)
        parts.append(f"default {shown}")
    if option.choices is not None:
        parts.append("one of " + ", ".join(
            option.show(c) if option.hex else str(c) for c in option.choices))
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
    lines.append(f"  {describe_timing(default_timing(cls))} (defaults; `pibridge read` shows an "
                 "instance's own)")
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
        # the options are checked as data first: only declared option names reach the
        # constructor, never its hardware handles (sensor=, clock=, read_text=, bus=, …)
        cls.check_options(options)
    except SensorError as exc:
        raise CliError(_error_line(args.driver, exc)) from None
    with contextlib.ExitStack() as stack:  # closes the driver, then the world, whatever is raised
        try:
            if args.simulate:
                from pibridge.drivers.simulation import SimulatedWorld

                world = stack.enter_context(SimulatedWorld())
                driver = world.build(cls, options)
            else:
                driver = stack.enter_context(cls(**options))
            sample = read_with_retries(driver, sleep)
            metrics = {m.key: m for m in driver.active_metrics()}
            timing = driver.timing
        except SensorError as exc:
            raise CliError(_error_line(args.driver, exc)) from None

    if args.json:
        print(json.dumps({
            "driver": args.driver,
            "simulated": bool(args.simulate),
            "values": sample,
            "units": {key: metrics[key].unit_label for key in sample},
            "timing": {"read_time_s": timing.read_time_s, "min_interval_s": timing.min_interval_s,
                       "retry_attempts": timing.retry.attempts, "retry_spacing_s": timing.retry.spacing_s},
        }, sort_keys=True))
    else:
        width = max(len(k) for k in sample)
        for key, value in sample.items():
            print(f"{key:<{width}}  {_format_value(value)} {metrics[key].unit_label}")
        print(f"({describe_timing(timing)})")
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


def i2c_drivers_by_address() -> dict[int, list[type[I2CDriver]]]:
    """address -> the I2C driver classes (built-in and installed) that declare it, by name."""
    table: dict[int, list[type[I2CDriver]]] = {}
    for name in registry.names():
        try:
            cls = registry.get(name)
        except (ImportError, AttributeError, SensorError):
            continue  # `pibridge drivers` reports a broken driver; scan names what it can
        if issubclass(cls, I2CDriver) and cls not in {c for cs in table.values() for c in cs}:
            for address in cls.i2c_addresses():
                table.setdefault(address, []).append(cls)
    return table


def identify_i2c(bus: Any, address: int,
                 table: dict[int, list[type[I2CDriver]]] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> str:
    """The probable chip at ``address``, by what its driver declares: its own
    ``identify(bus, address, sleep)`` classmethod (a command the chip answers harmlessly, e.g. the
    SCD30's firmware version), a chip-id register (`ChipId`), an identification command
    (`CommandId`: a Sensirion serial number), or power-on register values (`RegisterSignature`);
    else by the address alone. Where several drivers share the address, a candidate that does not
    answer its own identification leaves the word to the others."""
    candidates = (i2c_drivers_by_address() if table is None else table).get(address, [])
    by_address: list[str] = []
    refused: list[str] = []
    silent = None
    for cls in candidates:
        identify = getattr(cls, "identify", None)
        if callable(identify):
            name = identify(bus, address, sleep)
            if name is not None:
                return str(name)
            refused.append(cls.chip_name or cls.name)
            continue
        if cls.chip_id is None:
            signature = cls.signature
            if signature is not None:   # no id register: known register values name the part
                try:
                    if signature.matches(bus, address):
                        return f"{signature.name} (register signature)"
                except OSError:         # no answer to a register read: not this chip
                    silent = silent or f"unknown (no answer at register 0x{min(signature.words):02x})"
                    continue
            by_address.append(cls.chip_name or cls.name)
            continue
        if isinstance(cls.chip_id, CommandId):
            named = cls.chip_id.identify(bus, address, sleep)
            if named is not None:
                return named
            continue
        register = cls.chip_id.register
        try:
            chip_id = bus.read_byte_data(address, register)
        except OSError:
            if len(candidates) == 1:
                return f"unknown (no answer at chip-id register 0x{register:02x})"
            silent = silent or f"unknown (no answer at chip-id register 0x{register:02x})"
            continue
        name = cls.chip_id.name(chip_id)
        if name is not None:
            return f"{name} (chip id 0x{chip_id:02x})"
        if len(candidates) == 1:
            return f"unknown (chip id 0x{chip_id:02x})"
    if by_address:
        return f"{' or '.join(by_address)} (probable, by address)"
    if silent:
        return silent
    if refused:
        return f"unknown (does not answer as an {' or '.join(refused)})"
    return "unknown"


def identify_by_command(bus: Any, address: int, table: dict[int, list[type[I2CDriver]]],
                        sleep: Callable[[float], None]) -> str | None:
    """The chip at an address that NACKed the plain read, named by a `CommandId` it answers
    (Sensirion chips NACK a read while no result is pending), or None."""
    for cls in table.get(address, []):
        if isinstance(cls.chip_id, CommandId):
            named = cls.chip_id.identify(bus, address, sleep)
            if named is not None:
                return named
    return None


def scan_i2c_bus(bus: Any, sleep: Callable[[float], None] = time.sleep) -> list[tuple[int, str]]:
    """(address, probable chip) for every address 0x03..0x77 that acknowledges a read_byte
    (i2cdetect -r style: a read is harmless for the chips pibridge knows), or, where a driver
    declares a `CommandId`, that answers it (a chip without registers may NACK a bare read).
    ``sleep`` waits between an identification command and its answer."""
    found = []
    table = i2c_drivers_by_address()
    for address in range(I2C_FIRST_ADDRESS, I2C_LAST_ADDRESS + 1):
        try:
            bus.read_byte(address)
        except OSError as exc:
            if exc.errno not in (errno.EREMOTEIO, errno.ENXIO, errno.EIO, errno.ETIMEDOUT):
                raise
            named = identify_by_command(bus, address, table, sleep)
            if named is not None:
                found.append((address, named))
            continue
        found.append((address, identify_i2c(bus, address, table, sleep)))
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


def serial_lines(dev_root: Path = I2C_DEV_ROOT, sys_tty: Path = SYS_TTY_ROOT,
                 cmdline_files: tuple[Path, ...] | None = None) -> list[str]:
    """One line per serial port (``/dev/serial0 -> ttyS0``), marking the one the serial console
    holds (per cmdline.txt, when it can be seen)."""
    ports = serialport.serial_ports(dev_root, sys_tty)
    if not ports:
        return [f"Serial: no ports ({dev_root}/serial0, ttyAMA*, ttyUSB*, ttyACM* not found; on a Pi "
                "enable the UART: sudo raspi-config nonint do_serial_hw 0)"]
    consoles = serialport.console_devices(cmdline_files)
    lines = []
    for port in ports:
        line = f"Serial {port}"
        if os.path.islink(port):
            line += f" -> {os.path.basename(os.path.realpath(port))}"
        held = consoles is not None and any(
            serialport.same_device(port, str(dev_root / Path(console).name)) for console in consoles[1])
        if held:
            line += " (the serial console: sudo raspi-config nonint do_serial_cons 1, then reboot)"
        lines.append(line)
    return lines


def scan(dev_root: Path = I2C_DEV_ROOT, w1_root: Path = W1_DEVICES_ROOT,
         opener: Callable[[int], Any] = open_smbus, sys_tty: Path = SYS_TTY_ROOT) -> list[str]:
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
    return lines + serial_lines(dev_root, sys_tty)


def cmd_scan(args: argparse.Namespace) -> int:
    # the module's names are looked up now, so tests can patch them
    print("\n".join(scan(I2C_DEV_ROOT, W1_DEVICES_ROOT, open_smbus, SYS_TTY_ROOT)))
    return 0
