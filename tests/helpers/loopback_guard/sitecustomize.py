"""Loaded by every Python a client test starts (its folder is on
PYTHONPATH): an audit hook that refuses a socket connection to anything but
loopback (a Unix socket is no network) and a name lookup of anything but a
loopback name (an IP literal asks nobody), noting each refusal in the file
SKY_MITHRIL_LOOPBACK_NOTES names. Self-contained: it runs in the clients'
venvs, not this repository's."""

import ipaddress
import os
import sys
from typing import Any, Tuple

_NOTES = os.environ.get('SKY_MITHRIL_LOOPBACK_NOTES', '')
_LOOPBACK_NAMES = frozenset({'localhost', 'localhost.localdomain'})


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode('ascii', 'replace')
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split('%')[0]).is_loopback
    except ValueError:
        return False


def _is_address(host: Any) -> bool:
    """An IP literal (or none, for a bind): looking it up asks nobody."""
    if isinstance(host, bytes):
        host = host.decode('ascii', 'replace')
    if not host:
        return True
    try:
        ipaddress.ip_address(str(host).split('%')[0])
    except ValueError:
        return False
    return True


def _refuse(what: str) -> None:
    with open(_NOTES, 'a', encoding='utf-8') as notes:
        notes.write(f'{what} (pid {os.getpid()}: {" ".join(sys.argv)})\n')
    raise OSError(f'refused by the tests: {what}; only loopback may be reached')


def _hook(event: str, args: Tuple[Any, ...]) -> None:
    if event == 'socket.connect':
        address = args[1]
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            _refuse(f'connect to {address[0]}:{address[1]}')
    elif event == 'socket.getaddrinfo':
        host = args[0]
        if not (_is_address(host) or _is_loopback(host)):
            _refuse(f'look up {host!r}')


if _NOTES:
    sys.addaudithook(_hook)
