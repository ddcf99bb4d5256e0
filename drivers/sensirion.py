"""What the Sensirion I2C chips (SHT3x, SHT4x, and the SCD family) share: data words guarded by a
CRC-8 each, and the 32-bit serial number made of two such words.

Every word a Sensirion chip sends is followed by its CRC (``crc8_sensirion``: polynomial 0x31,
init 0xFF, MSB first, over the two bytes of the word)::

    +--------+--------+-------+--------+--------+-------+
    | w0 MSB | w0 LSB | CRC0  | w1 MSB | w1 LSB | CRC1  |  ...
    +--------+--------+-------+--------+--------+-------+
"""

from __future__ import annotations

from .crc import crc8_sensirion
from .errors import BadDataError

WORD_LEN = 2
WORD_WITH_CRC_LEN = 3
SERIAL_FRAME_LEN = 2 * WORD_WITH_CRC_LEN  #: two words + CRCs
FLOATING_BUS_WORD = 0xFFFF                #: SDA held high by the pull-up: reads FF FF FF


def word_ok(data: bytes, at: int) -> bool:
    """Whether the CRC byte after the word at ``data[at:at+2]`` matches it."""
    return crc8_sensirion(data[at:at + WORD_LEN]) == data[at + WORD_LEN]


def check_words(data: bytes, count: int, label: str) -> tuple[int, ...]:
    """The first ``count`` words of ``data`` (each followed by its CRC), big-endian, after
    checking every CRC; `BadDataError` naming the word otherwise (a floating bus reads
    ``FF FF FF``, whose CRC would be 0xAC)."""
    if len(data) < count * WORD_WITH_CRC_LEN:
        raise BadDataError(f"{label}: short read ({len(data)} bytes, {count * WORD_WITH_CRC_LEN} expected)")
    words = []
    for i in range(count):
        at = i * WORD_WITH_CRC_LEN
        if not word_ok(data, at):
            got = data[at:at + WORD_WITH_CRC_LEN].hex(" ")
            raise BadDataError(f"{label}: CRC mismatch on word {i} ({got}, "
                               f"expected CRC 0x{crc8_sensirion(data[at:at + WORD_LEN]):02x})")
        words.append((data[at] << 8) | data[at + 1])
    return tuple(words)


def parse_serial(data: bytes) -> int | None:
    """The 32-bit serial number ``w0 << 16 | w1`` from a 6-byte answer, or None when a CRC does
    not hold (not a Sensirion answer)."""
    if len(data) < SERIAL_FRAME_LEN or not (word_ok(data, 0) and word_ok(data, WORD_WITH_CRC_LEN)):
        return None
    return (data[0] << 24) | (data[1] << 16) | (data[3] << 8) | data[4]
