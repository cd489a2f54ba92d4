"""The control plane's broker messages: the envelope and each event kind.

The envelope is ``{"event": {"payloadData": {"eventType", "timeStamp", "event": <base64 JSON>}}}``;
the decoded event carries the common fields plus those of its kind. Parsing is strict
about what the agent acts on and lenient about fields it does not use.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

# Identifiers become parts of workflow ids; the control plane's are UUIDs and domain names.
MAX_ID = 255
# A control-plane event is a few hundred bytes (artifacts come over REST, not the broker): anything
# near this is not an event, and parsing it would only cost memory.
MAX_MESSAGE_BYTES = 1024 * 1024
# Event types are upper-case words joined by underscores; anything else (huge, free text) is not one,
# and must not become a metrics label or a log line as it is.
_EVENT_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")


def _millis(value: Any) -> Any:
    """The real control plane sometimes sends a timestamp as a float; JSON's Infinity and NaN are no time."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a time")
        return int(value)
    return value


class MalformedEvent(ValueError):
    """A message that cannot be understood; it goes to the dead-letter destination with this reason."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class PayloadData(_Lenient):
    event_type: str = Field(alias="eventType", min_length=1, max_length=100, pattern=_EVENT_TYPE.pattern)
    time_stamp: int = Field(alias="timeStamp")
    event: str

    @field_validator("time_stamp", mode="before")
    @classmethod
    def _int_millis(cls, value: Any) -> Any:
        return _millis(value)


class _EnvelopeEvent(_Lenient):
    payload_data: PayloadData = Field(alias="payloadData")


class Envelope(_Lenient):
    event: _EnvelopeEvent


class EventBase(_Lenient):
    event_id: str = Field(alias="eventId", min_length=1, max_length=MAX_ID)
    time_stamp: int = Field(alias="timeStamp")
    type: str
    tenant_id: int = Field(alias="tenantId")
    tenant_domain: str = Field(alias="tenantDomain", min_length=1, max_length=MAX_ID)

    @field_validator("time_stamp", mode="before")
    @classmethod
    def _int_millis(cls, value: Any) -> Any:
        return _millis(value)

    @property
    def organization(self) -> str:
        return self.tenant_domain


class ApiGatewayEvent(EventBase):
    """``DEPLOY_API_IN_GATEWAY`` / ``REMOVE_API_FROM_GATEWAY``."""

    api_id: int = Field(alias="apiId")
    uuid: str = Field(min_length=1, max_length=MAX_ID)
    name: str
    version: str
    context: str = ""
    provider: str = ""
    api_type: str = Field(alias="apiType", default="HTTP")
    gateway_labels: list[str] = Field(alias="gatewayLabels", default_factory=list)


class ApiChangeEvent(EventBase):
    """``API_CREATE`` / ``API_UPDATE`` / ``API_DELETE`` / ``API_LIFECYCLE_CHANGE``."""

    api_id: int = Field(alias="apiId")
    uuid: str = Field(min_length=1, max_length=MAX_ID)
    api_name: str = Field(alias="apiName")
    api_version: str = Field(alias="apiVersion")
    api_context: str = Field(alias="apiContext", default="")
    api_provider: str = Field(alias="apiProvider", default="")
    api_type: str = Field(alias="apiType", default="HTTP")
    api_status: str = Field(alias="apiStatus", default="")


class ConsumerEvent(EventBase):
    # The event's other fields are kept: the consumer workflows use them where the lists lag.
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    def fields(self) -> dict[str, Any]:
        """The decoded event as the control plane sent it (its own field names)."""
        return self.model_dump(mode="json", by_alias=True)


class ApplicationEvent(ConsumerEvent):
    uuid: str = Field(min_length=1, max_length=MAX_ID)
    application_id: int = Field(alias="applicationId")
    application_name: str = Field(alias="applicationName", default="")


class ApplicationKeyEvent(ConsumerEvent):
    application_id: int = Field(alias="applicationId")
    # Control planes that send only the numeric id are served by the full sync (see the listener).
    application_uuid: str = Field(
        validation_alias=AliasChoices("applicationUUID", "applicationUuid"), default="", max_length=MAX_ID
    )
    consumer_key: str = Field(alias="consumerKey", min_length=1)
    key_type: str = Field(alias="keyType")


class SubscriptionEvent(ConsumerEvent):
    subscription_id: int = Field(alias="subscriptionId")
    subscription_uuid: str = Field(
        validation_alias=AliasChoices("subscriptionUUID", "subscriptionUuid"), min_length=1, max_length=MAX_ID
    )
    api_uuid: str = Field(validation_alias=AliasChoices("apiUUID", "apiUuid"), default="")
    application_uuid: str = Field(validation_alias=AliasChoices("applicationUUID", "applicationUuid"), default="")
    policy_id: str = Field(alias="policyId", default="")
    subscription_state: str = Field(alias="subscriptionState", default="")


class PolicyEvent(ConsumerEvent):
    policy_id: int = Field(alias="policyId")
    policy_name: str = Field(alias="policyName", min_length=1, max_length=MAX_ID)
    policy_type: str = Field(alias="policyType", default="")


class ScopeEvent(EventBase):
    name: str


API_GATEWAY_EVENTS = frozenset({"DEPLOY_API_IN_GATEWAY", "REMOVE_API_FROM_GATEWAY"})
API_CHANGE_EVENTS = frozenset({"API_CREATE", "API_UPDATE", "API_DELETE", "API_LIFECYCLE_CHANGE"})
_KIND_MODELS: dict[str, type[EventBase]] = {
    **{t: ApiGatewayEvent for t in API_GATEWAY_EVENTS},
    **{t: ApiChangeEvent for t in API_CHANGE_EVENTS},
    **{t: ApplicationEvent for t in ("APPLICATION_CREATE", "APPLICATION_UPDATE", "APPLICATION_DELETE")},
    **{t: ApplicationKeyEvent for t in ("APPLICATION_REGISTRATION_CREATE", "REMOVE_APPLICATION_KEYMAPPING")},
    **{t: SubscriptionEvent for t in ("SUBSCRIPTIONS_CREATE", "SUBSCRIPTIONS_UPDATE", "SUBSCRIPTIONS_DELETE")},
    **{t: PolicyEvent for t in ("POLICY_CREATE", "POLICY_UPDATE", "POLICY_DELETE")},
    **{t: ScopeEvent for t in ("SCOPE_CREATE", "SCOPE_UPDATE", "SCOPE_DELETE")},
}
KNOWN_EVENT_TYPES = frozenset(_KIND_MODELS)


class UnknownEvent(BaseModel):
    """An event type this agent does not know; acknowledged and counted, never an error."""

    model_config = ConfigDict(frozen=True)

    event_type: str
    time_stamp: int


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise MalformedEvent(f"{what} is JSON nested too deeply to be an event") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"{what} is not JSON: {exc}") from exc


def parse_message(body: str | bytes) -> EventBase | UnknownEvent:
    """Parse one broker message body; raise :class:`MalformedEvent` naming what is wrong (and
    nothing else, whatever the body holds)."""
    size = len(body) if isinstance(body, bytes) else len(body.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE_BYTES:
        raise MalformedEvent(f"message of {size} bytes is larger than the {MAX_MESSAGE_BYTES} an event can be")
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEvent(f"body is not UTF-8 text: {exc}") from exc
    raw = _json(body, "body")
    try:
        payload = Envelope.model_validate(raw).event.payload_data
    except ValidationError as exc:
        raise MalformedEvent(f"not a control-plane envelope ({_describe(exc)})") from exc

    model = _KIND_MODELS.get(payload.event_type)
    if model is None:
        return UnknownEvent(event_type=payload.event_type, time_stamp=payload.time_stamp)
    try:
        decoded = _json(base64.b64decode(payload.event, validate=True), "payloadData.event")
    except (binascii.Error, ValueError, MalformedEvent) as exc:
        raise MalformedEvent(f"{payload.event_type}: payloadData.event is not base64-encoded JSON ({exc})") from exc
    if not isinstance(decoded, dict):
        raise MalformedEvent(f"{payload.event_type}: the decoded event is not a JSON object")
    decoded.setdefault("type", payload.event_type)
    if payload.event_type.startswith("POLICY_") and isinstance(decoded.get("policyId"), str):
        decoded["policyId"] = int(decoded["policyId"]) if decoded["policyId"].isdigit() else decoded["policyId"]
    try:
        event = model.model_validate(decoded)
    except ValidationError as exc:
        raise MalformedEvent(f"{payload.event_type}: {_describe(exc)}") from exc
    if event.type != payload.event_type:
        raise MalformedEvent(f"envelope says {payload.event_type} but the event says {event.type}")
    return event


def encode_envelope(event_type: str, event: dict[str, Any], timestamp_ms: int) -> str:
    """The envelope the control plane publishes; used by the simulator and tests."""
    encoded = base64.b64encode(json.dumps(event).encode()).decode()
    return json.dumps(
        {"event": {"payloadData": {"eventType": event_type, "timeStamp": timestamp_ms, "event": encoded}}}
    )


ApiAction = Literal["converge", "remove"]
REMOVING_STATUSES = frozenset({"RETIRED", "BLOCKED"})
