"""CRC-8 checks shared by chip drivers (and implemented independently again by the fakes).

=====================  ==========  ========  =====  ============================================
name                   polynomial  init      order  used by
=====================  ==========  ========  =====  ============================================
Dallas/Maxim (1-Wire)  0x31        0x00      LSB    DS18B20 scratchpad, 1-Wire ROM ids
                       (0x8C refl.)                 (``crc8_maxim``)
Sensirion              0x31        0xFF      MSB    SHT3x/SHT4x/SCD4x/SGP words (``crc8_sensirion``)
=====================  ==========  ========  =====  ============================================

Both are x^8 + x^5 + x^4 + 1; they differ in the initial value and the bit order. Every function
here works on any number of bytes (zero included: the CRC of nothing is the initial value); a
chip decides what it covers (a Sensirion word is 2 bytes, a DS18B20 scratchpad 8).
"""

from __future__ import annotations

from collections.abc import Iterable

POLY_X8_X5_X4_1 = 0x31            #: x^8 + x^5 + x^4 + 1, MSB-first form
POLY_X8_X5_X4_1_REFLECTED = 0x8C  #: the same, LSB-first (reflected) form
MAXIM_INIT = 0x00
SENSIRION_INIT = 0xFF
BYTE_MASK = 0xFF
MSB = 0x80


def crc8_msb_first(data: Iterable[int], polynomial: int, init: int) -> int:
    """Plain (non-reflected) CRC-8 of ``data`` (any number of bytes), no final XOR."""
    crc = init
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ polynomial) & BYTE_MASK if crc & MSB else (crc << 1) & BYTE_MASK
    return crc


def crc8_lsb_first(data: Iterable[int], reflected_polynomial: int, init: int) -> int:
    """Reflected CRC-8 (bits shifted out LSB first, as 1-Wire sends them) of ``data`` (any number
    of bytes), no final XOR."""
    crc = init
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ reflected_polynomial if crc & 1 else crc >> 1
    return crc


def crc8_maxim(data: Iterable[int]) -> int:
    """Dallas/Maxim CRC-8 (1-Wire) of any number of bytes: ``crc8_maxim(b"123456789") == 0xA1``
    (the catalogue's check value); a ROM id's or a scratchpad's first 7 / 8 bytes."""
    return crc8_lsb_first(data, POLY_X8_X5_X4_1_REFLECTED, MAXIM_INIT)


def crc8_sensirion(data: Iterable[int]) -> int:
    """Sensirion CRC-8 of any number of bytes; the chips send one per 16-bit word:
    ``crc8_sensirion(b"\\xbe\\xef") == 0x92`` (the datasheets' example),
    ``crc8_sensirion(b"123456789") == 0xF7`` (CRC-8/NRSC-5's check value: the same parameters)."""
    return crc8_msb_first(data, POLY_X8_X5_X4_1, SENSIRION_INIT)
