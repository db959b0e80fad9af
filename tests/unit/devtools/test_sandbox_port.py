"""The sandbox's API-server port is chosen long before the server binds it
(first `sky` call, restarts): it must be one no outgoing connection or
port-0 listener of the same machine can take meanwhile."""

import socket
from pathlib import Path

from sky_mithril.devtools.sandbox import free_port


def test_the_port_is_free_and_below_the_ephemeral_range() -> None:
    low = int(Path('/proc/sys/net/ipv4/ip_local_port_range').read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(port < low for port in ports), (sorted(ports), low)
    for port in ports:
        with socket.socket() as s:
            s.bind(('127.0.0.1', port))
