"""/livez and /readyz of an agent process follow the real state of the broker and of Temporal."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from agent.settings import Settings
from harness.activemq import ActiveMQ
from harness.kube_emulator import KubeEmulator
from tests.integration.agent_process import agent_process
from tests.integration.conftest import temporal_binary


async def test_the_listeners_readiness_follows_its_broker_subscription(
    settings: Settings, kube: KubeEmulator, broker: ActiveMQ, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"broker_reconnect_max_seconds": 1.0})
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    async with agent_process(settings, kubeconfig, tmp_path / "agent.log", command="listen") as agent:
        status, ready = await agent.health("/readyz")
        assert status == 200
        assert ready == {"status": "ok", "checks": {"temporal": {"ok": True}, "broker": {"ok": True}}}
        status, live = await agent.health("/livez")
        assert status == 200 and live["checks"]["listener"] == {"ok": True} and live["checks"]["loop"]["ok"]

        await asyncio.to_thread(broker.stop)
        try:
            down = await agent.until_health("/readyz", 503)
            assert down["status"] == "failing" and down["failing"] == ["broker"]
            assert settings.broker_topic in down["checks"]["broker"]["error"]
            assert down["checks"]["temporal"] == {"ok": True}
            status, live = await agent.health("/livez")
            assert status == 200, live  # the process is fine: it is the broker that is gone
        finally:
            await asyncio.to_thread(broker.start)
        await agent.until_health("/readyz", 200)
        status, body = await asyncio.to_thread(agent.get, "/elsewhere")
        assert status == 404


async def test_readiness_names_temporal_when_it_stops_answering(
    settings: Settings, kube: KubeEmulator, tmp_path: Path
) -> None:
    own = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_binary())
    settings = settings.model_copy(update={"temporal_address": own.client.service_client.config.target_host})
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    try:
        async with agent_process(settings, kubeconfig, tmp_path / "agent.log", command="run") as agent:
            status, ready = await agent.health("/readyz")
            assert status == 200 and set(ready["checks"]) == {"temporal", "broker", "worker"}, ready

            await own.shutdown()
            down = await agent.until_health("/readyz", 503)
            assert "temporal" in down["failing"], down
            assert settings.temporal_address in down["checks"]["temporal"]["error"]
            assert down["checks"]["broker"] == {"ok": True}
            status, live = await agent.health("/livez")
            assert status == 200, live
            assert set(live["checks"]) == {"loop", "listener", "worker"}
    finally:
        await own.shutdown()
