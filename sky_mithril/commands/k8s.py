"""`sky-mithril k8s list|info|ssh|update-kubeconfig`: Mithril's Kubernetes
clusters, as `ml k8s` shows them, and their kubeconfig merged locally so
SkyPilot can launch on them (`infra: k8s/mithril:<name>`)."""

import datetime
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import click
import yaml

from sky_mithril.account import connection
from sky_mithril import files
from sky_mithril.api import models
from sky_mithril.api.models import KubernetesClusterState
from sky_mithril.commands import common
from sky_mithril.commands import keys
from sky_mithril.commands import kubeconfig
from sky_mithril.commands import options
from sky_mithril.commands import ssh
from sky_mithril.commands.output import (CommandError, age, confirm,
                                         print_json, print_table, progress,
                                         short_status)

KUBECTL_TIMEOUT_S = 60.0
KUBECTL_INSTALL_HINT = ('On Debian or Ubuntu: `sudo apt-get install -y '
                        'kubernetes-client`; elsewhere see '
                        'https://kubernetes.io/docs/tasks/tools/.')


@click.group('k8s', cls=options.Group,
             short_help='Kubernetes clusters (as `ml k8s`).')
def group() -> None:
    """Mithril's Kubernetes clusters (as `ml k8s`), and their kubeconfig for
    SkyPilot."""


CLUSTER_ARGUMENT = click.argument('cluster_name_or_fid', required=False,
                                  metavar='[CLUSTER]')
IDENTITY_HELP = ('SSH private key for the control node (default: the local '
                 'key that matches one of the cluster\'s)')


def cluster_json(cluster: models.KubernetesCluster) -> Dict[str, Any]:
    """One cluster as `k8s list --json` prints it: KubernetesClusterModel's
    fields without `join_command` (it holds a join token)."""
    return {
        'fid': cluster.fid,
        'name': cluster.name,
        'project': cluster.project,
        'region': cluster.region,
        'status': cluster.status,
        'k8s_version': cluster.k8s_version,
        'kube_host': cluster.kube_host,
        'ssh_keys': list(cluster.ssh_keys),
        'instances': list(cluster.instances),
        'created_at': cluster.created_at.isoformat(),
        'deleted_at': (cluster.deleted_at.isoformat()
                       if cluster.deleted_at else None),
        'context': kubeconfig.context_name(cluster.name),
    }


@group.command('list', short_help="The project's Kubernetes clusters.",
               epilog=options.examples(
    'sky-mithril k8s list', 'sky-mithril k8s list --all --json'))
@click.option('--all', 'include_terminated', is_flag=True,
              help='include terminated clusters')
@options.json_option('the clusters')
def list_clusters(include_terminated: bool, as_json: bool) -> int:
    """The project's Kubernetes clusters (live ones unless --all)."""
    conn = common.connect()
    try:
        clusters = conn.client.list_kubernetes_clusters(conn.project_id)
    finally:
        conn.client.close()
    if not include_terminated:
        clusters = [c for c in clusters
                    if c.status != KubernetesClusterState.TERMINATED]
    if as_json:
        print_json([cluster_json(c) for c in clusters])
        return 0
    if not clusters:
        print('No Kubernetes clusters' +
              ('.' if include_terminated else '; --all includes terminated ones.'))
        return 0
    print_table(('NAME', 'STATUS', 'REGION', 'VERSION', 'NODES', 'KUBE HOST',
                 'AGE', 'FID'),
                [(c.name, c.status, c.region, c.k8s_version or '-',
                  str(len(c.instances)), c.kube_host or '-', age(c.created_at),
                  c.fid) for c in clusters])
    return 0


@group.command('info', epilog=options.examples(
    'sky-mithril k8s info pool', 'sky-mithril k8s info pool --json'))
