"""`pibridge check --profile P`: every problem of a profile (exit 1), or what `pibridge run`
would do with it (exit 0): each sensor with its driver, interval and metrics (unit, calibration,
filters), the pins and buses in use, the agent and the state directory.

Nothing is touched but the profile: the drivers' checks are class-level (no bus, no GPIO, no
file of theirs is opened), nothing is written, and the result is the same on a Pi and a PC.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import TextIO

from pibridge.cli import counted
from pibridge.drivers import registry
from pibridge.drivers.base import I2C_BUS_PINS, SERIAL_PORT_PINS, SPI_BUS_PINS, Metric, Resources
from pibridge.profile import MetricConfig, Profile, ProfileError, SensorConfig, format_duration, load_profile
from pibridge.profile.errors import PROBLEMS_SHOWN_MAX
from pibridge.terminal import printable
from pibridge.units import symbol_of


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``check`` to the top-level parser."""
    parser = sub.add_parser("check", help="check a profile: every problem, or a summary of what would run")
    parser.add_argument("--profile", type=Path, metavar="FILE", required=True, help="the TOML profile")
    parser.add_argument("--all", action="store_true",
                        help=f"list every problem (default: the first {PROBLEMS_SHOWN_MAX}, then a count)")
    parser.set_defaults(handler=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        for line in exc.lines if args.all else exc.capped():
            print(line, file=sys.stderr)
        count = len(exc.problems)  # the verdict, like the summary, on stdout; the problems on stderr
        print(printable(f"{args.profile}: {counted(count, 'problem')}; nothing would run"))
        return 1
    print_summary(profile, sys.stdout)
    return 0


def print_summary(profile: Profile, out: TextIO) -> None:
    """What `pibridge run` would do with ``profile`` (checked: every driver name is known)."""
    agent, bridge = profile.agent, profile.bridge
    count = len(profile.sensors)
    _say(f"{profile.path}: no problems; {counted(count, 'sensor')}", out)
    _say(f"agent:  {agent.api_address} (provisioning {agent.provision_address}), client "
         f"\"{agent.client_name}\", provisioning {agent.provisioning}", out)
    _say(f"        CA {agent.ca_file}, credentials in {agent.cert_folder}", out)
    _say(f"state:  {bridge.state_dir}", out)
    _say(f"queue:  at most {counted(bridge.queue_max_samples, 'sample')} and "
         f"{format_duration(bridge.queue_max_age_s)}"
         f", durability {bridge.durability}; inventory checked every "
         f"{format_duration(bridge.inventory_check_s)}; logs as {bridge.log_format}", out)
    resources: list[tuple[SensorConfig, Resources]] = []
    for sensor in profile.sensors:
        driver = registry.get(sensor.driver)
        resources.append((sensor, driver.resources(sensor.options)))
        source = f", pressure from \"{sensor.pressure_from}\"" if sensor.pressure_from else ""
        _say(f"sensor \"{sensor.name}\": {sensor.driver}, every {format_duration(sensor.interval_s)}{source}",
             out)
        for metric in driver.metrics_for(sensor.options):   # what this configuration reports
            _say(f"  {_metric_line(metric, sensor.metrics.get(metric.key))}", out)
    _say("pins and buses:", out)
    for line in _pin_lines(resources, bridge.w1_gpio):
        _say(f"  {line}", out)


def _say(text: str, out: TextIO) -> None:
    """One line of the summary, the profile's own text in it (names, host, paths) with its
    non-printable characters escaped: nothing in a profile moves the cursor or forges a line."""
    print(printable(text), file=out)


def _metric_line(metric: Metric, config: MetricConfig | None) -> str:
    if config is not None and not config.enabled:
        return f"{metric.key}: disabled (not sent)"
    name = config.name if config is not None and config.name else metric.name
    if config is not None and config.unit:
        unit = symbol_of(config.unit, None)
    elif config is not None and config.value_type:
        unit = f"{config.value_type} [{config.annotation}]" if config.annotation else config.value_type
    elif metric.unit is not None:
        unit = symbol_of(metric.unit, None)
    else:
        unit = metric.unit_label
    steps = _processing(config) if config is not None else []
    return f"{metric.key} → \"{name}\" in {unit}" + (f"; {', '.join(steps)}" if steps else "")


def _processing(config: MetricConfig) -> list[str]:
    """The metric's processing as configured: calibration, filters, deadband."""
    steps: list[str] = []
    calibration = config.calibration
    if calibration is not None and calibration.points:
        pairs = ", ".join(f"{raw:g} → {true:g}" for raw, true in calibration.points)
        steps.append(f"calibrated through {pairs}")
    elif calibration is not None:
        if calibration.scale != 1:
            steps.append(f"scale × {calibration.scale:g}")
        if calibration.offset:
            steps.append(f"offset {calibration.offset:+g}")
    if config.median > 1:
        steps.append(f"median of {config.median}")
    if config.valid_range is not None:
        low, high = config.valid_range
        steps.append(f"valid {low:g} to {high:g} (else left out)")
    if config.clamp is not None:
        steps.append(f"clamped to {config.clamp[0]:g}…{config.clamp[1]:g}")
    if config.deadband is not None:
        silence = f", at least every {format_duration(config.max_silence_s)}" if config.max_silence_s else ""
        steps.append(f"sent when it moved by {config.deadband:g}{silence}")
    return steps


def _pin_lines(resources: list[tuple[SensorConfig, Resources]], w1_gpio: int) -> list[str]:
    by_gpio: dict[int, list[str]] = defaultdict(list)
    by_i2c: dict[int, list[str]] = defaultdict(list)
    by_spi: dict[int, list[str]] = defaultdict(list)
    w1: list[str] = []
    serial: list[tuple[str, str]] = []
    for sensor, claimed in resources:
        serial.extend((path, f"\"{sensor.name}\"") for path in claimed.serial)
        for pin in claimed.gpio:
            by_gpio[pin].append(f"\"{sensor.name}\"")
        for bus, address in claimed.i2c:
            by_i2c[bus].append(f"\"{sensor.name}\" at {address:#04x}")
        for port, device in claimed.spi:
            by_spi[port].append(f"\"{sensor.name}\" on CE{device}")
        w1.extend(f"\"{sensor.name}\" ({device_id})" for device_id in claimed.w1)
    lines = []
    for bus, users in sorted(by_i2c.items()):
        i2c_pins = ", ".join(str(p) for p in I2C_BUS_PINS.get(bus, ()))
        lines.append(f"I2C bus {bus} (GPIO {i2c_pins}): {', '.join(users)}")
    if w1:
        lines.append(f"1-Wire on GPIO {w1_gpio}: {', '.join(w1)}")
    for port, users in sorted(by_spi.items()):
        pins = SPI_BUS_PINS.get(port, ())
        span = f" (GPIO {min(pins)}–{max(pins)})" if pins else ""
        lines.append(f"SPI{port}{span}: {', '.join(users)}")
    for path, user in sorted(serial):
        uart_pins = SERIAL_PORT_PINS.get(path, ())
        span = f" (GPIO {', '.join(str(p) for p in uart_pins)})" if uart_pins else ""
        lines.append(f"serial {path}{span}: {user}")
    for pin, users in sorted(by_gpio.items()):
        lines.append(f"GPIO {pin}: {', '.join(users)}")
    return lines or ["none"]

