"""`pibridge drivers`, `pibridge read` and `pibridge scan`: the sensor-driver commands.

* ``drivers``: every registered driver (built-in and ``pibridge.drivers`` entry points) with its
  metrics, units and options.
* ``read DRIVER [--option KEY=VALUE ...] [--simulate] [--json]``: one sample, with the retries
  the instance's own `Timing` allows (``--simulate``: built in a `SimulatedWorld`).
  ``read --profile P [--simulate] [--json]``: every sensor of a profile once, processed as
  ``run`` would (calibration, unit), in display units: the dry run before the first ``run``.
* ``scan``: what answers on each ``/dev/i2c-N``, named from the I2C drivers' own declarations
  (their addresses, chip-id register or register signature), which 1-Wire devices the kernel
  lists, and which serial ports exist (and whether the Pi's serial console holds one), with the
  sensor that answers on each port the console does not hold (`ask_serial_sensor`: MH-Z19,
  PMS5003); ``--profile-out FILE`` writes a starting profile for the chips, probes and serial
  sensors (`starting_profile`).

Values a person reads go through `pibridge.units` (°C, %, hPa); ``--json`` keeps the agent's
unit names.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pibridge.cli import CliError, counted
from pibridge.cli.scan_profile import Found, starting_profile
from pibridge.drivers import mhz19, pms5003, registry, serialport
from pibridge.drivers.base import (
    Driver,
    Metric,
    Option,
    default_timing,
    describe_timing,
    read_with_retries,
)
from pibridge.drivers.ds18b20 import FAMILIES as W1_FAMILIES
from pibridge.drivers.ds18b20 import W1_SLAVE_RE
from pibridge.drivers.errors import SensorError
from pibridge.drivers.i2c import CommandId, I2CDriver
from pibridge.guide import guide_files
from pibridge.terminal import printable
from pibridge.units import display, display_unit, state_words, symbol_of

# --- scan constants -----------------------------------------------------------------------------
I2C_DEV_ROOT = Path("/dev")
W1_DEVICES_ROOT = Path("/sys/bus/w1/devices")
SYS_TTY_ROOT = serialport.SYS_TTY_CLASS   #: where ttyS* show whether a real UART is behind them
I2C_FIRST_ADDRESS = 0x03   #: 0x00-0x02 and 0x78-0x7F are reserved (as i2cdetect)
I2C_LAST_ADDRESS = 0x77
#: How long scan listens on one serial port at most: one frame period of an active-mode PMS5003
#: (it pushes a frame about every 2.3 s unasked) plus the frame's time on the wire and the
#: sensor's latency (2.43 s). An MH-Z19 or a passive PMS5003 answers within ~50 ms and ends the
#: wait then; only a port where nothing answers takes the whole time (all ports are asked at once).
SERIAL_LISTEN_S = pms5003.ACTIVE_READ_TIME_S
SERIAL_READ_TIMEOUT_S = 0.05   #: one read's wait while listening (the deadline is checked after it)
SERIAL_READ_CHUNK = 64         #: bytes one read takes at most (two PMS5003 frames)
#: What scan writes to a port, in this order (one write, nothing else is ever sent)::
#:
#:     FF 01 86 00 00 00 00 00 79    MH-Z19: read CO2 (answer: 9 bytes FF 86 HH LL .. CK)
#:     42 4D E2 00 00 01 71          PMS5003: read in passive mode (answer: a 32-byte 42 4D frame)
#:
#: Neither changes a setting of either sensor; each ignores the other's bytes (an MH-Z19 takes
#: only frames starting FF, a PMS5003 only 42 4D).
SERIAL_QUESTION = mhz19.READ_CO2_REQUEST + pms5003.READ_REQUEST
NO_SERIAL_SENSOR = "no known sensor answered"


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the top-level parser."""
    p = sub.add_parser("drivers", help="list the sensor drivers, their metrics and options")
    p.add_argument("--guide", action="store_true",
                   help="print the driver guide (how to write a driver; it ships with the package)")
    p.set_defaults(handler=cmd_drivers)

    p = sub.add_parser("read", help="read a sensor once, or every sensor of a profile (a dry run)")
    p.add_argument("driver", nargs="?", help="driver name (see `pibridge drivers`); or --profile")
    p.add_argument("--profile", type=Path, metavar="FILE",
                   help="read every sensor of this profile once, as `run` would process it")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="driver option (repeatable), e.g. --option address=0x77")
    p.add_argument("--simulate", action="store_true",
                   help="read the driver's fake hardware fed by a simulated greenhouse")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_read)

    p = sub.add_parser("scan", help="list I2C chips, 1-Wire devices, serial ports and the sensors on them")
    p.add_argument("--profile-out", type=Path, metavar="FILE",
                   help="write a starting profile for what was found to FILE (never overwrites)")
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


