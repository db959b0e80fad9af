"""Which ports Mithril opens (80, 443, 1024-65535) and the refusal that
names the others, ranges kept as ranges (as `sky launch` shows it: tests/unit/
test_bad_inputs.py); the head's commands: one forwarder per port, a running
one kept, one that exits named with its log."""

import subprocess
from pathlib import Path
from typing import Callable, Iterator, List, Set

import pytest

from sky_mithril.provision import public_ports


@pytest.mark.parametrize('port,allowed', [
    (1, False), (22, False), (79, False), (80, True), (81, False),
    (442, False), (443, True), (444, False), (1023, False), (1024, True),
    (8080, True), (65535, True), (65536, False)])
def test_mithril_opens_80_443_and_1024_up(port, allowed):
    assert public_ports.is_allowed(port) is allowed


@pytest.mark.parametrize('ports,refusal', [
    (None, None),
    ([], None),
    (['80', '443', '1024-2000', '65535'], None),
    (['22'], 'not 22.'),
    (['8080', '1-1024', '444'], 'not 1-79, 81-442, 444-1023.'),
])
def test_the_refusal_names_what_mithril_does_not_open(ports, refusal):
    said = public_ports.refusal(ports)
    if refusal is None:
        assert said is None
    else:
        assert said == ('Mithril opens public ports 80, 443 and 1024-65535 '
                        f'only, {refusal}')


# The head's commands, run here with stand-ins for sudo and foundrypf (a
# namespace host runs them for real in tests/host/provision). Ports no other
# test's forwarder uses.
OPENS, REFUSES = 47011, 47012
SUDO = '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n'
FOUNDRYPF = f'''#!/bin/sh
if [ "$1" = {REFUSES} ]; then echo "cannot reach the edge for $1" >&2; exit 1; fi
echo "forwarding $1"
while :; do sleep 0.2; done
'''


@pytest.fixture
def head(tmp_path: Path) -> Iterator[Callable[[Set[int]], subprocess.CompletedProcess]]:
    """Runs the head's commands for some ports with the stand-ins on PATH;
    afterwards ends the forwarders they started and removes their logs."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('sudo', SUDO), ('foundrypf', FOUNDRYPF)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {'PATH': f'{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin'}

    def run(ports: Set[int]) -> subprocess.CompletedProcess:
        return subprocess.run(['bash', '-c', public_ports.open_script(ports)],
                              env=env, capture_output=True, text=True,
                              timeout=30, check=False)

    try:
        yield run
    finally:
        subprocess.run(['pkill', '-f', f'{bin_dir}/foundrypf'], check=False)
        for port in (OPENS, REFUSES):
            Path(f'/tmp/foundrypf-{port}.log').unlink(missing_ok=True)


def forwarders(port: int) -> List[str]:
    return subprocess.run(['pgrep', '-f', f'foundrypf {port}$'],
                          capture_output=True, text=True,
                          check=False).stdout.split()


def test_the_head_starts_one_forwarder_per_port_and_keeps_a_running_one(head):
    assert head({OPENS}).returncode == 0
    [running] = forwarders(OPENS)
    assert head({OPENS}).returncode == 0
    assert forwarders(OPENS) == [running]


def test_a_forwarder_that_exits_fails_the_head_naming_its_port(head):
    result = head({OPENS, REFUSES})
    assert result.returncode == 1
    assert result.stderr == (f'port {REFUSES}: cannot reach the edge for '
                             f'{REFUSES}\n')
    assert len(forwarders(OPENS)) == 1
