"""Prometheus metrics of the agent (served on GATEWAY_AGENT_METRICS_PORT when set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS = Counter(
    "gateway_agent_events",
    "Broker messages handled by the listener, by event type and outcome "
    "(submitted, dead-lettered, unknown, ignored, other-gateway).",
    ["event_type", "outcome"],
)
LISTENER_CONNECTED = Gauge("gateway_agent_listener_connected", "1 while the listener holds its broker subscription.")