def metric_unit(metric: Metric) -> str:
    """A driver metric's unit as a person reads it: "°C", "hPa", "bool: active / not active"."""
    if metric.value_type is not None and str(metric.value_type) == "bool":
        false, true = state_words(metric.annotation)
        return f"{true} / {false}"
    shown, factor = display_unit(metric.unit, metric.annotation)
    if metric.unit is None:
        return f"{metric.value_type}{f', {shown}' if shown else ''}"
    # pascals: shown as hPa, but a profile's valid_range and deadband work on the values sent
    return shown if factor == 1 else f"{shown}; values in {symbol_of(metric.unit, None)}"


def describe_driver(cls: type[Driver], name: str | None = None) -> list[str]:
    """The lines `pibridge drivers` prints for one driver class, under ``name`` (the registry's:
    what a profile writes; an installed driver's entry-point name)."""
    name = name or cls.name
    alias = f" (its class calls itself {cls.name!r}; profiles use {name!r})" if cls.name != name else ""
    lines = [f"{name}: {cls.description}{alias}", "  metrics:"]
    lines += [f"    {m.key}: {m.name} [{metric_unit(m)}]" for m in cls.metrics]
    lines.append("  options:" if cls.options else "  options: none")
    lines += [_option_line(o) for o in cls.options]
    lines.append(f"  {describe_timing(default_timing(cls))} (defaults; `pibridge read` shows an "
                 "instance's own)")
    return lines


def cmd_drivers(args: argparse.Namespace) -> int:
    if args.guide:
        return print_guide()
    blocks = []
    for name in registry.names():
        try:
            cls = registry.get(name)
        except (ImportError, AttributeError, SensorError) as exc:
            blocks.append([f"{name}: not available ({problem_text(exc)})"])
            continue
        blocks.append(describe_driver(cls, name))
    shadowed = registry.shadowed()
    if shadowed:
        blocks.append(["not used:", *(f"  {line}" for line in shadowed)])
    blocks.append(["Writing a driver: `pibridge drivers --guide` (the guide and a worked example package "
                   "ship with pibridge)."])
    print("\n\n".join("\n".join(b) for b in blocks))
    return 0


def print_guide() -> int:
    """The driver guide (drivers/README.md, package data) and where the worked example package
    lies in this installation."""
    guide = guide_files()
    print(guide.readme.read_text(encoding="utf-8").rstrip())
    print(f"\n---\nThis guide: {guide.readme}\nThe worked example package (copy it to start a "
          f"driver package of your own): {guide.example}")
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


