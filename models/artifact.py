"""What the control plane sends: the deployed API projects inside its ``apis.zip``.

The export format of WSO2 API Manager has many more fields than the agent uses; the models
ignore unknown fields but reject wrong types in the fields they declare. Python attributes are
snake_case, the wire names are camelCase (``endpointConfig`` keeps APIM's snake_case keys).
Endpoint credentials are ``SecretStr`` so they never show in reprs, logs or dumps.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel


class _CamelModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)


class _SnakeModel(BaseModel):
    """For ``endpointConfig``, whose keys APIM writes in snake_case."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


class Endpoint(_SnakeModel):
    url: str | None = None

    _blank_url = field_validator("url", mode="before")(_blank_to_none)


class EndpointSecurity(_CamelModel):
    """Credentials the gateway presents to the backend (not what clients present)."""

    enabled: bool = False
    type: str | None = None  # BASIC, DIGEST, OAUTH, apikey
    username: str | None = None
    password: SecretStr | None = None
    api_key_identifier: str | None = None
    api_key_value: SecretStr | None = None
    api_key_identifier_type: str | None = None  # HEADER or QUERY_PARAMETER
    client_id: str | None = None
    client_secret: SecretStr | None = None


class EndpointSecurityConfig(_SnakeModel):
    production: EndpointSecurity | None = None
    sandbox: EndpointSecurity | None = None


class EndpointConfig(_SnakeModel):
    endpoint_type: str = "http"
    # "prototyped" in older exports of a prototype (mocked) implementation.
    implementation_status: str | None = None
    production_endpoints: Endpoint | list[Endpoint] | None = None
    sandbox_endpoints: Endpoint | list[Endpoint] | None = None
    production_failovers: list[Endpoint] = Field(default_factory=list)
    sandbox_failovers: list[Endpoint] = Field(default_factory=list)
    endpoint_security: EndpointSecurityConfig | None = None

    @field_validator("production_failovers", "sandbox_failovers", mode="before")
    @classmethod
    def _failovers_to_list(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, dict) else value

    def failovers(self, endpoint_type: str) -> list[Endpoint]:
        """The failover endpoints of ``production`` or ``sandbox`` that carry a URL."""
        items = self.production_failovers if endpoint_type == "production" else self.sandbox_failovers
        return [e for e in items if e.url]

    def endpoints(self, endpoint_type: str) -> list[Endpoint]:
        """The endpoints of ``production`` or ``sandbox`` that carry a URL, in artifact order."""
        value = self.production_endpoints if endpoint_type == "production" else self.sandbox_endpoints
        items = value if isinstance(value, list) else [value] if value is not None else []
        return [e for e in items if e.url]

    def security(self, endpoint_type: str) -> EndpointSecurity | None:
        if self.endpoint_security is None:
            return None
        return self.endpoint_security.production if endpoint_type == "production" else self.endpoint_security.sandbox


class OperationPolicy(_CamelModel):
    policy_name: str
    policy_version: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("parameters", mode="before")
    @classmethod
    def _null_to_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class OperationPolicies(_CamelModel):
    request: list[OperationPolicy] = Field(default_factory=list)
    response: list[OperationPolicy] = Field(default_factory=list)
    fault: list[OperationPolicy] = Field(default_factory=list)

    @field_validator("request", "response", "fault", mode="before")
    @classmethod
    def _null_to_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class Operation(_CamelModel):
    target: str
    verb: str
    auth_type: str | None = None  # "None" means the operation is unsecured
    throttling_policy: str | None = None
    scopes: list[str] = Field(default_factory=list)
    operation_policies: OperationPolicies | None = None

    @property
    def is_unsecured(self) -> bool:
        return (self.auth_type or "").strip().lower() == "none"


class ScopeInfo(_CamelModel):
    name: str
    display_name: str | None = None
    description: str | None = None
    bindings: list[str] = Field(default_factory=list)


class ApiScope(_CamelModel):
    scope: ScopeInfo
    shared: bool = False


class CorsConfiguration(_CamelModel):
    cors_configuration_enabled: bool = False
    access_control_allow_origins: list[str] = Field(default_factory=list)
    access_control_allow_credentials: bool = False
    access_control_allow_headers: list[str] = Field(default_factory=list)
    access_control_allow_methods: list[str] = Field(default_factory=list)


class AdditionalProperty(_CamelModel):
    name: str
    value: str
    display: bool = False

    @field_validator("value", mode="before")
    @classmethod
    def _scalar_to_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value) if isinstance(value, int | float) else value


class MaxTps(_CamelModel):
    production: int | None = None
    sandbox: int | None = None
    production_time_unit: str | None = None
    sandbox_time_unit: str | None = None


class SubtypeConfiguration(_CamelModel):
    """What kind of REST API this is: ``DEFAULT``, ``AIAPI`` (an AI API in front of an LLM
    provider), or one of the MCP server subtypes."""

    subtype: str = "DEFAULT"
    # An object in the publisher's REST API; a JSON string (``_configuration``) in exports.
    configuration: dict[str, Any] | str | None = Field(
        default=None, validation_alias=AliasChoices("configuration", "_configuration")
    )

    def settings(self) -> dict[str, Any]:
        """The configuration as an object (``{}`` when absent or not a JSON object)."""
        value: Any = self.configuration
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return {}
        return value if isinstance(value, dict) else {}


