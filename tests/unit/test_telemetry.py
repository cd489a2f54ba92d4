"""The OTEL_* variables choose whether the agent traces, which exporter and protocol, and the resource."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from agent import telemetry
from agent.metrics import FAILURE_REASONS, failure_reason

ENDPOINT = "http://collector.example:4318"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
    ):
        monkeypatch.delenv(name, raising=False)


def exporters() -> list[object]:
    found = telemetry.trace_exporters()
    for exporter in found:
        exporter.shutdown()
    return found


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, [GrpcExporter]),  # the SDK's default protocol
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, [GrpcExporter]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, [HttpExporter]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, [GrpcExporter]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, [HttpExporter]),
        ({"OTEL_TRACES_EXPORTER": "console"}, [ConsoleSpanExporter]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, []),
    ],
)
def test_otel_variables_choose_the_exporter_and_its_protocol(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: list[type]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert [type(e) for e in exporters()] == expected


def test_the_http_exporter_sends_to_the_configured_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    [exporter] = exporters()
    assert exporter._endpoint == ENDPOINT + "/v1/traces"


def test_an_unknown_protocol_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    with pytest.raises(RuntimeError, match="carrier-pigeon"):
        telemetry.trace_exporters()


def test_the_resource_comes_from_the_environment_with_the_agents_name_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert telemetry.resource().attributes["service.name"] == "gateway-agent"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-agent-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,k8s.pod.name=agent-0")
    attributes = telemetry.resource().attributes
    assert attributes["service.name"] == "gateway-agent-eu"
    assert (attributes["deployment.environment"], attributes["k8s.pod.name"]) == ("prod", "agent-0")


@pytest.mark.parametrize(
    ("step", "code", "reason"),
    [
        ("fetch", "ControlPlaneUnavailable", "fetch"),
        ("fetch", "ControlPlaneAuth", "fetch"),
        ("translate", "BadArtifact", "translation"),
        ("translate", "Untranslatable", "translation"),
        ("snapshot", "ClusterUnavailable", "snapshot"),
        ("apply", "ClusterRejected", "apply_refused"),
        ("apply", "ClusterUnavailable", "apply"),
        ("prune", "ClusterUnavailable", "prune"),
        ("prune", "DeletionTimeout", "timeout"),
        ("remove", "ClusterRejected", "prune"),
        ("verify", "GatewayRejected", "not_accepted"),
        ("verify", "ReadinessTimeout", "timeout"),
        ("verify", "ApiGone", "readiness"),
        ("apply", "Cancelled", "cancelled"),
        ("deployment", "WorkflowTimeout", "other"),
    ],
)
def test_failure_reasons_are_a_small_fixed_set(step: str, code: str, reason: str) -> None:
    assert failure_reason(step, code) == reason
    assert reason in FAILURE_REASONS
