"""Piece and replica commitments as the CIDs damocles-manager speaks: `{"/": "baga6ea4..."}`.

A Filecoin commitment CID is CIDv1 = varint(1) | varint(codec) | multihash, where the multihash is
varint(hash code) | varint(32) | the 32-byte commitment, written in multibase base32 (prefix `b`,
RFC 4648 lower-case, no padding). Only two pairs exist for the worker:

    unsealed (commP / commD): codec fil-commitment-unsealed 0xf101, hash sha2-256-trunc254-padded 0x1012
                              -> "baga6ea4sea..."
    sealed (commR):           codec fil-commitment-sealed 0xf102, hash poseidon-bls12_381-a2-fc1 0xb401
                              -> "bagboea4b5a..."

Written here rather than taken from PyPI: `py-cid` pulls in four packages (py-multibase,
py-multicodec, py-multihash, morphys) and `multiformats` four more (bases, typing-validation, ...;
last release 2023-12), all for a closed set of two codec/hash pairs that we must check strictly
anyway (any other CID is an error here). What remains is a varint and the stdlib's base32.
"""

from __future__ import annotations

import base64
import enum

from damocles_py.proofs.types import uvarint


class CidError(ValueError):
    """Not a commitment CID of the expected kind."""


class CommitmentKind(enum.Enum):
    # (multicodec, multihash code)
    unsealed = (0xF101, 0x1012)
    sealed = (0xF102, 0xB401)


_CID_VERSION = 1
_DIGEST_LEN = 32


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The unsigned varint at `pos` and the position after it; minimal encodings only (as multiformats demands)."""
    value = shift = 0
    start = pos
    while True:
        if pos >= len(data) or pos - start >= 9:
            raise CidError("truncated or oversized varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0 and pos - start > 1:
                raise CidError("non-minimal varint")
            return value, pos


def commitment_to_cid(commitment: bytes, kind: CommitmentKind = CommitmentKind.unsealed) -> str:
    if len(commitment) != _DIGEST_LEN:
        raise CidError(f"a commitment is {_DIGEST_LEN} bytes, got {len(commitment)}")
    codec, hash_code = kind.value
    raw = uvarint(_CID_VERSION) + uvarint(codec) + uvarint(hash_code) + uvarint(_DIGEST_LEN) + bytes(commitment)
    return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def cid_to_commitment(text: str, kind: CommitmentKind = CommitmentKind.unsealed) -> bytes:
    """The 32-byte commitment in `text`; CidError unless it is a CIDv1 base32 CID of `kind`."""
    if not isinstance(text, str) or not text.startswith("b"):
        raise CidError(f"{text!r} is not a base32 CIDv1 (it must start with 'b')")
    body = text[1:]
    if body != body.lower():
        raise CidError(f"{text!r} is not lower-case base32")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (ValueError, base64.binascii.Error):
        raise CidError(f"{text!r} is not valid base32") from None
    version, pos = _read_varint(raw, 0)
    codec, pos = _read_varint(raw, pos)
    hash_code, pos = _read_varint(raw, pos)
    length, pos = _read_varint(raw, pos)
    if version != _CID_VERSION:
        raise CidError(f"{text!r} is a CIDv{version}, not a CIDv1")
    if (codec, hash_code) != kind.value:
        raise CidError(f"{text!r} has codec 0x{codec:x} and hash 0x{hash_code:x}, not those of an {kind.name} "
                       f"commitment (0x{kind.value[0]:x}, 0x{kind.value[1]:x})")
    digest = raw[pos:]
    if length != _DIGEST_LEN or len(digest) != _DIGEST_LEN:
        raise CidError(f"{text!r} holds a {len(digest)}-byte digest, not {_DIGEST_LEN} bytes")
    if commitment_to_cid(digest, kind) != text:  # non-canonical base32 (stray trailing bits)
        raise CidError(f"{text!r} is not canonical base32")
    return digest
