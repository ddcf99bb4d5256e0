"""A command-level fake SCD30 and its simulator.

`FakeSCD30` behaves as hardware.md §12.6 describes: a command (and its argument word + CRC) per
write transaction; a reply readable only ≥ 3 ms after its command, in a separate transaction (a
read sooner, as a repeated START would be, is NACKed and counted in ``early_reads``); data ready
goes to 1 every interval and back to 0 when the measurement is read; read_measurement with
nothing new returns the last frame again (the module keeps it); argument ranges and CRCs checked
(a bad one is ignored and counted); interval, self-calibration, altitude, temperature offset and
"measuring" kept across `power_cycle` (non-volatile), which leaves the module deaf for its 2 s boot.
Its CRC is computed here, not with the driver's function.

Faults (off unless asked): ``nack``/`fail_next` (errno 121 bursts), ``corrupt_crc`` (the next n
replies carry a flipped CRC byte: the Pi's clock-stretching symptom), ``stuck_data_ready``,
detaching it from the bus (gone). Counter ``flash_writes``: settings written to non-volatile memory.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import scd30 as chip
from .i2c import FakeI2CDevice, nack_error
from .sensirion import crc8, pack_words

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

SCD30_BOOT_S = 2.0
SCD30_SOFT_RESET_S = 2.0         #: deaf after a soft reset for as long as after power-on (Sensirion: 2 s)
SCD30_FIRMWARE = 0x0342          #: 3.66
SCD30_PRESSURE_RANGE_MBAR = (700, 1400)
SCD30_FRC_RANGE_PPM = (400, 2000)


def encode_words(words: list[int]) -> bytes:
    """Words as the chip sends them: MSB, LSB, CRC each (`pack_words`, the fakes' own CRC)."""
    return pack_words(*words)


def measurement_frame(co2_ppm: float, celsius: float, percent: float) -> bytes:
    """Three big-endian float32, each as two words with their CRCs."""
    packed = struct.pack(">fff", co2_ppm, celsius, percent)
    return encode_words([(packed[i] << 8) | packed[i + 1] for i in range(0, len(packed), 2)])


class FakeSCD30(FakeI2CDevice):
    """SCD30 on the wire. Inputs: ``source()`` -> (CO₂ ppm, °C, %RH). ``commands`` logs every
    command code received."""

    def __init__(self, *, source: Callable[[], tuple[float, float, float]] = lambda: (600.0, 21.0, 50.0),
                 clock: Callable[[], float] = time.monotonic, measuring: bool = False,
                 interval_s: int = chip.INTERVAL_MIN_S) -> None:
        super().__init__()
        self.source, self.clock = source, clock
        self.commands: list[int] = []
        self.soft_reset_s = SCD30_SOFT_RESET_S   #: how long a soft reset leaves it deaf
        self.corrupt_crc = 0
        self.stuck_data_ready = False
        self.early_reads = 0
        self.ignored_writes = 0
        self.flash_writes = 0
        self.measurements = 0
        # non-volatile
        self.interval_s = interval_s
        self.asc = 0
        self.altitude = 0
        self.temperature_offset = 0
        self.measuring = measuring
        self.pressure_mbar = 0
        self.frc_ppm = 400
        self._boot(self.clock() - SCD30_BOOT_S)

    def _boot(self, at: float) -> None:
        self.ready_at = at + SCD30_BOOT_S     # deaf until then
        self.frame: bytes | None = None
        self.new_data = False
        self.reply: bytes | None = None
        self.reply_at = 0.0
        self.next_measurement_at = self.ready_at + self.interval_s if self.measuring else None

    def power_cycle(self) -> None:
        """Power lost and back: settings kept, measurement resumes by itself, boot takes 2 s."""
        self._boot(self.clock())

    def _advance(self) -> None:
        now = self.clock()
        if self.next_measurement_at is not None and now >= self.next_measurement_at:
            behind = math.floor((now - self.next_measurement_at) / self.interval_s)
            self.next_measurement_at += (behind + 1) * self.interval_s
            self.measurements += 1
            self.frame = measurement_frame(*self.source())
            self.new_data = True

    def i2c_write(self, data: bytes) -> None:
        self._advance()
        now = self.clock()
        if now < self.ready_at or len(data) < 2:
            raise nack_error()
        command = (data[0] << 8) | data[1]
        argument = None
        if len(data) >= 5:
            pair = bytes(data[2:4])
            if crc8(pair) != data[4]:
                self.ignored_writes += 1
                return
            argument = (pair[0] << 8) | pair[1]
        self.commands.append(command)
        self.reply = None
        self.reply_at = now + chip.COMMAND_TO_READ_S
        self._execute(command, argument, now)

    def _execute(self, command: int, argument: int | None, now: float) -> None:
        if command == chip.CMD_START_CONTINUOUS and argument is not None:
            if argument != chip.NO_COMPENSATION and not (
                    SCD30_PRESSURE_RANGE_MBAR[0] <= argument <= SCD30_PRESSURE_RANGE_MBAR[1]):
                self.ignored_writes += 1
                return
            self.pressure_mbar = argument
            if not self.measuring:
                self.measuring = True
                self.flash_writes += 1
                self.next_measurement_at = now + self.interval_s
        elif command == chip.CMD_STOP_CONTINUOUS:
            self.measuring = False
            self.flash_writes += 1
            self.next_measurement_at = None
        elif command == chip.CMD_MEASUREMENT_INTERVAL:
            if argument is None:
                self.reply = encode_words([self.interval_s])
            elif chip.INTERVAL_MIN_S <= argument <= chip.INTERVAL_MAX_S:
                self.interval_s = argument
                self.flash_writes += 1
                if self.measuring:
                    self.next_measurement_at = now + argument
            else:
                self.ignored_writes += 1
        elif command == chip.CMD_SELF_CALIBRATION:
            if argument is None:
                self.reply = encode_words([self.asc])
            elif argument in (0, 1):
                self.asc = argument
                self.flash_writes += 1
            else:
                self.ignored_writes += 1
        elif command == chip.CMD_ALTITUDE:
            if argument is None:
                self.reply = encode_words([self.altitude])
            else:
                self.altitude = argument
                self.flash_writes += 1
        elif command == chip.CMD_TEMPERATURE_OFFSET:
            if argument is None:
                self.reply = encode_words([self.temperature_offset])
            else:
                self.temperature_offset = argument
                self.flash_writes += 1
        elif command == chip.CMD_FORCED_RECALIBRATION:
            if argument is None:
                self.reply = encode_words([self.frc_ppm])
            elif SCD30_FRC_RANGE_PPM[0] <= argument <= SCD30_FRC_RANGE_PPM[1]:
                self.frc_ppm = argument
            else:
                self.ignored_writes += 1
        elif command == chip.CMD_GET_DATA_READY:
            self.reply = encode_words([1 if self.new_data or self.stuck_data_ready else 0])
        elif command == chip.CMD_READ_MEASUREMENT:
            self.reply = self.frame if self.frame is not None else b""
            self.new_data = False
        elif command == chip.CMD_FIRMWARE_VERSION:
            self.reply = encode_words([SCD30_FIRMWARE])
        elif command == chip.CMD_SOFT_RESET:
            self._boot(now - SCD30_BOOT_S + self.soft_reset_s)
            self.stuck_data_ready = False

    def i2c_read(self, length: int) -> bytes:
        self._advance()
        now = self.clock()
        if now < self.ready_at:
            raise nack_error()
        if self.reply is not None and now < self.reply_at:
            self.early_reads += 1    # < 3 ms after the command (or a repeated START)
            raise nack_error()
        if self.reply is None:
            return b"\xff" * length
        reply, self.reply = self.reply, None
        if not reply:
            raise nack_error()
        if self.corrupt_crc > 0:
            self.corrupt_crc -= 1
            reply = reply[:2] + bytes((reply[2] ^ 0xFF,)) + reply[3:]
        return (reply + b"\xff" * length)[:length]


def simulate(world: SimulatedWorld, cls: type[chip.SCD30], options: dict[str, Any]) -> chip.SCD30:
    """An SCD30 driver on the world's fake I2C bus, breathing the environment's CO₂."""
    config = cls.check_options(options)
    env = world.environment
    bus = world.i2c_bus(config["i2c_bus"])
    world.attach_i2c(bus, config["address"], lambda: FakeSCD30(
        source=lambda: (env.co2(), env.air_temperature(), env.relative_humidity()),
        clock=world.clock.monotonic))
    return cls(bus=bus, clock=world.clock.monotonic, **options)