@CLUSTER_ARGUMENT
@options.json_option('the cluster and its nodes')
def show_cluster(cluster_name_or_fid: Optional[str], as_json: bool) -> int:
    """A cluster and its worker nodes. CLUSTER is a name or fid; on a
    terminal, leave it out to pick one."""
    conn = common.connect()
    try:
        cluster = common.find_cluster(conn, cluster_name_or_fid)
        wanted = set(cluster.instances)
        nodes = [i for i in conn.client.list_instances(conn.project_id)
                 if i.fid in wanted] if wanted else []
    finally:
        conn.client.close()
    nodes.sort(key=lambda instance: instance.name)
    if as_json:
        print_json({**cluster_json(cluster), 'nodes': [{
            'fid': i.fid, 'name': i.name, 'status': i.status, 'bid': i.bid,
            'private_ip': i.private_ip} for i in nodes]})
        return 0
    for label, value in (
            ('Cluster', f'{cluster.name} ({cluster.fid})'),
            ('Status', cluster.status),
            ('Region', cluster.region),
            ('Kubernetes', cluster.k8s_version or '-'),
            ('Control plane', cluster.kube_host or '- (not up yet)'),
            ('Worker nodes', str(len(cluster.instances))),
            ('Created', f'{cluster.created_at:%Y-%m-%d %H:%M:%S %Z} '
                        f'({age(cluster.created_at)} ago)'),
            ('Context', kubeconfig.context_name(cluster.name))):
        print(f'{label + ":":<16}{value}')
    if nodes:
        print()
        print_table(('NAME', 'STATUS', 'PRIVATE IP', 'BID', 'FID'),
                    [(i.name, short_status(i.status), i.private_ip or '-',
                      i.bid or '-', i.fid) for i in nodes])
    return 0


def _control_node(
        conn: connection.Connection, name_or_fid: Optional[str],
        identity: Optional[Path]
) -> Tuple[models.KubernetesCluster, ssh.SshTarget, Path]:
    """The cluster, its control node as an SSH target, and the identity
    (`-i`, else a local key whose public half is one of the cluster's)."""
    cluster = common.find_cluster(conn, name_or_fid)
    if cluster.status != KubernetesClusterState.AVAILABLE or not cluster.kube_host:
        raise CommandError(
            f'Kubernetes cluster {cluster.name} is {cluster.status} and has no '
            'control node to reach yet; `sky-mithril k8s info '
            f'{cluster.name}` shows it.')
    if identity is None:
        identity = keys.identity_for(cluster.ssh_keys,
                                     conn.client.list_ssh_keys(conn.project_id),
                                     f'cluster {cluster.name}')
    elif not identity.expanduser().is_file():
        raise CommandError(f'-i {identity}: no such file.')
    target = ssh.SshTarget.of('control', cluster.kube_host, cluster)
    return cluster, target, identity.expanduser()


@group.command('ssh', epilog=options.examples(
    'sky-mithril k8s ssh pool                     # a shell on the control node',
    'sky-mithril k8s ssh pool -- kubectl get nodes',
    'sky-mithril k8s ssh pool --show -i ~/.ssh/id_ed25519'),
               context_settings={'allow_interspersed_args': False})
@CLUSTER_ARGUMENT
@click.option('--show', is_flag=True,
              help='print the ssh command instead of running it')
@click.option('-i', '--identity', type=click.Path(path_type=Path),
              metavar='PATH', help=IDENTITY_HELP)
@click.argument('rest', nargs=-1, type=click.UNPROCESSED,
                metavar='[[--] COMMAND...]')
@click.pass_context
def ssh_control_node(ctx: click.Context, cluster_name_or_fid: Optional[str],
                     show: bool, identity: Optional[Path],
                     rest: Tuple[str, ...]) -> int:
    """A shell or a command on a cluster's control node. Options may also
    follow CLUSTER."""
    late, command = ssh.parse_late_options(ctx, rest, ('--show', '-h',
                                                       '--help'),
                                           ('-i', '--identity'))
    show = late.get('show', show)
    identity = late.get('identity', identity)
    conn = common.connect()
    try:
        _, target, key = _control_node(conn, cluster_name_or_fid, identity)
    finally:
        conn.client.close()
    return ssh.run_ssh([target], key, command, show)


