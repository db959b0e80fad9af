"""`sky-mithril ssh BID`: a shell or a command on a bid's instances, as
`ml ssh` does, with the identity picked from the bid's own keys.

Waits (unless `--no-wait`) for the instances to run and for sshd to answer,
printing each change. A command without `--node` runs on every node in
parallel, each output line prefixed `[node-i]`, and the exit status is
non-zero when any node's command failed. Hosts are not checked against
known_hosts, as SkyPilot does for its clusters: spot nodes come and go and
reuse addresses.
"""

import dataclasses
import shlex
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

import click

from sky_mithril.api import models
from sky_mithril.commands import common
from sky_mithril.commands import keys
from sky_mithril.commands import options
from sky_mithril.commands.output import CommandError, progress

SSH_READY_TIMEOUT_S = 120.0
SSH_OPTIONS = ('-o', 'StrictHostKeyChecking=no', '-o',
               'UserKnownHostsFile=/dev/null', '-o', 'IdentitiesOnly=yes',
               '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=10')


@dataclasses.dataclass(frozen=True)
class SshTarget:
    """Where one node answers SSH."""

    label: str
    host: str
    port: int = 22
    user: str = 'ubuntu'

    @classmethod
    def of(cls, label: str, host: str, model: models.ApiModel) -> 'SshTarget':
        """A target from an API object; the emulator's hosts add `ssh_port`
        and `ssh_user` where they differ from Mithril's 22 and `ubuntu`."""
        extra = model.model_extra or {}
        return cls(label, host, int(extra.get('ssh_port') or 22),
                   str(extra.get('ssh_user') or 'ubuntu'))


def ssh_argv(target: SshTarget, identity: Path,
             command: Sequence[str] = ()) -> List[str]:
    """The ssh command line for `target` (a shell when `command` is empty)."""
    argv = ['ssh', '-i', str(identity), '-p', str(target.port), *SSH_OPTIONS]
    if command:
        argv += ['-o', 'BatchMode=yes']
    return [*argv, f'{target.user}@{target.host}', *command]


def _answers_ssh(target: SshTarget) -> bool:
    try:
        with socket.create_connection((target.host, target.port),
                                      timeout=3) as conn:
            conn.settimeout(3)
            return conn.recv(4).startswith(b'SSH-')
    except OSError:
        return False


def wait_for_ssh(targets: Sequence[SshTarget]) -> None:
    """Until every target's sshd sends its banner, or SSH_READY_TIMEOUT_S."""
    deadline = time.monotonic() + SSH_READY_TIMEOUT_S
    pending = list(targets)
    announced = False
    while True:
        pending = [t for t in pending if not _answers_ssh(t)]
        if not pending:
            return
        if not announced:
            progress('Waiting for SSH on ' +
                     ', '.join(f'{t.label} ({t.host}:{t.port})'
                               for t in pending) + '...')
            announced = True
        if time.monotonic() > deadline:
            raise CommandError(
                'SSH did not answer within '
                f'{SSH_READY_TIMEOUT_S:.0f}s on ' +
                ', '.join(t.label for t in pending) + '.')
        time.sleep(common.POLL_INTERVAL_S)


def _relay(stream: IO[bytes], prefix: str, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b''):
        line = raw.decode('utf-8', errors='replace').rstrip('\n')
        with lock:
            print(f'{prefix} {line}', flush=True)


