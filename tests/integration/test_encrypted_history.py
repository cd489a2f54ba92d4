"""Encrypted workflow history against the real dev server: an agent with the codec deploys an API with
endpoint credentials and an application with a consumer key; a client without the codec finds none
of it in the raw histories and only encrypted payloads; a client with the codec (also after the key
was rotated) reads them; an agent process with distinctive credentials never logs them."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from google.protobuf.message import Message
from kubernetes import client as k8s_client
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from agent.codec import ENCODING, KEY_ID_META, generate_key_line
from agent.settings import Settings
from agent.temporal import connect
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from models.api_workflow import api_workflow_id
from tests.integration.agent_process import agent_process
from tests.integration.conftest import RunningAgent, running_agent
from tests.integration.helpers import eventually
from tests.integration.test_api_deployment import ORG, new_api, wait_report

PASSWORD = "enc-P@ss-9b3e71d2"
USERNAME = "enc-backend-user-5521"
CONSUMER_KEY = "encConsumerKey4417"
DEFINITION_MARK = "pizza-definition-mark-60c1"  # a path of the API's definition, hence of its HTTPRoute

KEY_A = generate_key_line("A")
KEY_B = generate_key_line("B")


def with_keys(settings: Settings, keys: str) -> Settings:
    return settings.model_copy(update={"codec_keys": SecretStr(keys)})


@pytest.fixture
async def codec_agent(settings: Settings, kube_api_client: k8s_client.ApiClient) -> AsyncIterator[RunningAgent]:
    """The agent with the codec on: its client is built by agent.temporal.connect, as the commands do."""
    encrypted = with_keys(settings, KEY_A)
    client = await connect(encrypted)
    async with running_agent(encrypted, client, kube_api_client) as running:
        yield running


def payloads_of(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload inside ``message`` with the path of fields to it."""
    for descriptor, value in message.ListFields():
        name = f"{path}.{descriptor.name}"
        if descriptor.message_type is None:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            items = [(f"{name}[{k}]", v) for k, v in value.items() if isinstance(v, Message)]
        elif isinstance(value, Message):
            items = [(name, value)]
        else:  # a repeated field
            items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
        for item_path, item in items:
            if isinstance(item, Payload):
                yield item_path, item
            else:
                yield from payloads_of(item, item_path)


# What the SDK never passes through the payload codec: search attributes (the server indexes them),
# headers (trace context: ids, no credentials), and the SDK core's own marker fields, a patch's id
# (``patch-data``) and a local activity's bookkeeping (``data``: its id, type, attempt and times; its
# result is ``details[result]``, which is encrypted).
NOT_CODEC = (".search_attributes.", ".header.", ".details[patch-data]", ".details[data]")


async def raw_histories(raw: Client, workflow_ids: list[str]) -> list[tuple[str, Message]]:
    events = []
    for workflow_id in workflow_ids:
        history = await raw.get_workflow_handle(workflow_id).fetch_history()
        events += [(workflow_id, event) for event in history.events]
    return events


