"""Tracing: OpenTelemetry, configured by the standard ``OTEL_*`` environment variables.

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). The exporter, its
protocol (``OTEL_EXPORTER_OTLP_PROTOCOL``: ``grpc``, the SDK's default, or ``http/protobuf``), the
resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), the sampler and the batching are
chosen by the OpenTelemetry SDK's own handling of those variables.

One trace per control-plane event: the listener's span around a message is the parent of the
Temporal client's signal-with-start (Temporal's ``TracingInterceptor``), whose context travels in
Temporal headers to the workflows, their activities, and the HTTP calls those make to the
Kubernetes API (urllib3) and the control plane (httpx). The event's identity (type, id, API or
consumer, organization) travels along as OpenTelemetry baggage in those Temporal headers and is
written onto every span below the listener's as ``gateway_agent.*`` attributes. Baggage is not
sent on the HTTP calls (the global propagator is W3C trace context only, unless
``OTEL_PROPAGATORS`` says otherwise).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import opentelemetry.context
import temporalio.client
import temporalio.converter
import temporalio.worker
import temporalio.workflow
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from temporalio.contrib.opentelemetry import TracingInterceptor

log = logging.getLogger(__name__)

SERVICE = "gateway-agent"
PREFIX = "gateway_agent."
EVENT_TYPE = PREFIX + "event.type"
EVENT_ID = PREFIX + "event.id"
EVENT_OUTCOME = PREFIX + "event.outcome"
API_ID = PREFIX + "api.id"
CONSUMER_KIND = PREFIX + "consumer.kind"
CONSUMER_KEY = PREFIX + "consumer.key"
ORGANIZATION = PREFIX + "organization"
# Where TracingInterceptor keeps the trace context in Temporal headers.
_TEMPORAL_HEADER = "_tracer-data"
# Event ids whose trace context an API's or consumer's workflow remembers (its newest events).
_CONTEXTS_KEPT = 256

# What TracingInterceptor writes into Temporal headers: W3C trace context and baggage.
_TEMPORAL_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])

_provider: TracerProvider | None = None


def trace_exporter_names() -> list[str]:
    """The span exporters the ``OTEL_*`` variables choose, as the SDK's entry-point names; [] is off.

    An OTLP endpoint without ``OTEL_TRACES_EXPORTER`` means OTLP (the SDK's default exporter); no
    endpoint and no exporter, ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true`` is off.
    """
    from opentelemetry.sdk._configuration import _get_exporter_entry_point, _get_exporter_names

    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip():
        return _get_exporter_names("traces")
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return [_get_exporter_entry_point("otlp", "traces")]
    return []


def trace_exporters() -> list[SpanExporter]:
    """The span exporters the ``OTEL_*`` variables choose, each configured by its own variables."""
    from opentelemetry.sdk._configuration import _import_exporters

    classes, _, _ = _import_exporters(trace_exporter_names(), [], [])
    return [cls() for cls in classes.values()]


def resource() -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``; the service is ``gateway-agent`` unless named."""
    found = Resource.create()
    if str(found.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        found = found.merge(Resource({SERVICE_NAME: SERVICE}))
    return found


class _EventAttributes(SpanProcessor):
    """Writes the event's ``gateway_agent.*`` baggage onto every span started below it."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for key, value in baggage.get_all(parent_context).items():
            if key.startswith(PREFIX):
                span.set_attribute(key, str(value))

    def on_end(self, span: ReadableSpan) -> None:
        pass


def setup_tracing(exporters: list[SpanExporter] | None = None) -> TracerProvider | None:
    """Install the tracer provider and the HTTP client instrumentation, once per process; None when off."""
    global _provider
    if _provider is not None:
        return _provider
    exporters = trace_exporters() if exporters is None else exporters
    if not exporters:
        return None
    provider = TracerProvider(resource=resource())
    provider.add_span_processor(_EventAttributes())
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if "OTEL_PROPAGATORS" not in os.environ:
        # Event ids and API ids stay in Temporal's headers; the API server and the control plane
        # get only the trace context.
        propagate.set_global_textmap(TraceContextTextMapPropagator())
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    URLLib3Instrumentor().instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    _provider = provider
    log.info("tracing to %s", ", ".join(type(e).__name__ for e in exporters))
    return provider


def enabled() -> bool:
    return _provider is not None


def shutdown() -> None:
    """Export what is buffered (the process is about to leave)."""
    if _provider is not None:
        _provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer("gateway-agent")


def temporal_interceptors() -> list[Any]:
    """Interceptors for ``Client.connect`` (and so for the workers built on it); none when tracing is off."""
    if _provider is None:
        return []
    return [TracingInterceptor(_provider.get_tracer("temporalio")), EventTraceInterceptor()]


@contextmanager
def receiving(message_id: str, destination: str) -> Iterator[trace.Span]:
    """The listener's span around one broker message."""
    with tracer().start_as_current_span(
        "receive event",
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "activemq",
            "messaging.operation.type": "process",
            "messaging.destination.name": destination,
            "messaging.message.id": message_id,
        },
    ) as span:
        yield span


@contextmanager
def event_context(attributes: Mapping[str, str]) -> Iterator[None]:
    """Put the event's identity on the current span and, as baggage, on everything started inside."""
    attributes = {k: v for k, v in attributes.items() if v}
    trace.get_current_span().set_attributes(attributes)
    if _provider is None:
        yield
        return
    context = opentelemetry.context.get_current()
    for key, value in attributes.items():
        context = baggage.set_baggage(key, value, context)
    token = opentelemetry.context.attach(context)
    try:
        yield
    finally:
        opentelemetry.context.detach(token)


# Temporal: each event's deployment in its event's trace


class EventTraceInterceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """Starts each event's deployment child workflow in the trace of the event's own signal.

    An API's (or consumer's) workflow lives for months; ``TracingInterceptor`` puts everything it
    starts in the trace of the event that started it. This remembers the trace context each
    ``submit_event`` signal arrived with and starts that event's deployment under it. Registered
    after ``TracingInterceptor``, so its outbound calls come first. Nothing here issues commands.
    """

    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[temporalio.worker.WorkflowInboundInterceptor]:
        return _EventTraceInbound


class _EventTraceInbound(temporalio.worker.WorkflowInboundInterceptor):
    def __init__(self, next: temporalio.worker.WorkflowInboundInterceptor) -> None:
        super().__init__(next)
        self.carriers: dict[str, Any] = {}

    def init(self, outbound: temporalio.worker.WorkflowOutboundInterceptor) -> None:
        super().init(_EventTraceOutbound(outbound, self))

    async def handle_signal(self, input: temporalio.worker.HandleSignalInput) -> None:
        if input.signal == "submit_event" and input.args and _TEMPORAL_HEADER in input.headers:
            event_id = getattr(input.args[0], "event_id", None)
            if event_id:
                payload = input.headers[_TEMPORAL_HEADER]
                self.carriers[event_id] = temporalio.converter.PayloadConverter.default.from_payloads([payload])[0]
                for old in list(self.carriers)[:-_CONTEXTS_KEPT]:
                    del self.carriers[old]
        await super().handle_signal(input)


class _EventTraceOutbound(temporalio.worker.WorkflowOutboundInterceptor):
    def __init__(self, next: temporalio.worker.WorkflowOutboundInterceptor, root: _EventTraceInbound) -> None:
        super().__init__(next)
        self._root = root

    async def start_child_workflow(
        self, input: temporalio.worker.StartChildWorkflowInput
    ) -> temporalio.workflow.ChildWorkflowHandle:
        event = getattr(input.args[0], "event", None) if input.args else None
        carrier = self._root.carriers.get(getattr(event, "event_id", None) or "")
        if not carrier:
            return await super().start_child_workflow(input)
        token = opentelemetry.context.attach(_TEMPORAL_PROPAGATOR.extract(carrier))
        try:
            return await super().start_child_workflow(input)
        finally:
            opentelemetry.context.detach(token)
