import pytest
from pydantic import ValidationError

from agent.settings import Settings


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AGENT_GATEWAY_LABELS", "Default, Internal ,")
    monkeypatch.setenv("GATEWAY_AGENT_BROKER_URL", "stomp+ssl://mq.example:61614")
    monkeypatch.setenv("GATEWAY_AGENT_CP_VERIFY_TLS", "false")
    s = Settings()
    assert s.temporal_address == "localhost:7233"
    assert s.broker_topic == "/topic/notification"
    assert s.gateway_labels == ["Default", "Internal"]
    assert s.broker_host_and_port == ("mq.example", 61614) and s.broker_uses_tls
    assert s.cp_verify_tls is False
    assert s.effective_gateway_namespace == s.namespace
    assert s.gateway_key_managers == ["Resident Key Manager"] and s.gateway_http_listener == ""


def test_key_managers_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AGENT_GATEWAY_KEY_MANAGERS", "Resident Key Manager, Okta")
    assert Settings().gateway_key_managers == ["Resident Key Manager", "Okta"]


def test_passwords_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AGENT_CP_PASSWORD", "hunter2")
    monkeypatch.setenv("GATEWAY_AGENT_BROKER_PASSWORD", "hunter3")
    s = Settings()
    assert "hunter2" not in repr(s) and "hunter3" not in str(s.model_dump())
    assert s.cp_password.get_secret_value() == "hunter2"


@pytest.mark.parametrize("url", ["tcp://h:1", "stomp://h", "h:61613"])
def test_bad_broker_url_is_rejected(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("GATEWAY_AGENT_BROKER_URL", url)
    with pytest.raises(ValidationError, match="stomp://host:port"):
        Settings()


def test_empty_labels_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AGENT_GATEWAY_LABELS", " , ")
    with pytest.raises(ValidationError, match="gateway label"):
        Settings()


def test_control_plane_tls_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    import certifi

    assert Settings().cp_tls_verification() is True
    monkeypatch.setenv("GATEWAY_AGENT_CP_CA_FILE", certifi.where())
    context = Settings().cp_tls_verification()
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    monkeypatch.setenv("GATEWAY_AGENT_CP_VERIFY_TLS", "false")
    assert Settings().cp_tls_verification() is False