def _fetch_remote_kubeconfig(target: ssh.SshTarget,
                             identity: Path) -> kubeconfig.Kubeconfig:
    result = subprocess.run(ssh.ssh_argv(target, identity,
                                         ['cat', '~/.kube/config']),
                            capture_output=True, text=True, timeout=120,
                            check=False)
    if result.returncode != 0:
        raise CommandError(
            f'Reading ~/.kube/config on the control node {target.user}@'
            f'{target.host} failed ({result.returncode}): '
            f'{result.stderr.strip() or "no message"}.')
    remote = yaml.safe_load(result.stdout)
    if not isinstance(remote, dict):
        raise CommandError('The control node\'s ~/.kube/config is not a '
                           'kubeconfig.')
    return remote


def _validate(config_path: Path, context: str) -> int:
    """`kubectl version` and `kubectl get nodes` on the new context."""
    kubectl = shutil.which('kubectl')
    if kubectl is None:
        progress('kubectl is not installed, so the new context was not '
                 f'checked. {KUBECTL_INSTALL_HINT}')
        return 0
    for check in (['version'], ['get', 'nodes']):
        argv = [kubectl, '--kubeconfig', str(config_path), '--context',
                context, *check]
        try:
            result = subprocess.run(argv, capture_output=True, text=True,
                                    timeout=KUBECTL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            progress(f'`kubectl {" ".join(check)}` did not answer within '
                     f'{KUBECTL_TIMEOUT_S:.0f}s.')
            return 1
        print(result.stdout.rstrip())
        if result.returncode != 0:
            progress(f'`kubectl --context {context} {" ".join(check)}` '
                     f'failed: {result.stderr.strip()}. The context is in '
                     f'{config_path}; --skip-validation skips this check.')
            return 1
    return 0


@group.command('update-kubeconfig',
               short_help='Add a cluster to ~/.kube/config.',
               epilog=options.examples(
    'sky-mithril k8s update-kubeconfig pool',
    'sky-mithril k8s update-kubeconfig pool -y --no-backup'))
@CLUSTER_ARGUMENT
@click.option('-i', '--identity', type=click.Path(path_type=Path),
              metavar='PATH', help=IDENTITY_HELP)
@options.YES
@click.option('--no-backup', is_flag=True,
              help='do not back up ~/.kube/config first')
@click.option('--skip-validation', is_flag=True,
              help='do not check the new context with kubectl')
def update_kubeconfig(cluster_name_or_fid: Optional[str],
                      identity: Optional[Path], yes: bool, no_backup: bool,
                      skip_validation: bool) -> int:
    """Merge the cluster's kubeconfig into ~/.kube/config as context
    mithril:<name>, keeping every other entry, then check it with kubectl."""
    conn = common.connect()
    try:
        cluster, target, key = _control_node(conn, cluster_name_or_fid,
                                             identity)
    finally:
        conn.client.close()
    entries = kubeconfig.cluster_entries(
        _fetch_remote_kubeconfig(target, key), cluster.name,
        cluster.kube_host or '')
    context = kubeconfig.context_name(cluster.name)
    server = entries['clusters'][0]['cluster']['server']
    config_path = Path.home() / '.kube' / 'config'
    if not confirm(f'Add context {context} (server {server}) to '
                   f'{config_path}?', yes):
        return 1
    local: kubeconfig.Kubeconfig = {}
    if config_path.exists():
        local = yaml.safe_load(config_path.read_text(encoding='utf-8')) or {}
        if not isinstance(local, dict):
            raise CommandError(f'{config_path} is not a kubeconfig; fix or '
                               'move it and run again.')
        if not no_backup:
            backup = kubeconfig.back_up(config_path, datetime.datetime.now())
            print(f'Backed up {config_path} to {backup}')
    merged = kubeconfig.merge(local, entries)
    files.write_atomically(config_path,
                           yaml.safe_dump(merged, sort_keys=False), mode=0o600)
    print(f'Added context {context} to {config_path} '
          f'(current context: {merged["current-context"]}).')
    status = 0 if skip_validation else _validate(config_path, context)
    print('Next: allow the context in ~/.sky/config.yaml '
          f'(kubernetes: {{allowed_contexts: [{context}]}}), run '
          f'`sky check kubernetes`, then launch with `infra: k8s/{context}`.')
    return status
