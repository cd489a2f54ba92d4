"""Session-wide services shared by the harness and integration tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from harness.activemq import ActiveMQ


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveMQ]:
    """ActiveMQ on a free port, started by the project's own script (persistent store in tmp)."""
    mq = ActiveMQ(tmp_path_factory.mktemp("activemq"), port=free_port())
    mq.start()
    try:
        yield mq
    finally:
        mq.stop()
