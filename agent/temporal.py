"""Connecting to Temporal the one way the agent does it."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from agent import telemetry
from agent.settings import Settings


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client (and the workers built on it) with tracing when it is set up in this process, on
    ``runtime`` (the one serving the SDK's metrics) when given."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        interceptors=telemetry.temporal_interceptors(),
        runtime=runtime,
    )
