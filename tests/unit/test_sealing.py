import json

import pytest
from cryptography.fernet import Fernet
from temporalio.exceptions import ApplicationError

from activities.sealing import SEALED_FIELD, Sealer

SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "backend-creds"},
    "data": {"username": "YWRtaW4=", "password": "czNjcjN0"},
}
CONFIG = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}


def test_sealed_secret_data_is_unreadable_and_round_trips() -> None:
    sealer = Sealer(Fernet.generate_key().decode())
    sealed = sealer.seal([SECRET, CONFIG])
    text = json.dumps(sealed)
    assert "czNjcjN0" not in text and "YWRtaW4=" not in text
    assert "data" not in sealed[0] and SEALED_FIELD in sealed[0]
    assert sealed[1] == CONFIG
    assert sealer.unseal(sealed) == [SECRET, CONFIG]


def test_a_different_key_is_a_clear_non_retryable_error() -> None:
    sealed = Sealer(Fernet.generate_key().decode()).seal([SECRET])
    with pytest.raises(ApplicationError, match="GATEWAY_AGENT_SEALING_KEY") as info:
        Sealer(Fernet.generate_key().decode()).unseal(sealed)
    assert info.value.non_retryable


def test_a_malformed_key_is_rejected_at_start() -> None:
    with pytest.raises(ValueError, match="Fernet key"):
        Sealer("not-a-key")
