"""The knobs the fault tests turn: the emulated operator's hold, the control plane's outbox while the
broker is down, the TCP proxy's stalls and the agent's commands as processes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from harness.processes import AgentCommand, ProcessError, TcpProxy
from tests.conftest import free_port

pytestmark = pytest.mark.faults

API = {
    "apiVersion": "dp.wso2.com/v1alpha3",
    "kind": "API",
    "metadata": {"name": "held"},
    "spec": {"apiName": "Held", "apiVersion": "1.0.0", "basePath": "/held/1.0.0", "apiType": "REST"},
}


def accepted(kube: KubeEmulator, namespace: str) -> bool:
    obj = kube.get_object("API", namespace, "held")
    return bool(obj and (obj.get("status") or {}).get("deploymentStatus", {}).get("accepted"))


def test_a_held_operator_accepts_nothing_until_released(tmp_path: Path) -> None:
    with KubeEmulator(gateway_operator=True, operator_delay=0.01) as kube:
        api_client = k8s_config.new_client_from_config(config_file=str(kube.write_kubeconfig(tmp_path / "config")))
        custom = k8s_client.CustomObjectsApi(api_client)
        kube.hold_operator("held")
        for namespace in ("held", "free"):
            custom.create_namespaced_custom_object("dp.wso2.com", "v1alpha3", namespace, "apis", API)
        deadline = time.monotonic() + 10
        while not accepted(kube, "free"):
            assert time.monotonic() < deadline, "the operator of a namespace without a hold never accepted"
            time.sleep(0.02)
        time.sleep(0.3)  # many times the operator's delay
        assert not accepted(kube, "held")
        kube.release_operator("held")
        while not accepted(kube, "held"):
            assert time.monotonic() < deadline + 10, "the released API was never accepted"
            time.sleep(0.02)


def test_the_control_plane_keeps_events_while_the_broker_is_down_and_sends_them_in_order() -> None:
    port = free_port()  # nothing listens: the broker is down
    received: list[bytes] = []
    with ControlPlaneSimulator(broker_url=f"stomp://127.0.0.1:{port}") as cp:
        with pytest.raises(ConnectionError):
            cp.publish("API_UPDATE", {"apiId": 1})  # without buffering, publishing fails as before
        cp.buffer_events = True
        ids = [cp.publish("API_UPDATE", {"apiId": i}) for i in range(3)]
        assert cp.outbox_size == 3
        with pytest.raises(TimeoutError):
            cp.wait_outbox_empty(timeout=0.3)
        server = _FakeBroker(port, received)
        try:
            cp.wait_outbox_empty(timeout=30)
        finally:
            server.close()
    bodies = [frame for frame in received if frame.startswith(b"SEND")]
    assert len(bodies) == 3
    assert all(b"persistent:true" in frame for frame in bodies)
    assert [cp_event["eventId"] for cp_event in cp.published[1:]] == ids


class _FakeBroker:
    """Just enough STOMP to take SENDs with receipts."""

    def __init__(self, port: int, received: list[bytes]) -> None:
        self._sock = socket.create_server(("127.0.0.1", port))
        self._received = received
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        buffer = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\0" in buffer:
                    frame, buffer = buffer.split(b"\0", 1)
                    frame = frame.lstrip(b"\r\n")
                    self._received.append(frame)
                    if frame.startswith(b"CONNECT") or frame.startswith(b"STOMP"):
                        conn.sendall(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
                    for line in frame.split(b"\n"):
                        if line.startswith(b"receipt:"):
                            conn.sendall(b"RECEIPT\nreceipt-id:" + line.split(b":", 1)[1] + b"\n\n\0")

    def close(self) -> None:
        self._sock.close()


async def test_the_proxy_holds_back_one_direction_and_drops_connections() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with TcpProxy(f"127.0.0.1:{port}") as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"one")
            assert await asyncio.wait_for(reader.read(3), 5) == b"one"
            proxy.stall("replies")
            writer.write(b"two")
            while proxy.held_bytes("replies") == 0:  # the echo server got it; the answer waits
                await asyncio.sleep(0.02)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(3), 0.3)
            proxy.resume()
            assert await asyncio.wait_for(reader.read(3), 5) == b"two"
            proxy.drop_connections()
            assert await asyncio.wait_for(reader.read(3), 5) == b""
            writer.close()
    finally:
        server.close()


def test_an_agent_command_that_exits_early_says_so_with_its_log(tmp_path: Path) -> None:
    process = AgentCommand("worker", tmp_path / "worker.log", {"GATEWAY_AGENT_BROKER_URL": "not-a-url"})
    with pytest.raises(ProcessError) as info:
        process.start_and_wait(timeout=60)
    assert "exited" in str(info.value) and "broker" in str(info.value).lower()
    process.kill()
