"""A command-level fake SCD40/SCD41 and its simulator.

`FakeSCD4x` sits on a `pibridge.drivers.fakes.i2c.FakeSMBus` and behaves as hardware.md §11.7
describes: 16-bit commands, replies as words with their CRC-8 (computed here on its own, not with
the driver's function), execution times during which the chip NACKs everything, the 500 ms of
deafness after stop_periodic_measurement, 1 s after power-up, states idle / periodic / low-power
with the commands each state takes, a one-deep measurement buffer that a read empties (an empty
read NACKs), a CRC check on written words (a bad write is ignored), volatile settings lost on a
power cycle. `simulate` builds an `SCD4x` driver fed by the world's environment (CO₂, air
temperature, humidity).

Faults (off unless asked): ``nack``/`fail_next` (base class), ``corrupt_crc`` (the next n replies
carry a wrong CRC byte), ``stuck_data_ready`` (the status always says ready), `power_cycle`
(settings lost, idle, deaf for a second), detaching it from the bus (gone).

Assumption (not in the sources): a read with no reply pending is acknowledged and clocks out
0xFF (the chip does not drive SDA), so `pibridge scan`'s probing read changes nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import scd4x as chip
from .i2c import FakeI2CDevice, nack_error
from .sensirion import crc8, pack_words

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

SCD4X_POWER_UP_S = 1.0
SCD4X_DEFAULT_SERIAL = 0x9A3B_5C7D_1E2F
SCD4X_VARIANT_WORD = {"SCD40": 0x0440, "SCD41": 0x1440}   #: upper nibble tells the part
SCD4X_DEFAULT_OFFSET_WORD = 1498      #: 4 °C · 65535 / 175, rounded
SCD4X_DEFAULT_PRESSURE_HPA = 1013
SCD4X_STATUS_READY = 0x8006           #: the datasheet's example status words
SCD4X_STATUS_NOT_READY = 0x8000
SCD4X_FRC_MEASURED_S = 180.0         #: FRC fails (0xFFFF) unless it measured this long before

#: execution time the fake models per command (the datasheet maximum; 0 = none)
SCD4X_EXEC_S = {
    chip.CMD_STOP_PERIODIC: chip.STOP_S,
    chip.CMD_REINIT: 0.020,
    chip.CMD_PERSIST_SETTINGS: chip.PERSIST_S,
    chip.CMD_PERFORM_FRC: chip.FRC_S,
    chip.CMD_MEASURE_SINGLE_SHOT: chip.SINGLE_SHOT_S,
    chip.CMD_START_PERIODIC: 0.0,
    chip.CMD_START_LOW_POWER_PERIODIC: 0.0,
}
SCD4X_WRITE_COMMANDS = frozenset({chip.CMD_SET_TEMPERATURE_OFFSET, chip.CMD_SET_ALTITUDE,
                                  chip.CMD_SET_AMBIENT_PRESSURE, chip.CMD_SET_ASC_ENABLED,
                                  chip.CMD_PERFORM_FRC})


def encode_words(words: list[int]) -> bytes:
    """Words as the chip sends them: MSB, LSB, CRC each (`pack_words`, the fakes' own CRC)."""
    return pack_words(*words)


def measurement_words(co2_ppm: float, celsius: float, percent: float) -> list[int]:
    """The inverse of the datasheet formulas, clamped to the word range."""
    co2 = min(0xFFFF, max(0, round(co2_ppm)))
    t = min(0xFFFF, max(0, round((celsius + 45) * 65535 / 175)))
    rh = min(0xFFFF, max(0, round(percent * 65535 / 100)))
    return [co2, t, rh]


class FakeSCD4x(FakeI2CDevice):
    """SCD40/SCD41 on the wire. Inputs: ``source()`` -> (CO₂ ppm, °C, %RH). ``variant`` "SCD40" or
    "SCD41". Counters: ``commands`` (every command code received, in order)."""

    def __init__(self, *, source: Callable[[], tuple[float, float, float]] = lambda: (600.0, 21.0, 50.0),
                 clock: Callable[[], float] = time.monotonic, variant: str = "SCD41",
                 serial: int = SCD4X_DEFAULT_SERIAL, powered_at: float | None = None,
                 knows_variant_command: bool = True) -> None:
        super().__init__()
        self.source, self.clock = source, clock
        self.variant = variant
        self.serial = serial
        self.knows_variant_command = knows_variant_command
        self.commands: list[int] = []
        self.corrupt_crc = 0
        self.stuck_data_ready = False
        self.ignored_writes = 0
        self.measurements = 0
        self._reset_state(self.clock() - SCD4X_POWER_UP_S if powered_at is None else powered_at)

    def _reset_state(self, powered_at: float) -> None:
        self.mode = "idle"                  # idle / periodic / low_power
        self.deaf_until = powered_at + SCD4X_POWER_UP_S
        self.busy_until = self.deaf_until
        self.temperature_offset = SCD4X_DEFAULT_OFFSET_WORD
        self.altitude = 0
        self.pressure_hpa = SCD4X_DEFAULT_PRESSURE_HPA
        self.asc_enabled = 1
        self.buffer: list[int] | None = None
        self.last_co2: int | None = None
        self.periodic_since: float | None = None
        self.measured_for = 0.0            # how long the last periodic run lasted (FRC needs 3 min)
        self.next_measurement_at: float | None = None
        self.single_shot_at: float | None = None
        self.reply: bytes | None = None
        self.reply_at = 0.0

    def power_cycle(self) -> None:
        """A power glitch: volatile settings back to their defaults, idle, deaf for a second."""
        self._reset_state(self.clock())

    # -- time -------------------------------------------------------------------------------------
    def _advance(self) -> None:
        now = self.clock()
        if self.next_measurement_at is not None and now >= self.next_measurement_at:
            period = chip.PERIOD_S[self.mode]
            behind = math.floor((now - self.next_measurement_at) / period)
            self.next_measurement_at += (behind + 1) * period
            self._measure()
        if self.single_shot_at is not None and now >= self.single_shot_at:
            self.single_shot_at = None
            self._measure()

    def _measure(self) -> None:
        self.measurements += 1
        self.buffer = measurement_words(*self.source())
        self.last_co2 = self.buffer[0]

    # -- the wire ---------------------------------------------------------------------------------
    def i2c_write(self, data: bytes) -> None:
        self._advance()
        now = self.clock()
        if now < self.busy_until:
            raise nack_error()   # still executing the last command (or powering up): NACK
        if len(data) < 2:
            raise nack_error()
        command = (data[0] << 8) | data[1]
        if self.mode != "idle" and command not in chip.ALLOWED_WHILE_MEASURING:
            raise nack_error()   # not allowed during periodic measurement
        argument: int | None = None
        if command in SCD4X_WRITE_COMMANDS and len(data) >= 5:
            pair = bytes(data[2:4])
            if crc8(pair) != data[4]:
                self.ignored_writes += 1   # a bad CRC on a written word: the chip ignores the write
                return
            argument = (pair[0] << 8) | pair[1]
        self.commands.append(command)
        self.reply = None
        self.busy_until = now + SCD4X_EXEC_S.get(command, chip.EXEC_S)
        self.reply_at = self.busy_until
        self._execute(command, argument, now)

    def _execute(self, command: int, argument: int | None, now: float) -> None:
        if command == chip.CMD_STOP_PERIODIC:
            if self.periodic_since is not None:
                self.measured_for = now - self.periodic_since
            self.mode, self.periodic_since = "idle", None
            self.next_measurement_at = None
        elif command in (chip.CMD_START_PERIODIC, chip.CMD_START_LOW_POWER_PERIODIC):
            self.mode = "periodic" if command == chip.CMD_START_PERIODIC else "low_power"
            self.next_measurement_at = now + chip.PERIOD_S[self.mode]
            self.periodic_since = now
        elif command == chip.CMD_MEASURE_SINGLE_SHOT:
            if self.variant == "SCD40":
                self.busy_until = now   # an SCD40 does not know it: nothing happens
                return
            self.single_shot_at = now + chip.SINGLE_SHOT_S
        elif command == chip.CMD_READ_MEASUREMENT:
            self.reply = encode_words(self.buffer) if self.buffer is not None else b""
            self.buffer = None   # reading empties the buffer
        elif command == chip.CMD_GET_DATA_READY:
            ready = self.buffer is not None or self.stuck_data_ready
            self.reply = encode_words([SCD4X_STATUS_READY if ready else SCD4X_STATUS_NOT_READY])
        elif command == chip.CMD_GET_SERIAL_NUMBER:
            self.reply = encode_words([(self.serial >> 32) & 0xFFFF, (self.serial >> 16) & 0xFFFF,
                                       self.serial & 0xFFFF])
        elif command == chip.CMD_GET_SENSOR_VARIANT:
            self.reply = encode_words([SCD4X_VARIANT_WORD[self.variant]]) if self.knows_variant_command \
                else b""
        elif command == chip.CMD_REINIT:
            self.temperature_offset, self.altitude = SCD4X_DEFAULT_OFFSET_WORD, 0
            self.asc_enabled, self.stuck_data_ready = 1, False   # reinit clears a stuck flag
        elif command == chip.CMD_PERFORM_FRC and argument is not None:
            ok = self.measured_for >= SCD4X_FRC_MEASURED_S and self.last_co2 is not None
            self.reply = encode_words([chip.FRC_OFFSET + argument - self.last_co2 if ok and self.last_co2
                                       is not None else chip.FRC_FAILED])
            self.measured_for = 0.0
        elif argument is not None:
            if command == chip.CMD_SET_TEMPERATURE_OFFSET:
                self.temperature_offset = argument
            elif command == chip.CMD_SET_ALTITUDE:
                self.altitude = argument
            elif command == chip.CMD_SET_AMBIENT_PRESSURE:
                self.pressure_hpa = argument
            elif command == chip.CMD_SET_ASC_ENABLED:
                self.asc_enabled = argument
        elif command == chip.CMD_GET_TEMPERATURE_OFFSET:
            self.reply = encode_words([self.temperature_offset])
        elif command == chip.CMD_GET_ALTITUDE:
            self.reply = encode_words([self.altitude])
        elif command == chip.CMD_GET_ASC_ENABLED:
            self.reply = encode_words([self.asc_enabled])

    def i2c_read(self, length: int) -> bytes:
        self._advance()
        now = self.clock()
        if now < self.busy_until:
            raise nack_error()   # read header during the execution time: NACK
        if self.reply is None:
            return b"\xff" * length   # nothing pending: SDA stays high
        reply, self.reply = self.reply, None
        if not reply:
            raise nack_error()   # read_measurement with an empty buffer, an unknown command
        if self.corrupt_crc > 0:
            self.corrupt_crc -= 1
            reply = reply[:2] + bytes((reply[2] ^ 0xFF,)) + reply[3:]
        return (reply + b"\xff" * length)[:length]


def simulate(world: SimulatedWorld, cls: type[chip.SCD4x], options: dict[str, Any]) -> chip.SCD4x:
    """An SCD4x driver on the world's fake I2C bus, breathing the environment's CO₂."""
    config = cls.check_options(options)
    env = world.environment
    bus = world.i2c_bus(config["i2c_bus"])
    world.attach_i2c(bus, config["address"], lambda: FakeSCD4x(
        source=lambda: (env.co2(), env.air_temperature(), env.relative_humidity()),
        clock=world.clock.monotonic))
    return cls(bus=bus, clock=world.clock.monotonic, **options)
