"""A fake DHT22/DHT11 at the level of adafruit_dht 4.0.12's sensor object, driven by wire bytes.

`FakeDHT` has the library class's surface (``temperature``, ``humidity``, ``measure()``,
``exit()``) and behaviour: each property calls ``measure()``; within 2 s of the previous attempt
nothing is read and the cached values come back (``_last_called`` is set *before* the read, so
after a failed first read they are ``None, None``); failures are ``RuntimeError`` with the
library's exact messages. Each attempt turns a scripted outcome into the pulse train the
library would capture and decodes it exactly as the library does.

Frame (5 bytes, MSB first, 40 bits; each bit = ~50 µs low then a high pulse, > 51 µs means 1)::

    +--------+--------+--------+--------+----------+
    | RH hi  | RH lo  | T hi   | T lo   | checksum |   DHT22: RH×10, T×10, T hi bit 7 = sign
    | RH int | (0)    | T int  | T dec  | checksum |   DHT11
    +--------+--------+--------+--------+----------+   checksum = (b0+b1+b2+b3) & 0xFF
"""

from __future__ import annotations

import array
import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .clock import VirtualClock

if TYPE_CHECKING:
    from ..dht import _DHTBase
    from ..simulation import SimulatedWorld

DELAY_BETWEEN_READINGS_S = 2  # adafruit_dht's measure()
HI_LEVEL_US = 51  # a high pulse longer than this is a 1 bit
LOW_US, ZERO_HIGH_US, ONE_HIGH_US = 50, 26, 70
FRAME_BYTES = 5
FULL_PULSES = 81
SHORT_PULSES = 40  # "some data, just not 81 bits"
NO_PULSES = 3  # nothing answered
COLLECT_S = 0.25  # the library gathers edges for 0.25 s
SIGN_BIT = 0x80

MSG_NOT_FOUND = "DHT sensor not found, check wiring"
MSG_SHORT = "A full buffer was not returned. Try again."
MSG_CHECKSUM = "Checksum did not validate. Try again."
MSG_UNPLAUSIBLE = "Received unplausible data. Try again."


class Fault(enum.StrEnum):
    """Scripted failures of one attempt."""

    NOT_FOUND = "not_found"  # < 10 pulses
    SHORT = "short"  # 10..79 pulses
    CHECKSUM = "checksum"  # one flipped bit in the frame
    RH_OVER_100 = "rh_over_100"  # valid checksum, RH 120 %


@dataclass(frozen=True)
class Measurement:
    """A physical reading to encode; ``clone`` sends negative T in two's complement."""

    temperature: float
    humidity: float
    clone: bool = False


def _checksum(b: Iterable[int]) -> int:
    return sum(b) & 0xFF


def dht22_frame(temperature: float, humidity: float, clone: bool = False) -> bytes:
    """The 5 bytes a DHT22 sends. Negative T is sign-magnitude (datasheet) or, for ``clone``,
    two's complement (which the library decodes as about −3276.7 °C)."""
    rh = round(humidity * 10) & 0xFFFF
    t = round(temperature * 10)
    t_word = (t & 0xFFFF) if clone else (0x8000 | -t if t < 0 else t)
    body = [rh >> 8, rh & 0xFF, t_word >> 8, t_word & 0xFF]
    return bytes([*body, _checksum(body)])


