"""Prometheus metrics of the agent, served with the Temporal SDK's own on GATEWAY_AGENT_METRICS_PORT.

Two kinds, one endpoint:

- what the listener and the activities count, with ``prometheus_client`` (below);
- what only workflow code knows (a duplicate event, a deployment's outcome, a compensation, the
  time from the event to the gateway's acceptance), recorded through ``workflow.metric_meter()``:
  replay-safe (nothing is recorded while a worker replays a history; a workflow task that is
  retried after failing may record again). These, and the SDK's ``temporal_*`` metrics, are served
  by the SDK's runtime on an internal loopback port and merged into ``/metrics`` at each scrape.

Label values are bounded: event types are the control plane's known types (``unknown`` and
``malformed`` otherwise), kinds are resource kinds, reasons and outcomes are the fixed sets below.
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Iterable

from prometheus_client import REGISTRY, Counter, Gauge, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from temporalio import workflow
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

log = logging.getLogger(__name__)

# Counted by the listener and the activities.

EVENTS = Counter(
    "gateway_agent_events",
    "Broker messages handled by the listener, by event type and outcome "
    "(submitted, dead-lettered, unknown, ignored, other-gateway).",
    ["event_type", "outcome"],
)
LISTENER_CONNECTED = Gauge("gateway_agent_listener_connected", "1 while the listener holds its broker subscription.")
DRIFT_CORRECTIONS = Counter(
    "gateway_agent_drift_corrections",
    "Objects the agent wrote or deleted because the cluster differed from the control plane: by the full sync "
    "(source full_sync; action create, update, delete, or converge for an API handed to its workflow) and by a "
    "deployment's prune of what the API's new revision no longer has (source prune, action delete); by kind.",
    ["source", "kind", "action"],
)

# Recorded by workflow code (workflow.metric_meter()); served by the SDK's runtime.

WORKFLOW_EVENTS = "gateway_agent_workflow_events"
WORKFLOW_EVENTS_HELP = (
    "Events that reached their API's or consumer's workflow, by kind (api, application, subscription, tier), "
    "event type and outcome: queued, or duplicate (an event id seen before; no effect)."
)
DEPLOYMENTS = "gateway_agent_deployments"
DEPLOYMENTS_HELP = (
    "Finished deployments (one per event and attempt), by kind, outcome (succeeded, failed, skipped) and, when "
    "failed, reason: fetch, translation, snapshot, apply_refused, apply, prune, not_accepted, readiness, timeout, "
    "cancelled, other (none otherwise)."
)
COMPENSATIONS = "gateway_agent_compensations"
COMPENSATIONS_HELP = (
    "Rollbacks after a failed or cancelled deployment that had written to the cluster, by kind and outcome "
    "(restored, failed)."
)
EVENT_TO_ACCEPTED = "gateway_agent_event_to_accepted_seconds"
EVENT_TO_ACCEPTED_HELP = (
    "Seconds from a control-plane event's timestamp to the gateway accepting the API's configuration "
    "(first attempts of deployments that deploy), by event type."
)
EVENT_TO_ACCEPTED_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

FAILURE_REASONS = (
    "fetch",
    "translation",
    "snapshot",
    "apply_refused",
    "apply",
    "prune",
    "not_accepted",
    "readiness",
    "timeout",
    "cancelled",
    "other",
)
_TIMEOUT_CODES = frozenset({"ReadinessTimeout", "DeletionTimeout", "Timeout"})


def failure_reason(step: str, code: str) -> str:
    """The bounded reason of a failed deployment, from its failed step and its error type."""
    if code == "Cancelled":
        return "cancelled"
    if step == "translate" or code in ("BadArtifact", "Untranslatable"):
        return "translation"
    if code in _TIMEOUT_CODES:
        return "timeout"
    if code == "GatewayRejected":
        return "not_accepted"
    if step == "apply":
        return "apply_refused" if code == "ClusterRejected" else "apply"
    if step in ("prune", "remove"):
        return "prune"
    if step == "verify":
        return "readiness"
    if step in ("fetch", "snapshot"):
        return step
    return "other"


def workflow_event(kind: str, event_type: str, outcome: str) -> None:
    """In workflow code: an event reached its workflow (``queued``) or was seen before (``duplicate``)."""
    workflow.metric_meter().create_counter(WORKFLOW_EVENTS, WORKFLOW_EVENTS_HELP).add(
        1, {"kind": kind, "event_type": event_type, "outcome": outcome}
    )


def deployment(kind: str, outcome: str, reason: str = "none") -> None:
    """In workflow code: a deployment finished."""
    workflow.metric_meter().create_counter(DEPLOYMENTS, DEPLOYMENTS_HELP).add(
        1, {"kind": kind, "outcome": outcome, "reason": reason}
    )


def compensation(kind: str, outcome: str) -> None:
    """In workflow code: a rollback finished (``restored`` or ``failed``)."""
    workflow.metric_meter().create_counter(COMPENSATIONS, COMPENSATIONS_HELP).add(1, {"kind": kind, "outcome": outcome})


def event_to_accepted(event_type: str, timestamp_ms: int) -> None:
    """In workflow code, when the gateway has accepted: the time since the event (workflow time)."""
    seconds = max(0.0, workflow.now().timestamp() - timestamp_ms / 1000)
    workflow.metric_meter().create_histogram_float(EVENT_TO_ACCEPTED, EVENT_TO_ACCEPTED_HELP).record(
        seconds, {"event_type": event_type}
    )


# Serving


class _TemporalMetrics(Collector):
    """The SDK runtime's Prometheus output (``temporal_*`` and the workflow-recorded metrics), read at scrape."""

    def __init__(self, url: str) -> None:
        self._url = url

    def describe(self) -> Iterable[Metric]:
        return []  # names are not known before the first scrape

    def collect(self) -> Iterable[Metric]:
        try:
            with urllib.request.urlopen(self._url, timeout=2) as response:
                text = response.read().decode()
        except OSError as exc:
            log.debug("Temporal SDK metrics unavailable: %s", exc)
            return []
        return list(text_string_to_metric_families(text))


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def temporal_runtime(internal_port: int | None = None) -> tuple[Runtime, str]:
    """A Temporal runtime whose metrics are served in Prometheus form on loopback, and their URL."""
    port = internal_port or _free_loopback_port()
    config = PrometheusConfig(
        bind_address=f"127.0.0.1:{port}",
        counters_total_suffix=True,
        unit_suffix=True,
        durations_as_seconds=True,
        histogram_bucket_overrides={EVENT_TO_ACCEPTED: list(EVENT_TO_ACCEPTED_BUCKETS)},
    )
    return Runtime(telemetry=TelemetryConfig(metrics=config)), f"http://127.0.0.1:{port}/metrics"


def serve(port: int) -> Runtime | None:
    """Serve ``/metrics`` on ``port`` (all interfaces) with the SDK's metrics merged in; the runtime
    to connect Temporal clients with. ``0``: no metrics, the default runtime (None)."""
    if not port:
        return None
    runtime, url = temporal_runtime()
    REGISTRY.register(_TemporalMetrics(url))
    start_http_server(port)
    log.info("metrics on :%d/metrics", port)
    return runtime
