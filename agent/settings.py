"""The agent's one settings object, read from ``GATEWAY_AGENT_*`` environment variables."""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from agent.codec import EncryptionCodec

# Secret settings that may come from a file instead: the setting -> its ``*_file`` setting.
_SECRET_FILES = {
    "broker_password": "broker_password_file",
    "cp_password": "cp_password_file",
    "codec_keys": "codec_keys_file",
    "codec_server_token": "codec_server_token_file",
    "temporal_api_key": "temporal_api_key_file",
}


class Settings(BaseSettings):
    """Every knob of the agent. The README's configuration table documents each one."""

    # hide_input_in_errors: a validation error must not print the environment (passwords, keys).
    model_config = SettingsConfigDict(env_prefix="GATEWAY_AGENT_", extra="ignore", hide_input_in_errors=True)

    # Temporal. Address, namespace, TLS (mTLS) and API key also come from the SDK's environment
    # configuration (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*, the
    # TOML profile file); a GATEWAY_AGENT_TEMPORAL_* variable that is set wins (agent/temporal.py).
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    # The Temporal API key (else TEMPORAL_API_KEY or the profile's); from a file with the _FILE variant.
    temporal_api_key: SecretStr = SecretStr("")
    temporal_api_key_file: str = ""
    task_queue: str = "gateway-agent"

    # Encrypted workflow history (agent/codec.py): ``<id>:<base64 of 32 bytes>`` lines, the first
    # encrypts, all decrypt. From a mounted file, or the variable (lines or commas).
    codec_keys: SecretStr = SecretStr("")
    codec_keys_file: str = ""
    # Without codec keys the worker refuses to start unless this is true (demo, development).
    allow_plaintext_history: bool = False

    # gateway-agent codec-server: the Temporal UI's remote codec
    codec_server_host: str = "127.0.0.1"
    codec_server_port: int = 8888
    codec_server_token: SecretStr = SecretStr("")
    codec_server_token_file: str = ""
    codec_server_ui_origin: str = "http://localhost:8233"
    codec_server_oidc_jwks_url: str = ""
    codec_server_oidc_issuer: str = ""
    codec_server_oidc_audience: str = ""
    codec_server_max_body_bytes: int = 4 * 1024 * 1024

    # Broker (STOMP 1.2)
    broker_url: str = "stomp://127.0.0.1:61613"
    broker_username: str = ""
    broker_password: SecretStr = SecretStr("")
    broker_password_file: str = ""
    broker_topic: str = "/topic/notification"
    broker_client_id: str = "gateway-agent"
    broker_subscription_name: str = "gateway-agent"
    broker_ca_file: str = ""
    # stomp+ssl: verify the broker's certificate and host name (off: a WARNING at start).
    broker_verify_tls: bool = True
    dead_letter_destination: str = "/queue/gateway-agent.dead-letter"
    broker_reconnect_max_seconds: float = 30.0

    # Control plane
    cp_url: str = "https://localhost:9443/"
    cp_username: str = "admin"
    cp_password: SecretStr = SecretStr("admin")
    cp_password_file: str = ""
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
    # Workflows the worker keeps in memory between their tasks (the SDK's sticky cache). Every
    # API's workflow stays open between events: above this many, the least recently used are
    # evicted and replayed from history at their next event (short histories: cheap).
    workflow_cache_size: int = Field(default=500, ge=0)

    # Fernet key (urlsafe base64 of 32 bytes) that every worker shares. Secret names derive from it
    # (translation.secret_name_key), so keep it stable. Without codec keys it also seals Secret data
    # while it passes through workflow history; with the codec (which encrypts all of history) it
    # only unseals what was sealed before.
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

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Settings:
        """``*_FILE`` settings (mounted Secrets) win over the variable they stand for; the codec keys
        are checked here, so bad keys stop the process at start."""
        for field_name, file_field in _SECRET_FILES.items():
            path = getattr(self, file_field)
            if not path:
                continue
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"GATEWAY_AGENT_{file_field.upper()}: cannot read {path}: {exc.strerror}") from None
            value = text if field_name == "codec_keys" else text.strip()
            setattr(self, field_name, SecretStr(value))
        from agent.codec import parse_keys

        source = f"GATEWAY_AGENT_CODEC_KEYS_FILE ({self.codec_keys_file})" if self.codec_keys_file else None
        parse_keys(self.codec_keys.get_secret_value(), source or "GATEWAY_AGENT_CODEC_KEYS")
        return self

    def payload_codec(self) -> EncryptionCodec | None:
        """The codec of every Temporal client the agent builds; None without keys."""
        from agent.codec import codec_from_text

        return codec_from_text(self.codec_keys.get_secret_value())

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
