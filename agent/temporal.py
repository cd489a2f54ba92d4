"""Connecting to Temporal the one way the agent does it.

Where to connect and how comes from the Temporal SDK's environment configuration
(``temporalio.envconfig``: ``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``,
``TEMPORAL_TLS``, ``TEMPORAL_TLS_CLIENT_CERT_PATH``/``_KEY_PATH``, ``TEMPORAL_TLS_SERVER_CA_CERT_PATH``,
``TEMPORAL_TLS_SERVER_NAME``, the TOML profile file of ``TEMPORAL_CONFIG_FILE`` / ``TEMPORAL_PROFILE``),
with the agent's own ``GATEWAY_AGENT_TEMPORAL_ADDRESS``, ``_NAMESPACE`` and ``_API_KEY(_FILE)`` on top
when they are set. Every payload goes through the agent's codec when codec keys are configured.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfigProfile
from temporalio.runtime import Runtime

from agent import telemetry
from agent.settings import Settings


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads, encrypted by the codec when codec keys are configured."""
    codec = settings.payload_codec()
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)


def connect_options(settings: Settings) -> dict[str, Any]:
    """``Client.connect``'s target, namespace, TLS and API key: the SDK's environment configuration,
    then the agent's settings that were set explicitly (or the defaults, where neither says)."""
    config: dict[str, Any] = dict(ClientConfigProfile.load().to_client_connect_config())
    explicit = settings.model_fields_set
    if "temporal_address" in explicit or "target_host" not in config:
        config["target_host"] = settings.temporal_address
    if "temporal_namespace" in explicit or "namespace" not in config:
        config["namespace"] = settings.temporal_namespace
    api_key = settings.temporal_api_key.get_secret_value()
    if api_key:
        config["api_key"] = api_key
        config.setdefault("tls", True)
    return config


def describe(options: dict[str, Any]) -> str:
    """Where and how a client connects, for the log: no key, no certificate."""
    tls = options.get("tls")
    how = "mTLS" if getattr(tls, "client_cert", None) else "TLS" if tls else "plaintext"
    auth = ", API key" if options.get("api_key") else ""
    return f"{options['target_host']} namespace {options['namespace']} ({how}{auth})"


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client (and the workers built on it) with tracing when it is set up in this process, on
    ``runtime`` (the one serving the SDK's metrics) when given."""
    options = connect_options(settings)
    return await Client.connect(
        options.pop("target_host"),
        **options,
        data_converter=data_converter(settings),
        interceptors=telemetry.temporal_interceptors(),
        runtime=runtime,
    )