def dht11_frame(temperature: float, humidity: float) -> bytes:
    """The 5 bytes a DHT11 sends (integral RH; T integral + tenths, sign in bit 7 of byte 3)."""
    tenths = round(abs(temperature) * 10)
    body = [round(humidity) & 0xFF, 0, (tenths // 10) & 0xFF,
            (tenths % 10) | (SIGN_BIT if temperature < 0 else 0)]
    return bytes([*body, _checksum(body)])


def frame_to_pulses(frame: bytes) -> array.array:
    """The pulse lengths (µs) the library records: low, high, low, high, … (81 entries)."""
    pulses = array.array("H")
    for byte in frame:
        for bit in range(7, -1, -1):
            pulses.append(LOW_US)
            pulses.append(ONE_HIGH_US if byte >> bit & 1 else ZERO_HIGH_US)
    pulses.append(LOW_US)
    return pulses


Outcome = Measurement | Fault | bytes


class FakeDHT:
    """adafruit_dht.DHT22 (``dht11=False``) or DHT11 look-alike.

    Each attempt takes the next item of ``script`` (a `Measurement`, a `Fault` or raw frame
    bytes); when the script is empty it measures ``source()`` -> (°C, %RH). ``clock`` is shared
    with the driver under test; an attempt advances it by the library's 0.25 s capture.
    """

    def __init__(self, dht11: bool = False, *, clock: Any = None,
                 source: Callable[[], tuple[float, float]] | None = None,
                 script: Iterable[Outcome] = ()) -> None:
        self._dht11 = dht11
        self.clock = clock or VirtualClock()
        self.source = source or (lambda: (21.0, 55.0))
        self.script: deque[Outcome] = deque(script)
        self._last_called: float = 0
        self._temperature: float | None = None
        self._humidity: float | None = None
        self.attempts = 0
        self.exited = False

    def exit(self) -> None:
        self.exited = True

    def _frame(self, outcome: Outcome) -> bytes | Fault:
        if isinstance(outcome, bytes):
            return outcome
        if isinstance(outcome, Measurement):
            if self._dht11:
                return dht11_frame(outcome.temperature, outcome.humidity)
            return dht22_frame(outcome.temperature, outcome.humidity, outcome.clone)
        if outcome is Fault.CHECKSUM:
            good = self._frame(Measurement(*self.source()))
            assert isinstance(good, bytes)
            return bytes([good[0] ^ 0x01, *good[1:]])
        if outcome is Fault.RH_OVER_100:
            rh = 120.0
            return dht11_frame(20.0, rh) if self._dht11 else dht22_frame(20.0, rh)
        return outcome

    def _pulses(self) -> array.array:
        outcome = self.script.popleft() if self.script else Measurement(*self.source())
        frame = self._frame(outcome)
        if frame is Fault.NOT_FOUND:
            return array.array("H", [LOW_US] * NO_PULSES)
        if frame is Fault.SHORT:
            return array.array("H", [LOW_US] * SHORT_PULSES)
        assert isinstance(frame, bytes)
        return frame_to_pulses(frame)

    @staticmethod
    def _pulses_to_binary(pulses: array.array, start: int, stop: int) -> int:
        binary = 0
        hi_sig = False
        for i in range(start, stop):
            if hi_sig:
                binary = binary << 1 | (1 if pulses[i] > HI_LEVEL_US else 0)
            hi_sig = not hi_sig
        return binary

    def measure(self) -> None:
        """adafruit_dht.DHTBase.measure, on the injected clock."""
        if self._last_called == 0 or (self.clock.monotonic() - self._last_called) > DELAY_BETWEEN_READINGS_S:
            self._last_called = self.clock.monotonic()
            self.attempts += 1
            self.clock.sleep(COLLECT_S)
            pulses = self._pulses()
            if len(pulses) < 10:
                raise RuntimeError(MSG_NOT_FOUND)
            if len(pulses) < 80:
                raise RuntimeError(MSG_SHORT)
            buf = array.array("B")
            for byte_start in range(0, 80, 16):
                buf.append(self._pulses_to_binary(pulses, byte_start, byte_start + 16))
            if self._dht11:
                new_humidity: float = buf[0]
                new_temperature = buf[2] + (buf[3] & 0x0F) / 10
            else:
                new_humidity = ((buf[0] << 8) | buf[1]) / 10
                new_temperature = (((buf[2] & 0x7F) << 8) | buf[3]) / 10
                if buf[2] & 0x80:
                    new_temperature = -new_temperature
            if sum(buf[0:4]) & 0xFF != buf[4]:
                raise RuntimeError(MSG_CHECKSUM)
            if new_humidity < 0 or new_humidity > 100:
                raise RuntimeError(MSG_UNPLAUSIBLE)
            self._temperature = new_temperature
            self._humidity = new_humidity

    @property
    def temperature(self) -> float | None:
        self.measure()
        return self._temperature

    @property
    def humidity(self) -> float | None:
        self.measure()
        return self._humidity


def simulate(world: SimulatedWorld, cls: type[_DHTBase], options: dict[str, Any]) -> _DHTBase:
    """A DHT22/DHT11 driver on a `FakeDHT` fed by the environment's air temperature and humidity;
    the driver's spacing and the fake's cache run on the world's clock, as in production. The
    user's options only: a missing pin fails here as it does on a Pi."""
    env = world.environment
    fake = FakeDHT(dht11=cls.library_class == "DHT11", clock=world.clock,
                   source=lambda: (env.air_temperature(), env.relative_humidity()))
    return cls(sensor=fake, owns_sensor=True, clock=world.clock.monotonic, **options)
