"""The emulator's `foundrypf` stand-in as the VM image carries it: it refuses
what Mithril's forwarder refuses before touching any firewall, and the image
gets a changed stand-in without being rebuilt. Opening and closing ports in
a host's namespace is in tests/host/provision."""

import subprocess
from pathlib import Path

import pytest

from sky_mithril.emulator.hosts import vm_image

STAND_IN = vm_image.MITHRIL_COMMANDS['foundrypf']


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(['sh', str(STAND_IN), *args], capture_output=True,
                          text=True, timeout=10, check=False)


@pytest.mark.parametrize('port', ['22', '79', '81', '442', '444', '1023',
                                  '65536', '100000'])
def test_a_port_mithril_does_not_forward_is_refused(port):
    for args in ((port,), ('-d', port)):
        result = run(*args)
        assert result.returncode == 1
        assert result.stderr == (f'foundrypf: port {port} cannot be opened: '
                                 'Mithril forwards ports 80, 443 and '
                                 '1024-65535 only\n')


@pytest.mark.parametrize('port', ['', '0', 'http', '08080', '-1', '8080x'])
def test_what_is_not_a_port_is_refused(port):
    result = run('-d', port)
    assert result.returncode == 1
    assert result.stderr == f"foundrypf: '{port}' is not a port number\n"


@pytest.mark.parametrize('args', [(), ('-d',), ('-x', '8080'), ('8080', '8081'),
                                  ('--version',)])
def test_another_command_line_gets_the_usage(args):
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr == 'usage: foundrypf PORT | foundrypf -d PORT\n'


def test_the_image_gets_a_changed_stand_in_without_a_rebuild(tmp_path: Path):
    image = vm_image._paths(tmp_path)  # pylint: disable=protected-access
    assert not vm_image._stand_ins_current(image)  # pylint: disable=protected-access
    said = []
    vm_image._install_stand_ins(image, said.append)  # pylint: disable=protected-access
    installed = image.mithril_commands / 'foundrypf'
    assert installed.read_bytes() == STAND_IN.read_bytes()
    assert installed.stat().st_mode & 0o777 == 0o755
    assert vm_image._stand_ins_current(image)  # pylint: disable=protected-access
    assert said == ['Installing the foundrypf stand-in',
                    'Installing the sitecustomize.py stand-in']

    vm_image._install_stand_ins(image, said.append)  # pylint: disable=protected-access
    assert len(said) == 2
    installed.write_text('#!/bin/sh\n# an older stand-in\n')
    assert not vm_image._stand_ins_current(image)  # pylint: disable=protected-access
    vm_image._install_stand_ins(image, said.append)  # pylint: disable=protected-access
    assert installed.read_bytes() == STAND_IN.read_bytes() and len(said) == 3
