"""The agent's identity on the resources it writes: the gateway-id label and the field manager."""

from __future__ import annotations

import pytest

from models.naming import (
    GATEWAY_ID_LABEL,
    MANAGED_BY_LABEL,
    MAX_FIELD_MANAGER,
    api_labels,
    api_selector,
    consumer_labels,
    consumer_selector,
    field_manager,
    owner_labels,
    owner_selector,
    sha1_hex,
)
from translation.consumers import ConsumerOptions
from translation.translate import TranslationOptions


def matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based selector semantics: every ``k=v`` holds, every bare ``k`` exists."""
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if key not in labels or (value and labels[key] != value):
            return False
    return True


def test_owner_labels_and_selector_carry_the_gateway_id() -> None:
    assert owner_labels("Edge") == {MANAGED_BY_LABEL: "gateway-agent", GATEWAY_ID_LABEL: "Edge"}
    assert owner_selector("Edge") == f"{MANAGED_BY_LABEL}=gateway-agent,{GATEWAY_ID_LABEL}=Edge"


@pytest.mark.parametrize("gateway_id", ["Default", "us-east-1", "Prod Gateway", "ü" * 70])
def test_one_agents_resources_are_never_selected_by_another(gateway_id: str) -> None:
    other = gateway_id + "-2"
    api = api_labels("carbon.super", "u-1", "A", "1", "1", gateway_id)
    consumer = consumer_labels("application", "app-1", "carbon.super", gateway_id)
    assert matches(api_selector("carbon.super", "u-1", gateway_id), api)
    assert not matches(api_selector("carbon.super", "u-1", other), api)
    assert matches(consumer_selector(gateway_id=gateway_id), consumer)
    assert not matches(consumer_selector(gateway_id=other), consumer)
    assert field_manager(gateway_id) != field_manager(other)


def test_a_gateway_id_that_is_no_label_value_is_hashed_and_the_field_manager_fits() -> None:
    assert owner_labels("Prod Gateway")[GATEWAY_ID_LABEL] == sha1_hex("Prod Gateway")
    assert field_manager("Default") == "gateway-agent/Default"
    assert len(field_manager("x" * 300)) <= MAX_FIELD_MANAGER


def test_translation_options_take_the_first_gateway_label_as_the_id_like_the_settings() -> None:
    assert TranslationOptions(namespace="apis").gateway_id == "Default"
    assert TranslationOptions(namespace="apis", gateway_labels=["Edge", "Default"]).gateway_id == "Edge"
    assert TranslationOptions(namespace="apis", gateway_labels=["Edge"], gateway_id="eu").gateway_id == "eu"
    assert ConsumerOptions(application_namespace="a", tier_namespace="b").gateway_id == "Default"
