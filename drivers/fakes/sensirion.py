"""The chip side of Sensirion-style framing, written again for the fakes (never the driver's
code, so tests compare two implementations): the CRC-8 (polynomial 0x31, init 0xFF, MSB first),
table-driven here where the driver's is bitwise, and words packed with their CRCs.

Also used by the AHT20 fake, whose CRC is the same algorithm over six bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

CRC_POLYNOMIAL = 0x31
CRC_INIT = 0xFF


def _table() -> tuple[int, ...]:
    rows = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLYNOMIAL) if crc & 0x80 else crc << 1
            crc &= 0xFF
        rows.append(crc)
    return tuple(rows)


CRC_TABLE = _table()


def crc8(data: Iterable[int]) -> int:
    """CRC-8/NRSC-5 style (0x31, init 0xFF, no reflection, no final XOR): ``BE EF`` -> 0x92."""
    crc = CRC_INIT
    for byte in data:
        crc = CRC_TABLE[crc ^ byte]
    return crc


def pack_words(*words: int) -> bytes:
    """Words as the chip sends them: MSB, LSB, CRC for each."""
    out = bytearray()
    for word in words:
        pair = bytes([(word >> 8) & 0xFF, word & 0xFF])
        out += pair + bytes([crc8(pair)])
    return bytes(out)


def clamp_ticks(value: float) -> int:
    """A physical quantity already scaled to 16-bit ticks, rounded and held to 0..65535."""
    return min(0xFFFF, max(0, round(value)))
