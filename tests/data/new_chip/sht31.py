"""Sensirion SHT31 temperature and humidity sensor over I2C, single shot (datasheet v6, §4).

A worked example of a new I2C chip (drivers/README.md): ``tests/test_new_chip.py`` copies this
file to ``drivers/sht31.py``, its fake to ``drivers/fakes/sht31.py`` and its test next to them in
a copy of pibridge, and checks that nothing else needs an edit.

One attempt in two phases: ``start()`` sends the single-shot command (high repeatability, no
clock stretching) and returns the datasheet maximum measurement time; ``collect()`` reads the six
result bytes. While it measures the chip NACKs the read header: `NotReadyError` (the
`I2CDriver.read_bytes` mapping).

::

    command 0x2400 (MSB first)    result: T[15:8] T[7:0] CRC  RH[15:8] RH[7:0] CRC
                                  CRC-8 0x31, init 0xFF over each 16-bit word (crc8_sensirion)
"""

from __future__ import annotations

from typing import Any

from . import (  # inside drivers/: relative; a separate package imports pibridge.drivers
    BadDataError,
    I2CDriver,
    Metric,
    NotReadyError,
    RetryPolicy,
    Sample,
    crc8_sensirion,
    i2c_address_option,
    i2c_bus_option,
)

ADDRESSES = (0x44, 0x45)                #: ADDR pin low, high
CMD_SINGLE_SHOT_HIGH = b"\x24\x00"      #: high repeatability, clock stretching disabled
MEASUREMENT_MAX_S = 0.0155              #: datasheet Table 4, high repeatability
BUS_TIME_S = 0.001
RESULT_LEN = 6
WORD_LEN = 2
FULL_SCALE = 65535
T_OFFSET_C, T_SPAN_C = -45.0, 175.0
RH_SPAN_PCT = 100.0


def check_word(data: bytes, at: int) -> int:
    """The 16-bit word at ``data[at:at+2]`` after checking the CRC byte behind it."""
    word = data[at:at + WORD_LEN]
    if crc8_sensirion(word) != data[at + WORD_LEN]:
        raise BadDataError(f"CRC mismatch on word {word.hex()} (got 0x{data[at + WORD_LEN]:02x}, "
                           f"computed 0x{crc8_sensirion(word):02x})")
    return (word[0] << 8) | word[1]


def convert(raw_t: int, raw_rh: int) -> tuple[float, float]:
    """Raw words -> (°C, %RH): T = -45 + 175 × raw / 65535, RH = 100 × raw / 65535."""
    return T_OFFSET_C + T_SPAN_C * raw_t / FULL_SCALE, RH_SPAN_PCT * raw_rh / FULL_SCALE


class SHT31(I2CDriver):
    """SHT31 in single-shot mode. Units: °C, %RH."""

    name = "sht31"
    chip_name = "SHT31"
    description = "Sensirion SHT31 temperature and humidity over I2C, single shot"
    metrics = (
        Metric("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
        Metric("humidity", "Relative humidity", unit="NoSI.Dimensionless.PERCENT"),
    )
    options = (
        i2c_address_option(ADDRESSES, "I2C address (0x44 ADDR low, 0x45 ADDR high)"),
        i2c_bus_option(),
    )
    read_time_s = MEASUREMENT_MAX_S + BUS_TIME_S
    min_interval_s = 0.05
    retry = RetryPolicy(attempts=2, spacing_s=0.05)
    simulator = "pibridge.drivers.fakes.sht31:simulate"

    def __init__(self, bus: Any = None, **options: Any) -> None:
        super().__init__(bus, **options)
        self._started = False

    def start(self) -> float:
        self.write_bytes(CMD_SINGLE_SHOT_HIGH, "measurement command")
        self._started = True
        return self.timing.read_time_s

    def collect(self) -> Sample:
        if not self._started:
            raise NotReadyError(f"{self.label}: collect() before start()")
        data = self.read_bytes(RESULT_LEN)
        try:
            temperature, humidity = convert(check_word(data, 0), check_word(data, 3))
        except BadDataError as exc:
            raise BadDataError(f"{self.label}: {exc}") from None
        return {"temperature": temperature, "humidity": humidity}
