"""The sandbox's API-server port is chosen long before the server binds it
(first `sky` call, restarts): it must be one no outgoing connection or
port-0 listener of the same machine can take meanwhile."""

import socket
from pathlib import Path

import pytest
from sky.server.requests.queues import mp_queue
from sky.skylet import constants

from sky_mithril.devtools import sandbox
from sky_mithril.devtools.sandbox import free_port


def test_the_port_is_free_and_below_the_ephemeral_range() -> None:
    low = int(Path('/proc/sys/net/ipv4/ip_local_port_range').read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(port < low for port in ports), (sorted(ports), low)
    for port in ports:
        with socket.socket() as s:
            s.bind(('127.0.0.1', port))


def test_the_request_queue_port_skypilot_derives_is_free_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The API server refuses to start when its queue manager's port (in the
    ephemeral range) is taken: it is free when the API port is chosen."""
    port = free_port()
    monkeypatch.setenv(constants.SKY_API_SERVER_LOCAL_PORT_ENV_VAR, str(port))
    queue_port = mp_queue.get_queue_manager_port()
    assert sandbox._queue_manager_port(port) == queue_port  # pylint: disable=protected-access
    with socket.socket() as s:
        s.bind(('127.0.0.1', queue_port))


def test_a_port_whose_queue_port_is_taken_is_not_chosen(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Odd ports' queue port taken here: only even ports are chosen."""
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken_port = taken.getsockname()[1]
        monkeypatch.setattr(sandbox, '_queue_manager_port',
                            lambda port: taken_port if port % 2 else port + 1)
        ports = {free_port() for _ in range(20)}
    assert all(port % 2 == 0 for port in ports), sorted(ports)
