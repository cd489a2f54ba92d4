import base64
import json

import pytest

from models.api_workflow import ApiEventSignal
from models.events import (
    ApiChangeEvent,
    ApiGatewayEvent,
    MalformedEvent,
    SubscriptionEvent,
    UnknownEvent,
    encode_envelope,
    parse_message,
)

COMMON = {"eventId": "e-1", "timeStamp": 1764236400123, "tenantId": -1234, "tenantDomain": "carbon.super"}
DEPLOY = {
    **COMMON,
    "type": "DEPLOY_API_IN_GATEWAY",
    "apiId": 7,
    "uuid": "0b3e-uuid",
    "name": "PizzaShack",
    "version": "1.0.0",
    "context": "/pizzashack",
    "provider": "admin",
    "apiType": "HTTP",
    "gatewayLabels": ["Default"],
}


def test_deploy_event_parses_with_its_fields() -> None:
    event = parse_message(encode_envelope("DEPLOY_API_IN_GATEWAY", DEPLOY, 1764236400123))
    assert isinstance(event, ApiGatewayEvent)
    assert (event.uuid, event.name, event.gateway_labels, event.organization) == (
        "0b3e-uuid",
        "PizzaShack",
        ["Default"],
        "carbon.super",
    )


def test_float_timestamps_are_accepted() -> None:
    body = json.loads(encode_envelope("DEPLOY_API_IN_GATEWAY", {**DEPLOY, "timeStamp": 1764236400123.0}, 0))
    body["event"]["payloadData"]["timeStamp"] = 1764236400123.7
    event = parse_message(json.dumps(body))
    assert event.time_stamp == 1764236400123


def test_lifecycle_to_retired_removes_and_published_converges() -> None:
    fields = {**COMMON, "apiId": 7, "uuid": "u", "apiName": "A", "apiVersion": "1", "apiType": "HTTP"}
    retired = parse_message(encode_envelope("API_LIFECYCLE_CHANGE", {**fields, "apiStatus": "RETIRED"}, 1))
    published = parse_message(encode_envelope("API_LIFECYCLE_CHANGE", {**fields, "apiStatus": "PUBLISHED"}, 1))
    assert isinstance(retired, ApiChangeEvent)
    assert ApiEventSignal.from_event(retired).removes_api
    assert not ApiEventSignal.from_event(published).removes_api
    assert ApiEventSignal.from_event(published).action == "DEPLOY"


def test_unknown_event_type_is_not_an_error() -> None:
    event = parse_message(encode_envelope("LLM_PROVIDER_CREATE", {**COMMON, "type": "LLM_PROVIDER_CREATE"}, 5))
    assert event == UnknownEvent(event_type="LLM_PROVIDER_CREATE", time_stamp=5)


def test_subscription_event_accepts_aliases() -> None:
    fields = {**COMMON, "subscriptionId": 3, "subscriptionUuid": "s", "apiUuid": "a", "applicationUUID": "b"}
    event = parse_message(encode_envelope("SUBSCRIPTIONS_CREATE", fields, 1))
    assert isinstance(event, SubscriptionEvent) and (event.subscription_uuid, event.api_uuid) == ("s", "a")
    # Fields the model does not name are kept for the consumer workflows.
    extra = parse_message(encode_envelope("SUBSCRIPTIONS_CREATE", {**fields, "apiName": "Pizza"}, 1))
    assert isinstance(extra, SubscriptionEvent) and extra.fields()["apiName"] == "Pizza"


def test_a_subscription_event_without_its_uuid_is_malformed() -> None:
    fields = {**COMMON, "subscriptionId": 3, "apiUUID": "a", "applicationUUID": "b"}
    with pytest.raises(MalformedEvent, match="subscriptionUUID"):
        parse_message(encode_envelope("SUBSCRIPTIONS_CREATE", fields, 1))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "body is not JSON"),
        ("[1, 2]", "not a control-plane envelope"),
        ('{"event": {"payloadData": {"eventType": "DEPLOY_API_IN_GATEWAY"}}}', "not a control-plane envelope"),
        (
            json.dumps(
                {"event": {"payloadData": {"eventType": "DEPLOY_API_IN_GATEWAY", "timeStamp": 1, "event": "%%%"}}}
            ),
            "not base64-encoded JSON",
        ),
        (encode_envelope("DEPLOY_API_IN_GATEWAY", {k: v for k, v in DEPLOY.items() if k != "uuid"}, 1), "uuid"),
        (encode_envelope("DEPLOY_API_IN_GATEWAY", {**DEPLOY, "type": "API_DELETE"}, 1), "envelope says"),
        (
            json.dumps(
                {
                    "event": {
                        "payloadData": {
                            "eventType": "API_UPDATE",
                            "timeStamp": 1,
                            "event": base64.b64encode(b'"text"').decode(),
                        }
                    }
                }
            ),
            "not a JSON object",
        ),
    ],
)
def test_malformed_messages_name_the_problem(body: str, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        parse_message(body)


def test_oversized_identifiers_are_malformed() -> None:
    with pytest.raises(MalformedEvent, match="uuid"):
        parse_message(encode_envelope("DEPLOY_API_IN_GATEWAY", {**DEPLOY, "uuid": "u" * 300}, 1))