class ApiData(_CamelModel):
    """The ``data`` object of ``api.json``/``api.yaml``."""

    id: str
    name: str
    version: str
    context: str
    provider: str | None = None
    type: str = "HTTP"
    is_default_version: bool = False
    life_cycle_status: str | None = None
    organization_id: str | None = None
    revision_id: str | None = None
    initiated_from_gateway: bool = False
    authorization_header: str | None = None
    api_key_header: str | None = None
    # None (absent) means APIM's default, OAuth2; an empty list means no security at all.
    security_scheme: list[str] | None = None
    cors_configuration: CorsConfiguration | None = None
    endpoint_config: EndpointConfig | None = None
    operations: list[Operation] = Field(default_factory=list)
    # API-level operation policies (APIM 4.2+), applied to every operation.
    api_policies: OperationPolicies | None = None
    scopes: list[ApiScope] = Field(default_factory=list)
    api_throttling_policy: str | None = None
    max_tps: MaxTps | None = None
    additional_properties: list[AdditionalProperty] = Field(default_factory=list)
    key_managers: list[str] = Field(default_factory=list)
    transport: list[str] = Field(default_factory=list)
    subtype_configuration: SubtypeConfiguration | None = None
    # ENDPOINT for a real backend; INLINE (a prototype with a script) or MOCKED_OAS (mocked from the definition).
    endpoint_implementation_type: str | None = None

    @field_validator("revision_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("additional_properties", mode="before")
    @classmethod
    def _properties_map_to_list(cls, value: Any) -> Any:
        # Older exports write ``{"name": "value"}`` instead of a list of objects.
        if isinstance(value, dict):
            return [{"name": k, "value": v} for k, v in value.items()]
        return [] if value is None else value

    @field_validator("transport", mode="before")
    @classmethod
    def _transport_text_to_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return [] if value is None else value

    @field_validator("operations", "scopes", "key_managers", mode="before")
    @classmethod
    def _null_to_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class CertificateBinding(_CamelModel):
    """One entry of ``client_certificates.json`` or ``endpoint_certificates.json``."""

    alias: str
    certificate: str | None = None  # the file name under the certificates folder
    endpoint: str | None = None  # endpoint certificates: the endpoint URL the certificate is for
    tier_name: str | None = None  # client certificates: the subscription tier of the certificate
    key_type: str | None = None  # client certificates: PRODUCTION or SANDBOX (absent: both)


class PolicySpecification(_CamelModel):
    """The ``data`` of an operation policy the project ships in its ``Policies/`` folder."""

    name: str
    version: str | None = None
    display_name: str | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class FieldComplexity(_CamelModel):
    """One entry of ``Definitions/graphql-complexity.json``: a field's query-complexity value."""

    type: str
    field: str
    complexity_value: int


class ApiProject(BaseModel):
    """One API project as exported by the control plane: its ``api.json`` plus files beside it."""

    model_config = ConfigDict(extra="forbid")

    data: ApiData
    definition: str | None = None
    definition_file: str | None = None  # e.g. "Definitions/swagger.json", relative to the project root
    client_certificates: dict[str, str] = Field(default_factory=dict)  # file name -> PEM
    endpoint_certificates: dict[str, str] = Field(default_factory=dict)
    # What client_certificates.json and endpoint_certificates.json say about those files.
    client_certificate_bindings: list[CertificateBinding] = Field(default_factory=list)
    endpoint_certificate_bindings: list[CertificateBinding] = Field(default_factory=list)
    # Custom operation policies in the project's Policies/ folder, by file name.
    custom_policies: dict[str, PolicySpecification] = Field(default_factory=dict)
    # GraphQL: per-field query-complexity values (Definitions/graphql-complexity.json).
    graphql_complexity: list[FieldComplexity] = Field(default_factory=list)


class DeploymentEnvironment(_CamelModel):
    name: str
    vhost: str | None = None
    # APIM spells it deployedTimeStamp; accept the regular camelCase too.
    deployed_timestamp: int | None = Field(
        default=None,
        validation_alias=AliasChoices("deployedTimeStamp", "deployedTimestamp", "deployed_timestamp"),
        serialization_alias="deployedTimeStamp",
    )
    deployment_type: str | None = None


class DeployedApi(BaseModel):
    """One revision of one API, deployed to the listed gateway environments."""

    model_config = ConfigDict(extra="forbid")

    project: ApiProject
    api_file: str
    revision_id: str
    organization: str
    environments: list[DeploymentEnvironment] = Field(default_factory=list)
    # The archive's env_properties.json: per-environment overrides the control plane sent with it.
    env_properties: dict[str, Any] = Field(default_factory=dict)


class RuntimeArtifacts(BaseModel):
    """The parsed ``apis.zip``: every deployed API, and the optional per-environment overrides."""

    model_config = ConfigDict(extra="forbid")

    apis: list[DeployedApi] = Field(default_factory=list)
    env_properties: dict[str, Any] = Field(default_factory=dict)
