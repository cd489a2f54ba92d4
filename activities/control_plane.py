"""Activities that talk to the control plane: fetch the API's truth, report the outcome.

A failed or ambiguous answer is never read as "nothing is deployed": only an explicit
``204``, or a ``404`` whose error code is ``NO_API_ARTIFACT_FOUND`` (what other control-plane
versions answer), means that. Anything else is an error, retried when it may pass.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import http_failure, retry_after
from activities.sealing import Sealer
from agent.settings import Settings
from models.api_workflow import ApiRef, DeploymentReport, DesiredState, ReportResult
from translation import secret_name_key
from translation.artifacts import ArtifactError, parse_runtime_artifacts
from translation.translate import TranslationError, TranslationOptions, translate

log = logging.getLogger(__name__)

RUNTIME_ARTIFACTS = "internal/data/v1/runtime-artifacts"
NOTIFY_DEPLOYMENT_STATUS = "internal/data/v1/notify-api-deployment-status"
APPLICATIONS = "internal/data/v1/applications"
KEY_MAPPINGS = "internal/data/v1/application-key-mappings"
SUBSCRIPTIONS = "internal/data/v1/subscriptions"
SUBSCRIPTION_POLICIES = "internal/data/v1/subscription-policies"
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
NO_ARTIFACT_CODE = "NO_API_ARTIFACT_FOUND"


class ControlPlaneClient:
    """HTTP access to the control plane's internal data service (Basic auth, TLS verified)."""

    def __init__(self, settings: Settings) -> None:
        base = settings.cp_url if settings.cp_url.endswith("/") else settings.cp_url + "/"
        self._labels = settings.gateway_labels
        self._report_shape = settings.cp_report_shape
        self._http = httpx.Client(
            base_url=base,
            auth=(settings.cp_username, settings.cp_password.get_secret_value()),
            verify=settings.cp_tls_verification(),
            timeout=settings.cp_timeout_seconds,
        )

    def close(self) -> None:
        self._http.close()

    def runtime_artifacts(self, organization: str, api_uuid: str | None) -> bytes | None:
        """The ``apis.zip`` of one API (``None``: of every API) on the agent's labels, or ``None`` when
        the control plane says explicitly that nothing is deployed (``204``, or ``404`` with
        ``NO_API_ARTIFACT_FOUND``)."""
        label = base64.b64encode("|".join(self._labels).encode()).decode()
        params = {"type": "Envoy", "gatewayLabel": label}
        if api_uuid is not None:
            params["apiId"] = api_uuid
        with self._http.stream(
            "GET", RUNTIME_ARTIFACTS, params=params, headers={"x-wso2-tenant": organization}
        ) as response:
            if response.status_code == 204:
                return None
            if response.status_code == 404 and _error_code(response) == NO_ARTIFACT_CODE:
                return None
            _raise_for_status(response, f"fetching runtime artifacts of API {api_uuid}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > MAX_ARTIFACT_BYTES:
                    raise ApplicationError(
                        f"runtime artifacts of API {api_uuid} exceed {MAX_ARTIFACT_BYTES // 2**20} MiB",
                        type="BadArtifact",
                        non_retryable=True,
                    )
            return bytes(body)

    def list_items(self, path: str, organization: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """One of the internal data service's lists (``{count, list}``), for one organization.

        Both tenant headers go with every call: ``x-wso2-tenant`` selects the organization on the
        subscription, application and key-mapping lists, ``xWSO2Tenant`` on the policy lists.
        An answer that is not such a list is an error, never an empty list.
        """
        what = f"listing {path.rsplit('/', 1)[-1]} of {organization}"
        try:
            response = self._http.get(
                path, params=params, headers={"x-wso2-tenant": organization, "xWSO2Tenant": organization}
            )
        except httpx.HTTPError as exc:
            raise ApplicationError(f"{what}: {type(exc).__name__}: {exc}", type="ControlPlaneUnavailable") from exc
        _raise_for_status(response, what)
        try:
            body = response.json()
        except ValueError:
            body = None
        items = body.get("list") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise ApplicationError(
                f"{what}: the control plane's answer is not a {{count, list}} of objects: {response.text[:200]!r}",
                type="ControlPlaneUnparseable",
                non_retryable=True,
            )
        return items

    def notify_deployment_status(self, body: dict) -> int:
        """POST one report, as a single object or as ``{count, list}`` (``cp_report_shape``)."""
        payload = body if self._report_shape == "object" else {"count": 1, "list": [body]}
        response = self._http.post(NOTIFY_DEPLOYMENT_STATUS, json=payload)
        _raise_for_status(response, f"reporting {body['deploymentStatus']} for API {body['apiId']}")
        return response.status_code


def _error_code(response: httpx.Response) -> str:
    """The ``code`` of a control-plane error body (``{"code": ..., "message": ...}``), if any."""
    response.read()
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return ""
    return str(body.get("code") or "") if isinstance(body, dict) else ""


def _raise_for_status(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in (401, 403):
        response.read()
        raise ApplicationError(
            f"{what}: the control plane refused the agent's credentials ({status}); "
            "check GATEWAY_AGENT_CP_USERNAME / GATEWAY_AGENT_CP_PASSWORD",
            type="ControlPlaneAuth",
        )
    response.read()
    detail = response.text[:300]
    message = f"{what}: the control plane answered {status}: {detail}"
    raise http_failure(
        message,
        status,
        transient="ControlPlaneUnavailable",
        permanent="ControlPlaneRejected",
        delay=retry_after(response.headers),
    )


class ControlPlaneActivities:
    def __init__(self, cp: ControlPlaneClient, settings: Settings, sealer: Sealer) -> None:
        self._cp = cp
        self._settings = settings
        self._sealer = sealer
        self.options = TranslationOptions(
            namespace=settings.namespace,
            gateway_name=settings.gateway_name,
            gateway_namespace=settings.effective_gateway_namespace,
            gateway_listener=settings.gateway_listener,
            gateway_http_listener=settings.gateway_http_listener,
            gateway_labels=settings.gateway_labels,
            gateway_id=settings.effective_gateway_id,
            key_managers=settings.gateway_key_managers,
            # Secret names are keyed like every worker's that shares the sealing key.
            secret_name_key=secret_name_key(sealer.key),
        )

    @activity.defn
    def fetch_desired_state(self, api: ApiRef) -> DesiredState:
        """Fetch, parse and translate the API's deployed revision on the agent's gateway labels.

        One activity, so the artifact (which may be megabytes and holds endpoint credentials
        in clear text) never enters workflow history; only sealed resources leave it.
        """
        try:
            archive = self._cp.runtime_artifacts(api.organization, api.api_uuid)
        except httpx.HTTPError as exc:
            raise ApplicationError(
                f"fetching runtime artifacts of API {api.api_uuid}: {type(exc).__name__}: {exc}",
                type="ControlPlaneUnavailable",
            ) from exc
        if archive is None:
            return DesiredState(deployed=False)
        try:
            artifacts = parse_runtime_artifacts(archive)
        except ArtifactError as exc:
            raise ApplicationError(
                f"bad artifact for API {api.api_uuid}: {exc}", type="BadArtifact", non_retryable=True
            ) from exc

        candidates = [d for d in artifacts.apis if d.project.data.id == api.api_uuid]
        if not candidates:
            raise ApplicationError(
                f"the control plane answered 200 for API {api.api_uuid} but its apis.zip holds "
                f"{', '.join(f'{d.api_file} (API {d.project.data.id})' for d in artifacts.apis) or 'no API'}",
                type="BadArtifact",
                non_retryable=True,
            )
        deployed = max(candidates, key=lambda d: max((e.deployed_timestamp or 0 for e in d.environments), default=0))
        data = deployed.project.data
        if data.initiated_from_gateway:
            return DesiredState(
                deployed=False,
                revision_id=deployed.revision_id,
                api_name=data.name,
                api_version=data.version,
                skip_reason="the API was created on the gateway (initiatedFromGateway); deploying it back would loop",
            )
        try:
            translation = translate(deployed, self.options)
        except TranslationError as exc:
            raise ApplicationError(str(exc), type="Untranslatable", non_retryable=True) from exc
        for warning in translation.warnings:
            log.warning("API %s revision %s: %s", api.api_uuid, deployed.revision_id, warning)
        return DesiredState(
            deployed=True,
            revision_id=deployed.revision_id,
            api_name=data.name,
            api_version=data.version,
            resources=self._sealer.seal(translation.resources),
            warnings=translation.warnings,
            gateway_labels=sorted({e.name for e in deployed.environments if e.name in self._settings.gateway_labels}),
        )

    @activity.defn
    def report_deployment_status(self, report: DeploymentReport) -> ReportResult:
        body = {
            "gatewayId": self._settings.effective_gateway_id,
            "apiId": report.api_uuid,
            "tenantDomain": report.organization,
            "deploymentStatus": report.status,
            "action": report.action,
            "revisionId": report.revision_id,
            "timeStamp": int(time.time() * 1000),
            "errorCode": report.error_code,
            "errorMessage": report.error_message,
        }
        try:
            status = self._cp.notify_deployment_status(body)
        except httpx.HTTPError as exc:
            raise ApplicationError(
                f"reporting to the control plane: {type(exc).__name__}: {exc}", type="ControlPlaneUnavailable"
            ) from exc
        log.info("reported %s %s for API %s", report.action, report.status, report.api_uuid)
        return ReportResult(http_status=status)
