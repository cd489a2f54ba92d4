"""The agent's one settings object, read from ``GATEWAY_AGENT_*`` environment variables."""

from __future__ import annotations

import ssl
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the agent. The README's configuration table documents each one."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_AGENT_", extra="ignore")

    # Temporal
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "gateway-agent"

    # Broker (STOMP 1.2)
    broker_url: str = "stomp://127.0.0.1:61613"
    broker_username: str = ""
    broker_password: SecretStr = SecretStr("")
    broker_topic: str = "/topic/notification"
    broker_client_id: str = "gateway-agent"
    broker_subscription_name: str = "gateway-agent"
    broker_ca_file: str = ""
    dead_letter_destination: str = "/queue/gateway-agent.dead-letter"
    broker_reconnect_max_seconds: float = 30.0

    # Control plane
    cp_url: str = "https://localhost:9443/"
    cp_username: str = "admin"
    cp_password: SecretStr = SecretStr("admin")
    cp_verify_tls: bool = True
    cp_ca_file: str = ""
    cp_timeout_seconds: float = 30.0
    # notify-api-deployment-status takes one report object in some control-plane versions and
    # ``{count, list}`` in others.
    cp_report_shape: Literal["object", "list"] = "object"

    # Gateway and cluster
    gateway_labels: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["Default"])
    gateway_id: str = ""
    namespace: str = "default"
    gateway_name: str = "wso2-apk-default"
    gateway_namespace: str = ""
    gateway_listener: str = "httpslistener"
    # The Gateway's plain-HTTP listener for APIs that allow http; empty: such APIs are served over HTTPS only.
    gateway_http_listener: str = ""
    # Key managers whose tokens the gateway accepts (its token issuers), comma-separated.
    gateway_key_managers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["Resident Key Manager"])
    readiness_timeout_seconds: float = 120.0
    # Where Applications, Subscriptions and ApplicationMappings go (the gateway's common-controller
    # watches it); empty: ``namespace``. Subscription tiers go to ``namespace``.
    application_namespace: str = ""
    # The organizations (tenant domains) whose consumers and APIs the full sync reads.
    organizations: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["carbon.super"])
    # Every call to the API server gives up after this long (a watch: its window plus this).
    kube_request_timeout_seconds: float = 30.0

    # Key that seals Kubernetes Secret data while it passes through workflow
    # history (Fernet, urlsafe base64 of 32 bytes). Every worker must share it.
    sealing_key: SecretStr = SecretStr("")

    # How long a failed step is retried before the workflow compensates.
    activity_max_attempts: int = 5
    activity_initial_retry_seconds: float = 1.0
    # A rollback (its readiness wait included) that takes longer is reported as failed.
    rollback_timeout_seconds: float = 180.0
    # Longest pause between attempts to deliver a report the control plane did not take.
    report_retry_max_seconds: float = 60.0

    # The full sync: at worker start and every this many seconds (0: never on a schedule).
    sync_interval_seconds: float = Field(default=300.0, ge=0)
    # A sync that would delete more than this share of what exists of a kind holds those deletions
    # back unless run with --allow-mass-delete.
    sync_max_delete_ratio: float = Field(default=0.5, ge=0, le=1)
    # ``apply`` converges the cluster; ``report`` only reports drift.
    sync_mode: Literal["apply", "report"] = "apply"

    # Prometheus /metrics (the agent's and the Temporal SDK's); 0: off.
    metrics_port: int = 0
    # /livez and /readyz; 0: off.
    health_port: int = 0
    log_level: str = "INFO"

    @field_validator("gateway_labels", "gateway_key_managers", "organizations", mode="before")
    @classmethod
    def _split_labels(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("gateway_labels")
    @classmethod
    def _labels_present(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one gateway label is required")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("stomp", "stomp+ssl") or not parts.hostname or not parts.port:
            raise ValueError("broker URL must look like stomp://host:port or stomp+ssl://host:port")
        return value

    @property
    def broker_host_and_port(self) -> tuple[str, int]:
        parts = urlsplit(self.broker_url)
        assert parts.hostname and parts.port
        return parts.hostname, parts.port

    @property
    def broker_uses_tls(self) -> bool:
        return urlsplit(self.broker_url).scheme == "stomp+ssl"

    def cp_tls_verification(self) -> bool | ssl.SSLContext:
        """httpx's ``verify``: off only when asked, against a private CA when one is given."""
        if not self.cp_verify_tls:
            return False
        if self.cp_ca_file:
            return ssl.create_default_context(cafile=self.cp_ca_file)
        return True

    @property
    def effective_gateway_id(self) -> str:
        return self.gateway_id or self.gateway_labels[0]

    @property
    def effective_gateway_namespace(self) -> str:
        return self.gateway_namespace or self.namespace

    @property
    def effective_application_namespace(self) -> str:
        return self.application_namespace or self.namespace


@lru_cache
def get_settings() -> Settings:
    return Settings()
