"""A control-plane event on the real broker flows to an accepted gateway configuration."""

from __future__ import annotations

import uuid

from harness.api_projects import rest_api_project
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from tests.integration.conftest import RunningAgent
from tests.integration.helpers import api_resources, eventually, reports_for, settled_status

ORG = "carbon.super"


def new_api(revision: str = "1", **overrides) -> object:
    fields = {
        "uuid": overrides.pop("uuid", str(uuid.uuid4())),
        "name": "PizzaShackAPI",
        "version": "1.0.0",
        "context": "/pizzashack",
        "revision_id": revision,
    }
    fields.update(overrides)
    return rest_api_project(**fields)


async def wait_report(cp: ControlPlaneSimulator, api_uuid: str, count: int, timeout: float = 30.0) -> list[dict]:
    return await eventually(
        lambda: (r := reports_for(cp.deployment_reports, api_uuid)) and len(r) >= count and r,
        timeout=timeout,
        what=f"{count} deployment report(s) for {api_uuid}",
    )


async def test_deploy_event_becomes_accepted_resources_and_a_success_report(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    project = new_api(sandbox_url="http://sandbox.backend.example:8080/api")
    control_plane.deploy(project, labels=["Default"])

    [report] = await wait_report(control_plane, project.uuid, 1)
    assert report["deploymentStatus"] == "SUCCESS", report
    assert (report["action"], report["revisionId"], report["tenantDomain"]) == ("DEPLOY", "1", ORG)

    ns = agent.settings.namespace
    resources = api_resources(kube, ns, ORG, project.uuid)
    kinds = sorted(rid.split("/")[0] for rid in resources)
    for kind in ("API", "Backend", "ConfigMap", "HTTPRoute"):
        assert kind in kinds, kinds
    assert kinds.count("HTTPRoute") == 2  # production and sandbox
    [api] = [kube.get_object("API", ns, rid.split("/", 1)[1]) for rid in resources if rid.startswith("API/")]
    assert api["status"]["deploymentStatus"]["accepted"] is True
    assert api["spec"]["basePath"] == "/pizzashack/1.0.0"

    status = await settled_status(agent.client, ORG, project.uuid, processed=1)
    assert (status.phase, status.deployed, status.deployed_revision, status.last_error) == ("idle", True, "1", None)


async def test_new_revision_updates_in_place_and_prunes_what_it_no_longer_has(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    ns = agent.settings.namespace
    first = new_api(sandbox_url="http://sandbox.backend.example:8080/api")
    control_plane.deploy(first)
    await wait_report(control_plane, first.uuid, 1)
    before = api_resources(kube, ns, ORG, first.uuid)

    second = new_api(revision="2", uuid=first.uuid, production_url="http://v2.backend.example:9090/api")
    control_plane.deploy(second)
    reports = await wait_report(control_plane, first.uuid, 2)
    assert reports[-1]["deploymentStatus"] == "SUCCESS" and reports[-1]["revisionId"] == "2"

    after = api_resources(kube, ns, ORG, first.uuid)
    routes_before = {rid for rid in before if rid.startswith("HTTPRoute/")}
    routes_after = {rid for rid in after if rid.startswith("HTTPRoute/")}
    assert len(routes_before) == 2 and len(routes_after) == 1 and routes_after < routes_before
    api_name = next(rid for rid in after if rid.startswith("API/"))
    assert api_name in before  # same name: updated in place
    assert all(r["labels"]["gateway-agent.wso2.com/revision"] == "2" for r in after.values())
    backends = [r for rid, r in after.items() if rid.startswith("Backend/")]
    assert [b["spec"]["services"][0]["host"] for b in backends] == ["v2.backend.example"]


async def test_the_same_event_twice_has_no_second_effect(
    agent: RunningAgent, control_plane: ControlPlaneSimulator
) -> None:
    project = new_api()
    event_id = control_plane.deploy(project)
    await wait_report(control_plane, project.uuid, 1)
    fields = control_plane.api_event_fields(project.uuid, "DEPLOY_API_IN_GATEWAY")
    control_plane.publish("DEPLOY_API_IN_GATEWAY", fields, event_id=event_id)
    # A later, distinct event proves the duplicate was seen (and dropped) before it.
    control_plane.publish("API_UPDATE", control_plane.api_event_fields(project.uuid, "API_UPDATE"))

    status = await settled_status(agent.client, ORG, project.uuid, processed=2)
    assert status.events_processed == 2
    reports = reports_for(control_plane.deployment_reports, project.uuid)
    assert len(reports) == 2 and all(r["deploymentStatus"] == "SUCCESS" for r in reports)


async def test_a_stale_remove_after_a_deploy_removes_nothing(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    project = new_api()
    control_plane.deploy(project)
    await wait_report(control_plane, project.uuid, 1)
    before = api_resources(kube, agent.settings.namespace, ORG, project.uuid)

    # The control plane still has the API deployed: this REMOVE is stale.
    control_plane.publish(
        "REMOVE_API_FROM_GATEWAY", control_plane.api_event_fields(project.uuid, "REMOVE_API_FROM_GATEWAY")
    )
    status = await settled_status(agent.client, ORG, project.uuid, processed=2)

    assert status.phase == "idle" and status.deployed
    assert api_resources(kube, agent.settings.namespace, ORG, project.uuid) == before


async def test_a_confirmed_remove_deletes_every_resource(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    project = new_api(sandbox_url="http://sandbox.backend.example:8080/api")
    control_plane.deploy(project)
    await wait_report(control_plane, project.uuid, 1)

    control_plane.undeploy(project.uuid)
    reports = await wait_report(control_plane, project.uuid, 2)
    assert (reports[-1]["action"], reports[-1]["deploymentStatus"]) == ("UNDEPLOY", "SUCCESS")
    assert api_resources(kube, agent.settings.namespace, ORG, project.uuid) == {}


async def test_retiring_or_deleting_an_api_removes_it_whatever_the_artifacts_say(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    retired, deleted = new_api(), new_api(name="Other", context="/other")
    for project in (retired, deleted):
        control_plane.deploy(project)
        await wait_report(control_plane, project.uuid, 1)

    fields = control_plane.api_event_fields(retired.uuid, "API_LIFECYCLE_CHANGE")
    control_plane.publish("API_LIFECYCLE_CHANGE", {**fields, "apiStatus": "RETIRED"})
    control_plane.publish("API_DELETE", control_plane.api_event_fields(deleted.uuid, "API_DELETE"))

    for project in (retired, deleted):
        reports = await wait_report(control_plane, project.uuid, 2)
        assert (reports[-1]["action"], reports[-1]["deploymentStatus"]) == ("UNDEPLOY", "SUCCESS")
        assert api_resources(kube, agent.settings.namespace, ORG, project.uuid) == {}


async def test_lifecycle_and_update_events_converge_to_the_control_planes_answer(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    # Deployed in the control plane, but its DEPLOY event never reached us.
    project = new_api()
    control_plane.deploy(project, publish=False)
    fields = control_plane.api_event_fields(project.uuid, "API_LIFECYCLE_CHANGE")
    control_plane.publish("API_LIFECYCLE_CHANGE", {**fields, "apiStatus": "PUBLISHED"})

    [report] = await wait_report(control_plane, project.uuid, 1)
    assert report["deploymentStatus"] == "SUCCESS"
    assert api_resources(kube, agent.settings.namespace, ORG, project.uuid)

    # Not deployed on our labels: an API_CREATE changes nothing and reports nothing.
    other = new_api(name="NotHere", context="/nothere")
    control_plane.deploy(other, labels=["Internal"], publish=False)
    control_plane.publish("API_CREATE", control_plane.api_event_fields(other.uuid, "API_CREATE"))
    status = await settled_status(agent.client, ORG, other.uuid, processed=1)
    assert status.phase == "idle" and not status.deployed
    assert reports_for(control_plane.deployment_reports, other.uuid) == []
    assert api_resources(kube, agent.settings.namespace, ORG, other.uuid) == {}


async def test_events_of_one_api_are_applied_in_arrival_order(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    project = new_api()
    control_plane.deploy(project)
    # Sent right behind the deploy: a DELETE processed first would be undone by the DEPLOY.
    control_plane.publish("API_DELETE", control_plane.api_event_fields(project.uuid, "API_DELETE"))

    status = await settled_status(agent.client, ORG, project.uuid, processed=2)
    assert not status.deployed
    reports = reports_for(control_plane.deployment_reports, project.uuid)
    assert [r["action"] for r in reports] == ["DEPLOY", "UNDEPLOY"]
    assert api_resources(kube, agent.settings.namespace, ORG, project.uuid) == {}


async def test_a_redeploy_announced_as_remove_then_deploy_never_takes_the_api_down(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    first = new_api()
    control_plane.deploy(first)
    await wait_report(control_plane, first.uuid, 1)

    # The real control plane sends REMOVE for the old revision and DEPLOY for the new one.
    second = new_api(revision="2", uuid=first.uuid, production_url="http://v2.backend.example:9090/api")
    control_plane.deploy(second, announce_removal=True)
    status = await settled_status(agent.client, ORG, first.uuid, processed=3)

    assert (status.phase, status.deployed_revision) == ("idle", "2")
    reports = reports_for(control_plane.deployment_reports, first.uuid)
    assert [(r["action"], r["deploymentStatus"], r["revisionId"]) for r in reports[1:]] == [
        ("DEPLOY", "SUCCESS", "2"),
        ("DEPLOY", "SUCCESS", "2"),
    ]
    # The API was updated in place (server-side apply), never deleted in between.
    api_path = f"/namespaces/{agent.settings.namespace}/apis/"
    assert not [path for method, path in kube.request_log if method == "DELETE" and api_path in path]
    assert [path for method, path in kube.request_log if method == "PATCH" and api_path in path]
