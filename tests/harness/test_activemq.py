"""The local ActiveMQ keeps the promises the listener relies on: durable, acked, persistent delivery.

Runs a broker from harness.activemq on a free port, or uses the one at
GATEWAY_AGENT_TEST_BROKER_URL (then the restart test is skipped).
"""

from __future__ import annotations

import os
import queue
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import stomp
from stomp.utils import Frame

from harness import activemq
from harness.activemq import ActiveMQ, BrokerError
from tests.conftest import free_port

EXTERNAL_BROKER_URL = os.environ.get("GATEWAY_AGENT_TEST_BROKER_URL", "")
Endpoint = tuple[str, int]


@pytest.fixture(scope="module")
def managed_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveMQ | None]:
    if EXTERNAL_BROKER_URL:
        yield None
        return
    broker = ActiveMQ(tmp_path_factory.mktemp("activemq"), port=free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def endpoint(managed_broker: ActiveMQ | None) -> Endpoint:
    if managed_broker is None:
        parts = urlsplit(EXTERNAL_BROKER_URL)
        assert parts.hostname and parts.port, f"{EXTERNAL_BROKER_URL!r} is not stomp://host:port"
        return parts.hostname, parts.port
    return managed_broker.host, managed_broker.port


class Inbox(stomp.ConnectionListener):
    """Collects MESSAGE frames so a test can wait for the next one, and notices the socket closing."""

    def __init__(self) -> None:
        self.frames: queue.Queue[Frame] = queue.Queue()
        self.closed = threading.Event()
        self.receipts: queue.Queue[str] = queue.Queue()

    def on_message(self, frame: Frame) -> None:
        self.frames.put(frame)

    def on_receipt(self, frame: Frame) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def on_disconnected(self) -> None:
        self.closed.set()

    def next(self, timeout: float = 5.0) -> Frame:
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no message arrived within {timeout} s")

    def assert_quiet(self, wait: float = 0.5) -> None:
        with pytest.raises(queue.Empty):
            extra = self.frames.get(timeout=wait)
            pytest.fail(f"unexpected message: {extra.body!r}")


@contextmanager
def durable_subscriber(
    endpoint: Endpoint, client_id: str, name: str, topic: str
) -> Iterator[tuple[stomp.Connection12, Inbox]]:
    """Connects the way the agent's listener does: client-id, durable name, client-individual acks."""
    conn = stomp.Connection12([endpoint])
    inbox = Inbox()
    conn.set_listener("inbox", inbox)
    conn.connect(wait=True, headers={"client-id": client_id})
    # Topics drop what arrives before a subscription exists, so wait until the broker has it.
    headers = {"activemq.subscriptionName": name, "receipt": "subscribed"}
    conn.subscribe(topic, id="1", ack="client-individual", headers=headers)
    assert inbox.receipts.get(timeout=5.0) == "subscribed"
    try:
        yield conn, inbox
    finally:
        # stomp.py's disconnect() does not wait for the broker's receipt; reconnecting with the
        # same client-id before the broker has dropped this connection is refused.
        conn.disconnect()
        assert inbox.closed.wait(5.0), "broker did not confirm DISCONNECT within 5 s"


def publish(endpoint: Endpoint, topic: str, body: str) -> None:
    """Send a persistent message and return once the broker has confirmed it (a receipt)."""
    conn = stomp.Connection12([endpoint])
    inbox = Inbox()
    conn.set_listener("inbox", inbox)
    conn.connect(wait=True)
    try:
        receipt = f"publish-{uuid.uuid4().hex}"
        conn.send(topic, body, headers={"persistent": "true", "receipt": receipt})
        assert inbox.receipts.get(timeout=10) == receipt
    finally:
        conn.disconnect()


@pytest.fixture
def names() -> tuple[str, str, str]:
    """A client-id, subscription name and topic no other test (or earlier run) shares."""
    suffix = uuid.uuid4().hex[:8]
    return f"test-client-{suffix}", f"test-sub-{suffix}", f"/topic/test.notification.{suffix}"


def test_message_published_while_subscriber_is_away_arrives_when_it_returns(endpoint, names):
    client_id, name, topic = names
    with durable_subscriber(endpoint, client_id, name, topic):
        pass
    publish(endpoint, topic, "while-away")

    with durable_subscriber(endpoint, client_id, name, topic) as (conn, inbox):
        frame = inbox.next()
        assert frame.body == "while-away"
        conn.ack(frame.headers["ack"])


def test_unacked_message_is_redelivered_after_subscriber_disconnects(endpoint, names):
    client_id, name, topic = names
    with durable_subscriber(endpoint, client_id, name, topic) as (_, inbox):
        publish(endpoint, topic, "not-acked")
        first = inbox.next()
        assert first.body == "not-acked"

    with durable_subscriber(endpoint, client_id, name, topic) as (conn, inbox):
        again = inbox.next()
        assert again.body == "not-acked"
        assert again.headers["message-id"] == first.headers["message-id"]
        conn.ack(again.headers["ack"])

    with durable_subscriber(endpoint, client_id, name, topic) as (_, inbox):
        inbox.assert_quiet()


def test_persistent_message_and_durable_subscription_survive_broker_restart(managed_broker, endpoint, names):
    if managed_broker is None:
        pytest.skip("GATEWAY_AGENT_TEST_BROKER_URL points at a broker these tests do not own")
    client_id, name, topic = names
    with durable_subscriber(endpoint, client_id, name, topic):
        pass
    publish(endpoint, topic, "before-restart")

    managed_broker.restart()
    publish(endpoint, topic, "after-restart")

    with durable_subscriber(endpoint, client_id, name, topic) as (conn, inbox):
        bodies = []
        for _ in range(2):
            frame = inbox.next()
            bodies.append(frame.body)
            conn.ack(frame.headers["ack"])
    assert bodies == ["before-restart", "after-restart"]


def test_start_on_a_running_broker_says_so_and_succeeds(managed_broker, capsys):
    if managed_broker is None:
        pytest.skip("GATEWAY_AGENT_TEST_BROKER_URL points at a broker these tests do not own")
    location = ["--dir", str(managed_broker.directory), "--port", str(managed_broker.port)]
    pid = managed_broker.running_pid()

    assert activemq.main(["start", *location]) == 0
    assert "already running" in capsys.readouterr().out
    assert managed_broker.running_pid() == pid
    assert activemq.main(["status", *location]) == 0


def test_status_fails_when_nothing_answers(tmp_path: Path, capsys):
    assert activemq.main(["status", "--dir", str(tmp_path), "--port", str(free_port())]) == 1
    assert "nothing answers" in capsys.readouterr().out


def test_missing_package_error_says_how_to_install(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(activemq, "ACTIVEMQ_HOME", tmp_path / "no-activemq")
    broker = ActiveMQ(tmp_path / "run", port=free_port())
    with pytest.raises(BrokerError, match="apt-get install -y --no-install-recommends activemq"):
        broker.start()
