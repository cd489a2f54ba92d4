"""What the gateway will not enforce of a project reaches the operator: the deployment's result
and details, and the API's workflow status, carry the translation's warnings."""

from __future__ import annotations

from harness.control_plane import ControlPlaneSimulator
from models.api_workflow import ApiDeploymentResult
from tests.integration.conftest import RunningAgent
from tests.integration.helpers import settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report


async def test_a_setting_the_gateway_does_not_enforce_is_a_warning_of_the_deployment(
    agent: RunningAgent, control_plane: ControlPlaneSimulator
) -> None:
    assert not agent.settings.gateway_http_listener, "the test needs an agent without an HTTP listener"
    project = new_api(extra={"transport": ["http", "https"]})
    control_plane.deploy(project)
    [report] = await wait_report(control_plane, project.uuid, 1)
    assert report["deploymentStatus"] == "SUCCESS", report

    status = await settled_status(agent.client, ORG, project.uuid, processed=1)
    [warning] = status.warnings
    assert "allows plain HTTP" in warning and "GATEWAY_HTTP_LISTENER" in warning
    assert "1 warning(s)" in status.last_result
    assert status.last_deployment is not None
    child = agent.client.get_workflow_handle(status.last_deployment, result_type=ApiDeploymentResult)
    result = await child.result()
    assert result.warnings == [warning]

    # The next revision asks for HTTPS only: nothing is left unenforced, and the status says so.
    second = new_api(revision="2", uuid=project.uuid, extra={"transport": ["https"]})
    control_plane.deploy(second)
    await wait_report(control_plane, project.uuid, 2)
    status = await settled_status(agent.client, ORG, project.uuid, processed=2)
    assert status.warnings == [] and status.deployed_revision == "2"