def run_everywhere(targets: Sequence[SshTarget], identity: Path,
                   command: Sequence[str]) -> int:
    """Runs `command` on all targets at once, output prefixed `[label]`;
    0 only when every node's command succeeded."""
    lock = threading.Lock()
    runs: List[Tuple[SshTarget, subprocess.Popen, threading.Thread]] = []
    for target in targets:
        process = subprocess.Popen(ssh_argv(target, identity, command),
                                   stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        assert process.stdout is not None
        relay = threading.Thread(target=_relay,
                                 args=(process.stdout, f'[{target.label}]',
                                       lock), daemon=True)
        relay.start()
        runs.append((target, process, relay))
    failed = []
    for target, process, relay in runs:
        code = process.wait()
        relay.join()
        if code != 0:
            failed.append(f'{target.label} (exit {code})')
    if failed:
        progress(f'Failed on {len(failed)} of {len(runs)} nodes: '
                 + ', '.join(failed))
        return 1
    return 0


def run_ssh(targets: Sequence[SshTarget], identity: Path,
            command: Sequence[str], show: bool) -> int:
    """`--show` prints the command lines; one target gets an interactive
    shell or the command; several get `run_everywhere`."""
    if show:
        for target in targets:
            print(shlex.join(ssh_argv(target, identity, command)))
        return 0
    if len(targets) == 1:
        return subprocess.call(ssh_argv(targets[0], identity, command))
    return run_everywhere(targets, identity, command)


def split_options(tokens: List[str], flags: Sequence[str],
                  valued: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Options written after the positional argument (`ssh NAME --node 1
    cmd`) and the command after them: everything from the first other token,
    or after `--`."""
    options: List[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token == '--':
            return options, tokens[index + 1:]
        if token in flags:
            options.append(token)
        elif token in valued and index + 1 < len(tokens):
            options += [token, tokens[index + 1]]
            index += 1
        elif token.split('=', 1)[0] in valued and '=' in token:
            options.append(token)
        else:
            break
        index += 1
    return options, tokens[index:]


def parse_late_options(ctx: click.Context, rest: Sequence[str],
                       flags: Sequence[str],
                       valued: Sequence[str]) -> Tuple[Dict[str, Any], List[str]]:
    """The options written after the positional argument, parsed by the
    command's own definitions (only those given), and the command that
    follows them."""
    late, command = split_options(list(rest), flags, valued)
    if not late:
        return {}, command
    assert ctx.command.name is not None
    with ctx.command.make_context(ctx.command.name, late,
                                  parent=ctx.parent) as late_ctx:
        given = {name: value for name, value in late_ctx.params.items()
                 if late_ctx.get_parameter_source(name) ==
                 click.core.ParameterSource.COMMANDLINE}
    return given, command


SSH_EPILOG = options.examples(
    'sky-mithril ssh train                  # a shell on node 0',
    'sky-mithril ssh train -- nvidia-smi    # on every node, lines prefixed [node-i]',
    'sky-mithril ssh train --node 1 uptime',
    'sky-mithril ssh train --show           # print the ssh command')


@click.command('ssh', epilog=SSH_EPILOG,
               context_settings={'allow_interspersed_args': False})
@click.argument('bid_name_or_fid', required=False, metavar='[BID]')
@click.option('--node', type=int, metavar='INDEX',
              help='node index (instances sorted by name); default: a shell on '
              'node 0, a command on every node')
@click.option('--show', is_flag=True,
              help='print the ssh command instead of running it')
@click.option('--no-wait', is_flag=True,
              help='fail at once unless every instance runs')
@click.argument('rest', nargs=-1, type=click.UNPROCESSED,
                metavar='[[--] COMMAND...]')
@click.pass_context
def ssh_command(ctx: click.Context, bid_name_or_fid: Optional[str],
                node: Optional[int], show: bool, no_wait: bool,
                rest: Tuple[str, ...]) -> int:
    """A shell or a command on a bid's instances (as `ml ssh`). BID is a
    bid's name or fid; options may also follow it."""
    late, command = parse_late_options(ctx, rest, ('--show', '--no-wait',
                                                   '-h', '--help'), ('--node',))
    node = late.get('node', node)
    show = late.get('show', show)
    no_wait = late.get('no_wait', no_wait)
    conn = common.connect()
    try:
        bid = common.choose_bid(conn, bid_name_or_fid, 'BID')
        if no_wait:
            instances = common.bid_instances(conn, bid)
            if not common.all_running(bid, instances):
                raise CommandError(
                    f'Bid {bid.name} is {bid.status} and not all of its '
                    'instances run yet; drop --no-wait to wait for them.')
        else:
            instances = common.wait_until_running(conn, bid)
        project_keys = conn.client.list_ssh_keys(conn.project_id)
        identity = keys.identity_for(bid.launch_specification.ssh_keys,
                                     project_keys, f'bid {bid.name}')
    finally:
        conn.client.close()
    targets = [SshTarget.of(f'node-{index}', i.ssh_destination or '', i)
               for index, i in enumerate(instances)]
    if node is not None:
        if not 0 <= node < len(targets):
            raise CommandError(f'--node {node}: bid {bid.name} has nodes '
                               f'0 to {len(targets) - 1}.')
        targets = [targets[node]]
    elif not command:
        targets = targets[:1]
    if not show and not no_wait:
        wait_for_ssh(targets)
    return run_ssh(targets, identity, command, show)
