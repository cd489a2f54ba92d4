"""Fuzzing the two readers of outside input: the broker envelope parser and the artifact reader.

Whatever they are given, they answer with a result or with their own error naming the problem
(``MalformedEvent``, ``ArtifactError``), never with another exception: anything else would crash
the listener (a message redelivered forever) or fail a deployment with no reason.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.events import _KIND_MODELS, EventBase, MalformedEvent, UnknownEvent, encode_envelope, parse_message
from tests.translation import api_data, project_files, zip_bytes
from tests.translation.test_artifacts import runtime_zip
from translation.artifacts import ArtifactError, parse_runtime_artifacts

EVENT_TYPES = sorted(_KIND_MODELS)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
# Field names the parsers look at, so the fuzzer reaches past "field required".
KNOWN_FIELDS = sorted(
    {name for model in _KIND_MODELS.values() for f in model.model_fields.values() for name in [f.alias] if name}
    | {"uuid", "eventId", "tenantDomain", "timeStamp", "type", "apiUUID", "applicationUUID", "subscriptionUUID"}
)


def parse_or_refuse(body: str | bytes) -> EventBase | UnknownEvent | None:
    try:
        return parse_message(body)
    except MalformedEvent as exc:
        assert str(exc), "a refusal must say why"
        return None


@FUZZ
@given(st.text(max_size=300))
def test_any_text_is_an_event_or_refused(body: str) -> None:
    parse_or_refuse(body)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_are_an_event_or_refused(body: bytes) -> None:
    parse_or_refuse(body)


@FUZZ
@given(
    event_type=st.sampled_from(EVENT_TYPES) | st.text(max_size=30),
    time_stamp=json_values,
    fields=st.dictionaries(st.sampled_from(KNOWN_FIELDS) | st.text(max_size=10), json_values, max_size=12),
)
def test_any_decoded_event_in_a_real_envelope_is_an_event_or_refused(
    event_type: str, time_stamp: Any, fields: dict[str, Any]
) -> None:
    encoded = base64.b64encode(json.dumps(fields).encode()).decode()
    body = json.dumps({"event": {"payloadData": {"eventType": event_type, "timeStamp": time_stamp, "event": encoded}}})
    event = parse_or_refuse(body)
    if isinstance(event, EventBase):
        assert event.type == event_type


@FUZZ
@given(st.sampled_from(EVENT_TYPES), st.data())
def test_a_valid_event_with_one_field_replaced_is_an_event_or_refused(event_type: str, data: st.DataObject) -> None:
    fields = {
        "eventId": "e",
        "timeStamp": 1,
        "type": event_type,
        "tenantDomain": "carbon.super",
        "uuid": "u",
        "apiUUID": "a",
        "applicationUUID": "b",
        "subscriptionUUID": "s",
        "policyName": "Gold",
        "name": "N",
        "version": "1",
    }
    key = data.draw(st.sampled_from(sorted(fields)))
    fields[key] = data.draw(json_values)
    parse_or_refuse(encode_envelope(event_type, fields, 1))


# ---------------------------------------------------------------------- the artifact reader

VALID = runtime_zip()


def read_or_refuse(data: bytes) -> None:
    try:
        parse_runtime_artifacts(data)
    except ArtifactError as exc:
        assert exc.message, "a refusal must say why"


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_are_artifacts_or_refused(data: bytes) -> None:
    read_or_refuse(data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_a_real_archive_with_corrupted_bytes_is_read_or_refused(flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for position, value in flips:
        data[position] = value
    read_or_refuse(bytes(data))


@FUZZ
@given(st.integers(1, len(VALID) - 1))
def test_a_truncated_archive_is_refused(length: int) -> None:
    read_or_refuse(VALID[:length])


# (zipfile cuts a name at a NUL and cannot write the empty name that may leave: not the reader's case.)
entry_names = st.text(alphabet=st.sampled_from("abc/\\.:-_ \x00é"), min_size=1, max_size=30).filter(
    lambda name: name.split("\x00")[0] not in ("", "/")
) | st.sampled_from(["../x", "/etc/passwd", "C:\\x", "a/../../b", "deployments.json", "a//b", "."])


@pytest.mark.filterwarnings("ignore:Duplicate name")  # names that coincide once zipfile cut them at a NUL
@FUZZ
@given(
    outer=st.dictionaries(entry_names, st.binary(max_size=200), max_size=6),
    inner=st.dictionaries(
        entry_names, st.binary(max_size=200) | st.sampled_from([b"{}", b"[]", b"a: [", b"null"]), max_size=6
    ),
)
def test_archives_of_arbitrary_entries_are_read_or_refused(outer: dict[str, bytes], inner: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in outer.items():
            archive.writestr(name, content)
        archive.writestr("inner.zip", zip_bytes(inner))
    read_or_refuse(buffer.getvalue())


@FUZZ
@given(st.sampled_from(sorted(project_files(api_data()))), json_values)
def test_a_project_file_replaced_by_any_json_is_read_or_refused(name: str, value: Any) -> None:
    files: dict[str, bytes | str] = dict(project_files(api_data()))
    files[name] = json.dumps(value)
    read_or_refuse(runtime_zip(files))
