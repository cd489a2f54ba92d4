"""The control plane's consumers: applications, their keys, subscriptions and subscription tiers.

Items of the internal data service's lists (``internal/data/v1/applications``, ...), parsed
leniently: field names differ across control-plane versions (``appId`` / ``applicationId``,
``subName`` / ``subscriber``), so each field accepts every spelling
``../shared/reference/applications-subscriptions.md`` names, and unknown fields are ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

# Subscription states in which the subscription passes traffic (PROD_ONLY_BLOCKED: sandbox only).
ACTIVE_SUBSCRIPTION_STATES = frozenset({"UNBLOCKED", "TIER_UPDATE_PENDING", "PROD_ONLY_BLOCKED"})
SUBSCRIPTION_STATES = frozenset(
    {"UNBLOCKED", "BLOCKED", "PROD_ONLY_BLOCKED", "ON_HOLD", "TIER_UPDATE_PENDING", "REJECTED"}
)
KEY_TYPES = ("PRODUCTION", "SANDBOX")


def _aliases(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any, info: Any) -> Any:
        # The control plane writes null for absent strings and lists; the defaults stand for them.
        if value is None:
            field = cls.model_fields[info.field_name]
            return field.get_default(call_default_factory=True)
        return value


class CpApplication(_Item):
    """An item of ``applications`` (or the fields of an ``APPLICATION_*`` event)."""

    uuid: str = Field(min_length=1, validation_alias=_aliases("uuid", "applicationUUID", "applicationUuid"))
    id: int | None = Field(default=None, validation_alias=_aliases("id", "applicationId", "appId"))
    name: str = Field(default="", validation_alias=_aliases("name", "applicationName"))
    owner: str = Field(default="", validation_alias=_aliases("subName", "subscriber", "owner"))
    policy: str = Field(default="", validation_alias=_aliases("policy", "applicationPolicy", "tier"))
    token_type: str = Field(default="", validation_alias=_aliases("tokenType", "token_type"))
    group_ids: list[str] = Field(default_factory=list, validation_alias=_aliases("groupIds", "groupId"))
    attributes: dict[str, str] = Field(default_factory=dict)
    organization: str = Field(default="", validation_alias=_aliases("organization", "tenantDomain"))

    @field_validator("group_ids", mode="before")
    @classmethod
    def _one_group_is_a_list(cls, value: Any) -> Any:
        # An event's groupId: the names joined with commas; a list's groupIds: [{groupId, applicationId}].
        if isinstance(value, str):
            return [part for part in (p.strip() for p in value.split(",")) if part]
        if isinstance(value, list):
            names = (g.get("groupId") if isinstance(g, dict) else g for g in value)
            return [text for text in (str(n).strip() for n in names if n is not None) if text]
        return value

    @field_validator("attributes", mode="before")
    @classmethod
    def _attribute_values_are_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        return value


class CpKeyMapping(_Item):
    """An item of ``application-key-mappings`` (or an ``APPLICATION_REGISTRATION_CREATE`` event)."""

    application_id: int | None = Field(default=None, validation_alias=_aliases("applicationId", "appId"))
    application_uuid: str = Field(default="", validation_alias=_aliases("applicationUUID", "applicationUuid"))
    consumer_key: str = Field(min_length=1, validation_alias=_aliases("consumerKey", "consumer_key"))
    key_type: str = Field(validation_alias=_aliases("keyType", "key_type"))
    key_manager: str = Field(default="", validation_alias=_aliases("keyManager", "keymanager", "key_manager"))

    @field_validator("key_type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class CpSubscription(_Item):
    """An item of ``subscriptions`` (or the fields of a ``SUBSCRIPTIONS_*`` event)."""

    uuid: str = Field(min_length=1, validation_alias=_aliases("subscriptionUUID", "subscriptionUuid", "uuid"))
    id: int | None = Field(default=None, validation_alias=_aliases("subscriptionId", "id"))
    # The tier's name (``Gold``), whatever the field's name suggests.
    policy: str = Field(default="", validation_alias=_aliases("policyId", "policy", "tier"))
    api_uuid: str = Field(default="", validation_alias=_aliases("apiUUID", "apiUuid"))
    api_id: int | None = Field(default=None, validation_alias=_aliases("apiId"))
    application_uuid: str = Field(default="", validation_alias=_aliases("applicationUUID", "applicationUuid"))
    application_id: int | None = Field(default=None, validation_alias=_aliases("appId", "applicationId"))
    state: str = Field(
        default="UNBLOCKED", validation_alias=_aliases("subscriptionState", "subscriptionStatus", "state")
    )
    api_name: str = Field(default="", validation_alias=_aliases("apiName"))
    api_version: str = Field(default="", validation_alias=_aliases("apiVersion"))
    api_organization: str = Field(default="", validation_alias=_aliases("apiOrganization"))
    application_organization: str = Field(default="", validation_alias=_aliases("applicationOrganization"))

    @field_validator("state", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) and value.strip() else "UNBLOCKED"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_SUBSCRIPTION_STATES


class RequestCountLimit(_Item):
    time_unit: str = Field(default="min", validation_alias=_aliases("timeUnit", "time_unit"))
    unit_time: int = Field(default=1, validation_alias=_aliases("unitTime", "unit_time"))
    request_count: int = Field(default=0, validation_alias=_aliases("requestCount", "request_count"))


class AiQuotaLimit(_Item):
    time_unit: str = Field(default="min", validation_alias=_aliases("timeUnit", "time_unit"))
    unit_time: int = Field(default=1, validation_alias=_aliases("unitTime", "unit_time"))
    request_count: int | None = Field(default=None, validation_alias=_aliases("requestCount", "request_count"))
    total_token_count: int | None = Field(default=None, validation_alias=_aliases("totalTokenCount"))
    prompt_token_count: int | None = Field(default=None, validation_alias=_aliases("promptTokenCount"))
    completion_token_count: int | None = Field(default=None, validation_alias=_aliases("completionTokenCount"))


class DefaultLimit(_Item):
    quota_type: str = Field(default="", validation_alias=_aliases("quotaType", "type"))
    request_count: RequestCountLimit | None = Field(default=None, validation_alias=_aliases("requestCount"))
    bandwidth: dict[str, Any] | None = None
    event_count: dict[str, Any] | None = Field(default=None, validation_alias=_aliases("eventCount"))
    ai_api_quota: AiQuotaLimit | None = Field(default=None, validation_alias=_aliases("aiApiQuota"))


class CpSubscriptionPolicy(_Item):
    """An item of ``subscription-policies``: a subscription tier and its quota."""

    name: str = Field(min_length=1, validation_alias=_aliases("name", "policyName"))
    organization: str = Field(default="", validation_alias=_aliases("tenantDomain", "organization"))
    quota_type: str = Field(default="", validation_alias=_aliases("quotaType"))
    # The burst limit: ``rateLimitCount`` requests per ``rateLimitTimeUnit`` (-1 / 0: none).
    rate_limit_count: int = Field(default=0, validation_alias=_aliases("rateLimitCount"))
    rate_limit_time_unit: str = Field(default="", validation_alias=_aliases("rateLimitTimeUnit"))
    stop_on_quota_reach: bool = Field(default=True, validation_alias=_aliases("stopOnQuotaReach"))
    graphql_max_depth: int = Field(default=0, validation_alias=_aliases("graphQLMaxDepth"))
    graphql_max_complexity: int = Field(default=0, validation_alias=_aliases("graphQLMaxComplexity"))
    default_limit: DefaultLimit | None = Field(default=None, validation_alias=_aliases("defaultLimit"))


ConsumerKind = Literal["application", "subscription", "tier"]


class ConsumerState(BaseModel):
    """Everything the control plane says about one organization's consumers."""

    organization: str
    applications: list[CpApplication] = Field(default_factory=list)
    key_mappings: list[CpKeyMapping] = Field(default_factory=list)
    subscriptions: list[CpSubscription] = Field(default_factory=list)
    subscription_policies: list[CpSubscriptionPolicy] = Field(default_factory=list)