async def test_history_is_encrypted_and_decodes_with_the_codec_and_after_rotation(
    codec_agent: RunningAgent,
    temporal_client: Client,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
) -> None:
    ns = codec_agent.settings.namespace
    project = new_api(
        endpoint_security={"production": {"type": "BASIC", "username": USERNAME, "password": PASSWORD}},
        operations=[{"target": f"/{DEFINITION_MARK}", "verb": "GET"}, {"target": "/items", "verb": "POST"}],
    )
    assert any(DEFINITION_MARK.encode() in content for content in project.files.values())
    control_plane.deploy(project)
    [report] = await wait_report(control_plane, project.uuid, 1)
    assert report["deploymentStatus"] == "SUCCESS", report
    secrets = kube.objects("Secret", namespace=ns)
    assert PASSWORD in [base64.b64decode(v).decode() for s in secrets for v in s.get("data", {}).values()]

    app = control_plane.create_application("EncryptedApp", owner="alice")
    control_plane.add_key(app["uuid"], key_type="PRODUCTION", consumer_key=CONSUMER_KEY)
    await eventually(
        lambda: CONSUMER_KEY in str(kube.get_object("Application", ns, app["uuid"]) or ""),
        what="the Application with its consumer key",
    )

    # Every workflow of the test: the API's, its deployments, the application's and its deployments.
    query = f"TaskQueue = '{codec_agent.settings.task_queue}'"
    ids = [w.id async for w in temporal_client.list_workflows(query)]
    assert api_workflow_id(ORG, project.uuid) in ids
    assert any(i.startswith(f"deploy:{ORG}:{project.uuid}") for i in ids), ids
    assert any(i.startswith("application:") for i in ids) and any(i.startswith("application-deploy:") for i in ids)

    # A client without the codec: the raw bytes hold none of it, and every payload is encrypted.
    raw = await Client.connect(
        temporal_client.service_client.config.target_host,
        namespace=temporal_client.namespace,
        data_converter=pydantic_data_converter,
    )
    events = await raw_histories(raw, ids)
    stored = b"".join(event.SerializeToString() for _, event in events)
    for needle in (PASSWORD, USERNAME, CONSUMER_KEY, DEFINITION_MARK, base64.b64encode(PASSWORD.encode()).decode()):
        assert needle.encode() not in stored, needle
    assert b"sealedData" not in stored  # with the codec nothing is sealed any more: no need
    payloads = [(f"{wid}{path}", p) for wid, event in events for path, p in payloads_of(event)]
    encrypted = [(where, p) for where, p in payloads if not any(part in where for part in NOT_CODEC)]
    assert len(encrypted) > 20
    plain = [where for where, p in encrypted if p.metadata.get("encoding") != ENCODING]
    assert not plain, plain
    assert {p.metadata[KEY_ID_META] for _, p in encrypted} == {b"A"}

    # A client with the codec reads the histories (the API workflow's result-bearing events decode).
    readable = await connect(codec_agent.settings)
    deployment_id = next(i for i in ids if i.startswith(f"deploy:{ORG}:{project.uuid}"))
    result = await readable.get_workflow_handle(deployment_id).result()
    assert result is not None
    # After rotating to B,A the old history still decodes; new payloads are under B.
    rotated = await connect(with_keys(codec_agent.settings, f"{KEY_B}\n{KEY_A}"))
    assert await rotated.get_workflow_handle(deployment_id).result() == result
    status = await rotated.get_workflow_handle(api_workflow_id(ORG, project.uuid)).query("status")
    assert status is not None
    only_b = await connect(with_keys(codec_agent.settings, KEY_B))
    with pytest.raises(Exception, match="codec key 'A'"):
        await only_b.get_workflow_handle(deployment_id).result()
    codec = rotated.data_converter.payload_codec
    assert codec is not None
    [under_b] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"1")])
    assert under_b.metadata[KEY_ID_META] == b"B"


async def test_a_worker_without_codec_keys_refuses_to_start(
    settings: Settings, kube: KubeEmulator, tmp_path: Path
) -> None:
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    log = tmp_path / "agent.log"
    async with agent_process(
        settings, kubeconfig, log, command="worker", ready=False, env={"GATEWAY_AGENT_ALLOW_PLAINTEXT_HISTORY": "false"}
    ) as agent:
        code = await asyncio.to_thread(agent.process.wait, 30)
    text = log.read_text()
    assert code == 2, text
    assert "gateway-agent codec-key" in text and "GATEWAY_AGENT_ALLOW_PLAINTEXT_HISTORY=true" in text


async def test_an_agent_process_never_logs_its_credentials(
    settings: Settings,
    kube: KubeEmulator,
    control_plane: ControlPlaneSimulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cp_password = "cp-Pw-distinct-81f0aa"
    control_plane.password = cp_password
    (tmp_path / "cp-password").write_text(cp_password + "\n")
    keys_file = tmp_path / "codec-keys"
    keys_file.write_text(f"{KEY_B}\n{KEY_A}\n")
    secrets = {
        cp_password,
        "broker-Pw-distinct-2c9d1e",
        KEY_A.partition(":")[2],
        KEY_B.partition(":")[2],
        "sealing-unused",
        PASSWORD,
        base64.b64encode(PASSWORD.encode()).decode(),
    }
    agent_settings = settings.model_copy(
        update={
            "cp_password": SecretStr(""),
            "broker_password": SecretStr("broker-Pw-distinct-2c9d1e"),
        }
    )
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    log = tmp_path / "agent.log"
    env = {
        "GATEWAY_AGENT_CP_PASSWORD_FILE": str(tmp_path / "cp-password"),
        "GATEWAY_AGENT_CODEC_KEYS_FILE": str(keys_file),
        "GATEWAY_AGENT_ALLOW_PLAINTEXT_HISTORY": "false",
        "GATEWAY_AGENT_LOG_LEVEL": "DEBUG",
        "GATEWAY_AGENT_CP_VERIFY_TLS": "false",
    }
    async with agent_process(agent_settings, kubeconfig, log, command="run", env=env):
        project = new_api(
            endpoint_security={"production": {"type": "BASIC", "username": USERNAME, "password": PASSWORD}}
        )
        control_plane.deploy(project)
        [report] = await wait_report(control_plane, project.uuid, 1, timeout=60)
        assert report["deploymentStatus"] == "SUCCESS", report
    text = log.read_text(errors="replace")
    assert "workflow history is encrypted (codec key B encrypts)" in text
    assert text.count("GATEWAY_AGENT_CP_VERIFY_TLS=false") == 1  # one WARNING
    leaked = [s for s in secrets - {"sealing-unused"} if s in text]
    assert not leaked, f"in the agent's log: {leaked}"
