"""The payload codec's keys: parsing, refusals, rotation, and what an encrypted payload looks like."""

from __future__ import annotations

import base64
import os

import pytest
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload

from agent.codec import (
    ENCODING,
    KEY_ID_META,
    CodecError,
    CodecKeyError,
    EncryptionCodec,
    generate_key_line,
    parse_keys,
)
from agent.settings import Settings


def key(key_id: str) -> str:
    return generate_key_line(key_id)


def payload(text: str = '{"password": "hunter2"}') -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


def test_generated_lines_parse_and_hold_32_bytes():
    line = generate_key_line("k1")
    key_id, _, material = line.partition(":")
    assert key_id == "k1" and len(base64.b64decode(material)) == 32
    assert generate_key_line() != generate_key_line()
    assert parse_keys(line)[0].id == "k1"


def test_lines_comments_and_commas():
    a, b = key("a"), key("b")
    text = f"# rotated 2026-01\n{b}  # the new one\n\n{a}\n"
    assert [k.id for k in parse_keys(text)] == ["b", "a"]
    assert [k.id for k in parse_keys(f"{b},{a}")] == ["b", "a"]
    assert parse_keys("# nothing\n\n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("k1", "expected <id>:<base64"),
        (f"k1:{base64.b64encode(os.urandom(16)).decode()}", "is 16 bytes; AES-256 needs 32"),
        ("k1:not base64!!", "not valid base64"),
        ("bad id:" + base64.b64encode(os.urandom(32)).decode(), "letters, digits"),
    ],
)
def test_bad_keys_are_refused_with_a_clear_message(text, message):
    with pytest.raises(CodecKeyError, match=message) as caught:
        parse_keys(text)
    material = text.partition(":")[2]
    assert not material or material not in str(caught.value)


def test_duplicate_ids_are_refused():
    with pytest.raises(CodecKeyError, match="'k1' appears twice"):
        parse_keys(f"{key('k1')}\n{key('k1')}")


def test_settings_refuse_bad_keys_at_start_without_printing_them(monkeypatch):
    material = base64.b64encode(os.urandom(31)).decode()
    monkeypatch.setenv("GATEWAY_AGENT_CODEC_KEYS", f"k1:{material}")
    monkeypatch.setenv("GATEWAY_AGENT_CP_PASSWORD", "cp-password-not-in-errors")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "31 bytes" in str(caught.value)
    assert material not in str(caught.value) and "cp-password-not-in-errors" not in str(caught.value)


def test_keys_from_a_file_win_and_never_show_in_reprs(tmp_path, monkeypatch):
    line = key("filekey")
    path = tmp_path / "keys"
    path.write_text(f"# mounted\n{line}\n")
    monkeypatch.setenv("GATEWAY_AGENT_CODEC_KEYS_FILE", str(path))
    settings = Settings()
    codec = settings.payload_codec()
    assert codec is not None and codec.key_ids == ["filekey"]
    material = line.partition(":")[2]
    for text in (repr(settings), str(settings), repr(codec), repr(parse_keys(line))):
        assert material not in text
    monkeypatch.setenv("GATEWAY_AGENT_CODEC_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="cannot read"):
        Settings()


def test_password_files(tmp_path):
    (tmp_path / "cp").write_text("from-a-file\n")
    (tmp_path / "broker").write_text("broker-file")
    settings = Settings(cp_password_file=str(tmp_path / "cp"), broker_password_file=str(tmp_path / "broker"))
    assert settings.cp_password.get_secret_value() == "from-a-file"
    assert settings.broker_password.get_secret_value() == "broker-file"
    assert Settings().payload_codec() is None


async def test_every_payload_is_encrypted_with_the_first_key_and_round_trips():
    codec = EncryptionCodec(parse_keys(f"{key('new')}\n{key('old')}"))
    original = payload()
    [encrypted] = await codec.encode([original])
    assert encrypted.metadata["encoding"] == ENCODING
    assert encrypted.metadata[KEY_ID_META] == b"new"
    assert b"hunter2" not in encrypted.SerializeToString() and b"json/plain" not in encrypted.data
    [again] = await codec.encode([original])
    assert again.data[:12] != encrypted.data[:12], "a random nonce per payload"
    assert await codec.decode([encrypted]) == [original]


async def test_rotation_old_histories_decode_after_the_new_key_goes_first():
    a, b = key("A"), key("B")
    [under_a] = await EncryptionCodec(parse_keys(a)).encode([payload()])
    rotated = EncryptionCodec(parse_keys(f"{b}\n{a}"))
    assert await rotated.decode([under_a]) == [payload()]
    [under_b] = await rotated.encode([payload()])
    assert under_b.metadata[KEY_ID_META] == b"B"
    with pytest.raises(CodecError, match="codec key 'B', which is not configured"):
        await EncryptionCodec(parse_keys(a)).decode([under_b])


async def test_the_key_id_is_bound_and_tampering_fails():
    a = key("A")
    codec = EncryptionCodec(parse_keys(a))
    [encrypted] = await codec.encode([payload()])
    # The same key material under another id: the associated data differs, decryption fails.
    relabelled = EncryptionCodec(parse_keys("Z:" + a.partition(":")[2]))
    forged = Payload(metadata={"encoding": ENCODING, KEY_ID_META: b"Z"}, data=encrypted.data)
    with pytest.raises(CodecError, match="does not decrypt"):
        await relabelled.decode([forged])
    flipped = Payload(metadata=dict(encrypted.metadata), data=encrypted.data[:-1] + bytes([encrypted.data[-1] ^ 1]))
    with pytest.raises(CodecError, match="does not decrypt"):
        await codec.decode([flipped])


async def test_plaintext_payloads_from_before_the_codec_pass_through():
    codec = EncryptionCodec(parse_keys(key("A")))
    assert await codec.decode([payload()]) == [payload()]