def problem_text(exc: BaseException) -> str:
    """What went wrong, in words: the exception's message (a typed error's class name is for
    code, not for the reader); the class name only when there is no message at all."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _error_line(name: str, exc: BaseException) -> str:
    """One line naming the driver once and what went wrong."""
    text = problem_text(exc)
    return text if text.startswith(name) else f"{name}: {text}"


def cmd_read(args: argparse.Namespace, sleep: Callable[[float], None] = time.sleep) -> int:
    profile = getattr(args, "profile", None)     # callers may build the Namespace by hand
    if profile is not None:
        if args.driver is not None or args.option:
            raise CliError("give either a driver (with --option) or --profile, not both")
        return read_profile(profile, simulate=args.simulate, as_json=args.json, sleep=sleep)
    if args.driver is None:
        raise CliError("name a driver (`pibridge read bme280`) or a profile "
                       "(`pibridge read --profile my.toml`)")
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
            metric = metrics[key]
            print(f"{key:<{width}}  {display(value, metric.unit, metric.annotation)}")
        print(f"({describe_timing(timing)})")
    return 0


def read_profile(path: Path, *, simulate: bool, as_json: bool,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """``pibridge read --profile P``: every sensor once, processed as ``run`` processes it
    (calibration, unit, names), one line per sensor; a failing sensor is one line and the
    others still print. Exit 1 if any failed (or the profile has problems)."""
    from pibridge.bridge.processing import SampleProcessor, sensor_spec
    from pibridge.profile import ProfileError, load_profile

    try:
        profile = load_profile(path)
    except ProfileError as exc:     # one line: the first problem; `check` lists them all
        more = len(exc.lines) - 1
        raise CliError(exc.lines[0] + (f" (and {counted(more, 'more problem')}: `pibridge check --profile "
                                       f"{printable(str(path))}`)" if more else "")) from None
    failed = 0
    results: list[dict[str, Any]] = []
    width = max(len(sensor.name) for sensor in profile.sensors)
    with contextlib.ExitStack() as stack:
        world = None
        if simulate:
            from pibridge.drivers.simulation import SimulatedWorld

            world = stack.enter_context(SimulatedWorld())
        for sensor in profile.sensors:
            try:
                cls = registry.get(sensor.driver)
                driver = (world.build(cls, sensor.options) if world is not None
                          else stack.enter_context(cls(**sensor.options)))
                raw = read_with_retries(driver, sleep)
                spec = sensor_spec(sensor.name, driver.active_metrics(), sensor.metrics)
                values = SampleProcessor(spec, sensor.metrics).process(raw, time.monotonic(), always=True)
            except Exception as exc:  # one failing sensor (a driver's bug included) is one line
                failed += 1
                results.append({"sensor": sensor.name, "driver": sensor.driver, "error": problem_text(exc)})
                if not as_json:
                    print(printable(f"{sensor.name:<{width}}  FAILED: {_error_line(sensor.driver, exc)}"))
                continue
            shown = []
            for metric in spec.metrics:
                value = values.get(metric.key)
                text = display(value, metric.unit, metric.annotation) if metric.key in values \
                    else "left out (outside valid_range)"
                shown.append(f"{metric.name} {text}")
            results.append({"sensor": sensor.name, "driver": sensor.driver, "values": {
                m.name: values.get(m.key) for m in spec.metrics},
                "units": {m.name: m.unit or m.annotation or "" for m in spec.metrics}})
            if not as_json:
                print(printable(f"{sensor.name:<{width}}  " + ", ".join(shown)))
    if as_json:
        print(json.dumps({"profile": str(path), "simulated": simulate, "sensors": results,
                          "failed": failed}, ensure_ascii=False))
    elif failed:
        print(f"{failed} of {len(profile.sensors)} sensors failed", file=sys.stderr)
    return 1 if failed else 0


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
    """The probable chip at ``address`` (what scan prints); see `_identify`."""
    return _identify(bus, address, table, sleep)[0]


def _identify(bus: Any, address: int, table: dict[int, list[type[I2CDriver]]] | None,
              sleep: Callable[[float], None] = time.sleep) -> tuple[str, type[I2CDriver] | None, str]:
    """(what scan says, the driver that reads the chip or None, the chip's name), by what the
    address's drivers declare: their own ``identify(bus, address, sleep)`` classmethod (a command
    the chip answers harmlessly, e.g. the SCD30's firmware version), a chip-id register
    (`ChipId`), an identification command (`CommandId`: a Sensirion serial number), or power-on
    register values (`RegisterSignature`); else by the address alone. Where several drivers share
    the address, a candidate that does not answer its own identification leaves the word to the
    others. A driver is named only where it is sure: by what the chip answered, or as the one
    driver of that address."""
    candidates = (i2c_drivers_by_address() if table is None else table).get(address, [])
    by_address: list[type[I2CDriver]] = []
    refused: list[str] = []
    silent = None
    for cls in candidates:
        identify = getattr(cls, "identify", None)
        if callable(identify):
            name = identify(bus, address, sleep)
            if name is not None:
                return str(name), cls, cls.chip_name or cls.name
            refused.append(cls.chip_name or cls.name)
            continue
        if cls.chip_id is None:
            signature = cls.signature
            if signature is not None:   # no id register: known register values name the part
                try:
                    if signature.matches(bus, address):
                        return f"{signature.name} (register signature)", cls, signature.name
                except OSError:         # no answer to a register read: not this chip
                    silent = silent or f"unknown (no answer at register 0x{min(signature.words):02x})"
                    continue
            by_address.append(cls)
            continue
        if isinstance(cls.chip_id, CommandId):
            named = cls.chip_id.identify(bus, address, sleep)
            if named is not None:
                return named, cls, cls.chip_name or cls.name
            continue
        register = cls.chip_id.register
        try:
            chip_id = bus.read_byte_data(address, register)
        except OSError:
            if len(candidates) == 1:
                return f"unknown (no answer at chip-id register 0x{register:02x})", None, ""
            silent = silent or f"unknown (no answer at chip-id register 0x{register:02x})"
            continue
        name = cls.chip_id.name(chip_id)
        if name is not None:
            readable = chip_id in cls.chip_id.chips
            return f"{name} (chip id 0x{chip_id:02x})", cls if readable else None, name
        if len(candidates) == 1:
            return f"unknown (chip id 0x{chip_id:02x})", None, ""
    if by_address:
        names = " or ".join(cls.chip_name or cls.name for cls in by_address)
        only = by_address[0] if len(by_address) == 1 else None
        return f"{names} (probable, by address)", only, names
    if silent:
        return silent, None, ""
    if refused:
        return f"unknown (does not answer as an {' or '.join(refused)})", None, ""
    return "unknown", None, ""


def identify_by_command(bus: Any, address: int, table: dict[int, list[type[I2CDriver]]],
                        sleep: Callable[[float], None]) -> tuple[str, type[I2CDriver]] | None:
    """The chip at an address that NACKed the plain read, named by a `CommandId` it answers
    (Sensirion chips NACK a read while no result is pending): (its name, its driver), or None."""
    for cls in table.get(address, []):
        if isinstance(cls.chip_id, CommandId):
            named = cls.chip_id.identify(bus, address, sleep)
            if named is not None:
                return named, cls
    return None


def scan_i2c_bus(bus: Any, number: int = 1, found: Found | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> list[tuple[int, str]]:
    """(address, probable chip) for every address 0x03..0x77 that acknowledges a read_byte
    (i2cdetect -r style: a read is harmless for the chips pibridge knows), or, where a driver
    declares a `CommandId`, that answers it (a chip without registers may NACK a bare read); each
    chip a driver reads is added to ``found`` (bus ``number``). ``sleep`` waits between an
    identification command and its answer."""
    out = []
    table = i2c_drivers_by_address()
    for address in range(I2C_FIRST_ADDRESS, I2C_LAST_ADDRESS + 1):
        try:
            bus.read_byte(address)
        except OSError as exc:
            if exc.errno not in (errno.EREMOTEIO, errno.ENXIO, errno.EIO, errno.ETIMEDOUT):
                raise
            named = identify_by_command(bus, address, table, sleep)
            if named is not None:
                out.append((address, named[0]))
                if found is not None:
                    found.add_i2c(named[1], number, address, named[1].chip_name or named[1].name)
            continue
        text, cls, chip = _identify(bus, address, table, sleep)
        out.append((address, text))
        if found is not None and cls is not None:
            found.add_i2c(cls, number, address, chip)
    return out


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


@dataclass(frozen=True)
class SerialSensor:
    """A sensor that answered on a serial port: what scan prints, its driver, and the options
    beside ``port`` for its starting profile (none: the drivers' defaults fit)."""

    chip: str
    driver: type[Driver]
    what_answered: str
    options: dict[str, Any] = field(default_factory=dict)


MHZ19_FOUND = SerialSensor("MH-Z19 (CO2)", mhz19.MHZ19, "answered the 0x86 read with FF 86")
#: mode: the driver's default (active), which it writes to the sensor when it starts, whichever
#: mode the sensor is in now; ``mode = "passive"`` in the profile lets the fan sleep
PMS5003_FOUND = SerialSensor("PMS5003 (particulates)", pms5003.PMS5003, "sent a 42 4D data frame")


def ask_serial_sensor(path: str, listen_s: float = SERIAL_LISTEN_S) -> SerialSensor | str:
    """Which sensor is on the serial port ``path``: opens it at 9600 8N1 (pyserial), discards
    what is buffered, writes `SERIAL_QUESTION` once (the MH-Z19 read ``FF 01 86 … 79`` and the
    PMS5003 passive read ``42 4D E2 00 00 01 71``; nothing that changes a setting), then listens
    for at most ``listen_s`` for an MH-Z19 reply (``FF 86``, 9 bytes, valid checksum) or a
    PMS5003 data frame (``42 4D``, 32 bytes, valid checksum: the answer of a passive one or the
    unasked frame of an active one). The `SerialSensor` found, else one line saying why not
    (`NO_SERIAL_SENSOR`, or "not asked: …" for a port that is not a plain serial port or cannot
    be opened). Never call it on the serial console's port."""
    why = serialport.foreign_line_discipline(path)
    if why is not None:
        return f"not asked: {why}"
    link = serialport.SerialLink(path, timeout_s=SERIAL_READ_TIMEOUT_S)
    co2_replies, dust_frames = mhz19.reply_scanner(), pms5003.frame_scanner()
    try:
        link.send(SERIAL_QUESTION, "asking which sensor is there")
        deadline = time.monotonic() + listen_s
        while time.monotonic() < deadline:
            data = link.read(SERIAL_READ_CHUNK, "listening for an answer")
            if not data:
                continue
            co2_replies.feed(data)
            dust_frames.feed(data)
            if next(co2_replies.frames(), None) is not None:
                return MHZ19_FOUND
            if any(len(frame) == pms5003.DATA_FRAME_LEN for frame in dust_frames.frames()):
                return PMS5003_FOUND
    except serialport.SerialPortGoneError as exc:
        return f"not asked: {str(exc).removeprefix(f'{path}: ')}"
    finally:
        link.close()
    return NO_SERIAL_SENSOR


def serial_lines(dev_root: Path = I2C_DEV_ROOT, sys_tty: Path = SYS_TTY_ROOT,
                 cmdline_files: tuple[Path, ...] | None = None, found: Found | None = None) -> list[str]:
    """One line per serial port (``/dev/serial0 -> ttyS0: MH-Z19 (CO2)``): the one the serial
    console holds (per cmdline.txt, when it can be seen) is marked and never asked; every other
    device is asked once (`ask_serial_sensor`, all at once: a link and its target, such as
    ``serial0`` and ``ttyS0``, are one device, asked and added to ``found`` under the first name
    listed)."""
    ports = serialport.serial_ports(dev_root, sys_tty)
    if not ports:
        return [f"Serial: no ports ({dev_root}/serial0, ttyAMA*, ttyUSB*, ttyACM* not found; on a Pi "
                "enable the UART: sudo raspi-config nonint do_serial_hw 0)"]
    consoles = serialport.console_devices(cmdline_files)
    held = {port: consoles is not None and any(
        serialport.same_device(port, str(dev_root / Path(console).name)) for console in consoles[1])
        for port in ports}
    first_names: dict[str, str] = {}     # device -> the first name listed for it
    for port in ports:
        if not held[port]:
            first_names.setdefault(os.path.realpath(port), port)
    with ThreadPoolExecutor(max_workers=max(1, len(first_names)),
                            thread_name_prefix="pibridge-scan-serial") as pool:
        answers = dict(zip(first_names, pool.map(ask_serial_sensor, first_names.values()), strict=True))
    lines = []
    for port in ports:
        line = f"Serial {port}"
        if os.path.islink(port):
            line += f" -> {os.path.basename(os.path.realpath(port))}"
        if held[port]:
            lines.append(f"{line} (the serial console: sudo raspi-config nonint do_serial_cons 1, "
                         "then reboot)")
            continue
        device = os.path.realpath(port)
        answer = answers[device]
        if isinstance(answer, str):
            lines.append(f"{line}: {answer}")
            continue
        lines.append(f"{line}: {answer.chip}")
        if found is not None and first_names[device] == port:
            found.add(f"{answer.chip.split(' (')[0]} {os.path.basename(port)}", answer.driver,
                      {"port": port, **answer.options},
                      f"serial port {port}: {answer.chip} {answer.what_answered}")
    return lines


def scan(dev_root: Path = I2C_DEV_ROOT, w1_root: Path = W1_DEVICES_ROOT,
         opener: Callable[[int], Any] = open_smbus, found: Found | None = None,
         sys_tty: Path = SYS_TTY_ROOT) -> list[str]:
    """The report lines of `pibridge scan`; what a driver reads is added to ``found``."""
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
            answered = scan_i2c_bus(bus, number, found)
        except OSError as exc:
            lines.append(f"I2C bus {number}: scan failed: {exc.strerror or exc}")
            continue
        finally:
            bus.close()
        if not answered:
            lines.append(f"I2C bus {number}: no devices")
        for address, chip in answered:
            lines.append(f"I2C bus {number} 0x{address:02x}: {chip}")
    if not w1_root.is_dir():
        lines.append(f"1-Wire: no bus ({w1_root} not found; enable dtoverlay=w1-gpio)")
    else:
        devices = w1_devices(w1_root)
        if not devices:
            lines.append("1-Wire: no devices")
        lines += [f"1-Wire {name}: {family}" for name, family in devices]
        if found is not None:
            for name, _ in devices:
                if name[:2] in W1_FAMILIES:
                    found.add_w1(name, w1_root)
    return lines + serial_lines(dev_root, sys_tty, found=found)


def cmd_scan(args: argparse.Namespace) -> int:
    if args.profile_out is None:
        # the module's names are looked up now, so tests can patch them
        print("\n".join(scan(I2C_DEV_ROOT, W1_DEVICES_ROOT, open_smbus, sys_tty=SYS_TTY_ROOT)))
        return 0
    found = Found()
    print("\n".join(scan(I2C_DEV_ROOT, W1_DEVICES_ROOT, open_smbus, found, SYS_TTY_ROOT)))
    text = starting_profile(found)
    target: Path = args.profile_out
    try:
        with target.open("x", encoding="utf-8") as out:      # never overwrite a user's profile
            out.write(text)
    except FileExistsError:
        raise CliError(f"{target} exists: choose another file or delete it first") from None
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    count = len(found.sensors)
    print(f"\nwrote {target}: {counted(count, 'sensor')} found"
          + ("" if count else " (none: it holds the Pi's own CPU temperature to start from)")
          + f"; next: `pibridge check --profile {target}`")
    return 0
