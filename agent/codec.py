"""Encrypted workflow history: a Temporal payload codec (AES-256-GCM) and its keys.

Every payload a client or worker of the agent sends to Temporal (workflow and activity inputs and
results, signals, updates, queries, memos of their own, failures' details) is replaced by one whose
``data`` is ``nonce (12 bytes) || AES-GCM(serialized payload)`` and whose metadata says
``encoding: binary/encrypted`` and ``encryption-key-id: <id>``. The associated data binds the key id,
so a ciphertext cannot be passed off as another key's. Search attributes are not payloads the codec
sees (Temporal must index them): they carry ids, names and states, never credentials.

Keys: ``GATEWAY_AGENT_CODEC_KEYS_FILE`` (a mounted file) or ``GATEWAY_AGENT_CODEC_KEYS``, lines of
``<id>:<base64 of 32 bytes>`` (``#`` comments; in the variable, commas separate lines too). The first
key encrypts, every key decrypts: rotate by putting a new key first and keeping the old ones as long
as histories written under them are kept.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID_META = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
AAD_PREFIX = b"gateway-agent/codec/v1:"

CREATE_KEY_HINT = (
    "create a key with `gateway-agent codec-key --id <id>` and put its line into the file named by "
    "GATEWAY_AGENT_CODEC_KEYS_FILE (or into GATEWAY_AGENT_CODEC_KEYS)"
)


class CodecKeyError(ValueError):
    """Codec keys that cannot be used; the message names the line or key id, never key material."""


class CodecError(RuntimeError):
    """A payload that cannot be decrypted (unknown key id, tampered or foreign ciphertext)."""


@dataclass(frozen=True)
class CodecKey:
    id: str
    secret: SecretStr = field(repr=False)

    def __repr__(self) -> str:
        return f"CodecKey(id={self.id!r}, secret=**********)"


def generate_key_line(key_id: str | None = None) -> str:
    """A new key's line, ``<id>:<base64 of 32 random bytes>``."""
    key_id = key_id or f"k{secrets.token_hex(4)}"
    if not KEY_ID.match(key_id):
        raise CodecKeyError(f"key id {key_id!r}: letters, digits, '.', '_' and '-' only (at most 64)")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


def parse_keys(text: str, source: str = "GATEWAY_AGENT_CODEC_KEYS") -> list[CodecKey]:
    """Keys from lines of ``<id>:<base64>`` (newline- or comma-separated, ``#`` comments); refused
    with a clear message: a malformed line, a key that is not 32 bytes, a duplicate id."""
    keys: list[CodecKey] = []
    seen: set[str] = set()
    for number, raw in enumerate(re.split(r"[\n,]", text), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key_id, sep, material = line.partition(":")
        key_id, material = key_id.strip(), material.strip()
        where = f"{source}, entry {number}"
        if not sep or not key_id or not material:
            raise CodecKeyError(f"{where}: expected <id>:<base64 of {KEY_BYTES} bytes>")
        if not KEY_ID.match(key_id):
            raise CodecKeyError(f"{where}: key id {key_id!r}: letters, digits, '.', '_' and '-' only (at most 64)")
        if key_id in seen:
            raise CodecKeyError(f"{where}: key id {key_id!r} appears twice; every key needs its own id")
        try:
            decoded = base64.b64decode(material, validate=True)
        except (binascii.Error, ValueError):
            raise CodecKeyError(f"{where}: key {key_id!r} is not valid base64") from None
        if len(decoded) != KEY_BYTES:
            raise CodecKeyError(
                f"{where}: key {key_id!r} is {len(decoded)} bytes; AES-256 needs {KEY_BYTES} "
                "(`gateway-agent codec-key` creates one)"
            )
        seen.add(key_id)
        keys.append(CodecKey(key_id, SecretStr(material)))
    return keys


def _aad(key_id: str) -> bytes:
    return AAD_PREFIX + key_id.encode()


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each payload's serialized proto; the first key encrypts, all decrypt."""

    def __init__(self, keys: Sequence[CodecKey]) -> None:
        if not keys:
            raise CodecKeyError(f"no codec keys: {CREATE_KEY_HINT}")
        ids = [k.id for k in keys]
        if len(set(ids)) != len(ids):
            raise CodecKeyError("codec key ids must be unique")
        self._encrypt_id = keys[0].id
        self._ciphers = {k.id: AESGCM(base64.b64decode(k.secret.get_secret_value())) for k in keys}

    def __repr__(self) -> str:
        return f"EncryptionCodec(encrypting with {self._encrypt_id!r}, keys {list(self._ciphers)!r})"

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    @property
    def encrypting_key_id(self) -> str:
        return self._encrypt_id

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._encrypt_id].encrypt(nonce, payload.SerializeToString(), _aad(self._encrypt_id))
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_META: self._encrypt_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written without the codec (before it was turned on): as it is
        key_id = payload.metadata.get(KEY_ID_META, b"").decode("utf-8", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CodecError(
                f"payload encrypted with codec key {key_id!r}, which is not configured "
                f"(configured: {', '.join(self._ciphers)}); add it back to GATEWAY_AGENT_CODEC_KEYS(_FILE)"
            )
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(key_id))
        except InvalidTag:
            raise CodecError(
                f"a payload under codec key {key_id!r} does not decrypt (tampered, or another key)"
            ) from None
        out = Payload()
        out.ParseFromString(plain)
        return out

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]


def codec_from_text(text: str, source: str = "GATEWAY_AGENT_CODEC_KEYS") -> EncryptionCodec | None:
    keys = parse_keys(text, source)
    return EncryptionCodec(keys) if keys else None
