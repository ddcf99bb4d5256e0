"""The subject CN of a PEM certificate, read with a small DER walk instead of ``cryptography``:
the long-running bridge learns its clientId from the stored certificate (e.g. one the SDK
provisioned, or in a read-only folder where no client-id cache can be written) without loading
``cryptography`` (about 10 MB of RSS on a Pi Zero). Nothing is verified here: the TLS handshake
checks the certificate; this only reads a name out of it.

The path walked (RFC 5280, DER: every element is tag, length, value)::

    Certificate            SEQUENCE (0x30)
     └ tbsCertificate      SEQUENCE (0x30)
        ├ version          [0] (0xA0)            optional
        ├ serialNumber     INTEGER (0x02)
        ├ signature        SEQUENCE (0x30)
        ├ issuer           SEQUENCE (0x30)
        ├ validity         SEQUENCE (0x30)
        └ subject          SEQUENCE (0x30) of
           RDN             SET (0x31) of
            attribute      SEQUENCE (0x30): type OID (0x06) 2.5.4.3 = 55 04 03, value (a string)

    length: one byte < 0x80, or 0x80 | n followed by n big-endian bytes (n ≤ 4 here)
"""

from __future__ import annotations

import base64
import binascii

PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PEM_END = b"-----END CERTIFICATE-----"
TAG_SEQUENCE = 0x30
TAG_SET = 0x31
TAG_INTEGER = 0x02
TAG_OID = 0x06
TAG_VERSION = 0xA0
#: DER content of the OID 2.5.4.3 (id-at-commonName).
OID_COMMON_NAME = b"\x55\x04\x03"
#: String types a CN may have → how its bytes decode.
STRING_ENCODINGS = {0x0C: "utf-8",       # UTF8String
                    0x13: "ascii",       # PrintableString
                    0x16: "ascii",       # IA5String
                    0x14: "latin-1",     # TeletexString (T61): as cryptography reads it
                    0x1E: "utf-16-be",   # BMPString
                    0x1C: "utf-32-be"}   # UniversalString
HIGH_TAG_MASK = 0x1F
LONG_LENGTH = 0x80
MAX_LENGTH_BYTES = 4
#: Fields of tbsCertificate before the subject (after the optional version).
FIELDS_BEFORE_SUBJECT = 4


def _element(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the element at ``pos``; ValueError if malformed."""
    if pos + 2 > end:
        raise ValueError("truncated element")
    tag, length = data[pos], data[pos + 1]
    if tag & HIGH_TAG_MASK == HIGH_TAG_MASK:
        raise ValueError("unexpected high tag number")
    pos += 2
    if length & LONG_LENGTH:
        count = length - LONG_LENGTH
        if not 0 < count <= MAX_LENGTH_BYTES or pos + count > end:
            raise ValueError("bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > end:
        raise ValueError("element longer than its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        element = _element(data, start, end)
        out.append(element)
        start = element[2]
    return out


def _expect(element: tuple[int, int, int], tag: int, what: str) -> tuple[int, int, int]:
    if element[0] != tag:
        raise ValueError(f"{what}: tag 0x{element[0]:02x}, expected 0x{tag:02x}")
    return element


def der_from_pem(cert_pem: bytes) -> bytes:
    """The DER bytes of the first certificate in ``cert_pem``; ValueError if there is none."""
    begin = cert_pem.find(PEM_BEGIN)
    end = cert_pem.find(PEM_END, begin + 1)
    if begin < 0 or end < 0:
        raise ValueError("no PEM certificate block")
    body = b"".join(cert_pem[begin + len(PEM_BEGIN):end].split())
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 ({exc})") from None


def subject_common_name(cert_pem: bytes) -> str:
    """The first CN of the certificate's subject ("" if it has none); ValueError if the PEM or
    DER is malformed."""
    der = der_from_pem(cert_pem)
    certificate = _expect(_element(der, 0, len(der)), TAG_SEQUENCE, "certificate")
    tbs = _expect(_element(der, certificate[1], certificate[2]), TAG_SEQUENCE, "tbsCertificate")
    fields = _children(der, tbs[1], tbs[2])
    if fields and fields[0][0] == TAG_VERSION:
        fields = fields[1:]
    if len(fields) <= FIELDS_BEFORE_SUBJECT:
        raise ValueError("tbsCertificate too short")
    _expect(fields[0], TAG_INTEGER, "serialNumber")
    subject = _expect(fields[FIELDS_BEFORE_SUBJECT], TAG_SEQUENCE, "subject")
    for rdn in _children(der, subject[1], subject[2]):
        _expect(rdn, TAG_SET, "relative distinguished name")
        for attribute in _children(der, rdn[1], rdn[2]):
            _expect(attribute, TAG_SEQUENCE, "attribute")
            parts = _children(der, attribute[1], attribute[2])
            if len(parts) != 2:
                raise ValueError("attribute is not a (type, value) pair")
            oid, value = _expect(parts[0], TAG_OID, "attribute type"), parts[1]
            if der[oid[1]:oid[2]] != OID_COMMON_NAME:
                continue
            encoding = STRING_ENCODINGS.get(value[0])
            if encoding is None:
                raise ValueError(f"CN of unexpected type 0x{value[0]:02x}")
            try:
                return der[value[1]:value[2]].decode(encoding)
            except UnicodeDecodeError as exc:
                raise ValueError(f"CN is not valid {encoding}") from exc
    return ""
