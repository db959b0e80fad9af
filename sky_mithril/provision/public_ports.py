"""A cluster's public ports: which ports Mithril opens, and opening them on the
head with Mithril's own forwarder.

Mithril has no firewall API: an instance opens a port at its public address
itself. `foundrypf PORT`, on Mithril's images, forwards PORT at the instance's
public address to the instance's own PORT for as long as it runs, and
`foundrypf -d PORT` closes it; only ports 80, 443 and 1024-65535 open.

The head runs one `foundrypf` per port of the task, in the background, as
root through passwordless sudo, as Mithril's SDK runs it on an instance
without its systemd units. Nothing of that outlives a reboot, so the ports
are opened at every launch and start (`Mithril.OPEN_PORTS_VERSION` is
LAUNCH_ONLY: SkyPilot hands `run_instances` the cluster's ports each time),
and a port whose `foundrypf` already runs is left alone. Only the head opens
ports: its public address is where SkyPilot's endpoints point.
"""

import shlex
from typing import Any, Dict, Iterable, List, Optional

from sky.provision import common
from sky.utils import resources_utils

from sky_mithril import CLOUD_NAME

ALLOWED_PORTS = '80, 443 and 1024-65535'
FOUNDRYPF = 'foundrypf'
# Where Mithril's images have it when it is not on the PATH.
FOUNDRYPF_ELSEWHERE = '/var/lib/foundry/foundrypf'
# A `foundrypf` that refuses its port, or cannot open it, exits at once; one
# that still runs this long after its start is forwarding.
SETTLE_SECONDS = 1


class PortsNotOpenedError(RuntimeError):
    """The head could not open every port of the task; the message names
    each one and why."""


def is_allowed(port: int) -> bool:
    """Whether Mithril opens `port` at an instance's public address."""
    return port in (80, 443) or 1024 <= port <= 65535


def refusal(ports: Optional[List[str]]) -> Optional[str]:
    """Why a task asking for `ports` (SkyPilot's `resources.ports`: ports and
    ranges) cannot run on Mithril, or None when every port can open."""
    refused = {port for port in resources_utils.port_ranges_to_set(ports)
               if not is_allowed(port)}
    if not refused:
        return None
    return (f'Mithril opens public ports {ALLOWED_PORTS} only, not '
            f'{", ".join(resources_utils.port_set_to_ranges(refused))}.')


def open_script(ports: Iterable[int]) -> str:
    """The head's shell commands: a `foundrypf` started for each port that
    runs none, then a failure naming each new one that exited, with the end
    of its log."""
    listed = ' '.join(str(port) for port in sorted(set(ports)))
    # A forwarder's command line ends in `foundrypf PORT`, whichever way it
    # was started; `-d PORT` or a longer port does not match.
    running = 'pgrep -f "foundrypf $port\\$" >/dev/null'
    start = shlex.quote('exec "$0" "$1" >"/tmp/foundrypf-$1.log" 2>&1 </dev/null')
    return '\n'.join([
        f'pf=$(command -v {FOUNDRYPF} || command -v {FOUNDRYPF_ELSEWHERE})',
        f'[ -n "$pf" ] || {{ echo "{FOUNDRYPF} is not on this instance" >&2; '
        'exit 1; }',
        'started=',
        f'for port in {listed}; do',
        f'  {running} && continue',
        f'  sudo -n setsid -f sh -c {start} "$pf" "$port" || exit 1',
        '  started="$started $port"',
        'done',
        f'[ -z "$started" ] || sleep {SETTLE_SECONDS}',
        'failed=0',
        'for port in $started; do',
        f'  {running} && continue',
        '  failed=1',
        '  echo "port $port: $(tail -n 3 /tmp/foundrypf-$port.log)" >&2',
        'done',
        'exit $failed',
    ])


def open_on_head(info: common.ClusterInfo, auth: Dict[str, Any],
                 cluster_name_on_cloud: str, ports: Iterable[int]) -> None:
    """Opens `ports` at the head's public address, over SSH as SkyPilot
    reaches the head (the cluster config's `auth`, once sshd answers).

    Raises PortsNotOpenedError naming each port that did not open.
    """
    # pylint: disable=import-outside-toplevel
    from sky import provision
    from sky.provision import provisioner
    head = info.get_head_instance()
    if head is None:
        raise PortsNotOpenedError(f'{cluster_name_on_cloud} has no head with '
                                  'an address to open ports on.')
    head_only = common.ClusterInfo(
        instances={head.instance_id: [head]},
        head_instance_id=head.instance_id, provider_name=CLOUD_NAME,
        provider_config=info.provider_config, ssh_user=info.ssh_user)
    credentials = {'ssh_user': info.ssh_user,
                   'ssh_private_key': auth['ssh_private_key'],
                   'ssh_control_name': cluster_name_on_cloud}
    provisioner.wait_for_ssh(head_only, credentials)
    runner, = provision.get_command_runners(CLOUD_NAME, head_only,
                                            **credentials)
    returncode, stdout, stderr = runner.run(open_script(ports),
                                            require_outputs=True,
                                            stream_logs=False)
    if returncode != 0:
        raise PortsNotOpenedError(
            f'The head of {cluster_name_on_cloud} ({head.external_ip}) could '
            f'not open every port of {resources_utils.port_set_to_ranges(set(ports))} '
            f'with {FOUNDRYPF} (exit code {returncode}): '
            f'{(stderr or stdout).strip()}')
