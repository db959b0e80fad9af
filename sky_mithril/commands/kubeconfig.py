"""Merging a Mithril cluster's kubeconfig into the local one, without losing
anything: pure functions over parsed kubeconfig documents, plus the backup.

The control node's kubeconfig names its API server by an address only the
cluster sees; the merged entry points at the cluster's `kube_host` instead
(same scheme, port and path), and its cluster, user and context are all named
`mithril:<cluster name>`, so SkyPilot can use `infra: k8s/mithril:<name>`.
"""

import datetime
import shutil
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import urlsplit, urlunsplit

from sky_mithril.commands.output import CommandError

SECTIONS = (('clusters', 'cluster'), ('users', 'user'), ('contexts', 'context'))

Kubeconfig = Dict[str, Any]


def context_name(cluster_name: str) -> str:
    return f'mithril:{cluster_name}'


def _named(config: Kubeconfig, section: str, name: str) -> Dict[str, Any]:
    for entry in config.get(section) or []:
        if entry.get('name') == name:
            return entry
    raise CommandError(f'The control node\'s kubeconfig has no {section} '
                       f'entry named {name!r}.')


def with_host(server: str, host: str) -> str:
    """`server` with its host replaced by `host`; scheme, port and path kept."""
    parts = urlsplit(server)
    if not parts.hostname:
        raise CommandError(f'The control node\'s kubeconfig names no server '
                           f'host ({server!r}).')
    netloc = f'[{host}]' if ':' in host else host
    if parts.port:
        netloc += f':{parts.port}'
    return urlunsplit(parts._replace(netloc=netloc))


def cluster_entries(remote: Kubeconfig, cluster_name: str,
                    kube_host: str) -> Kubeconfig:
    """The remote kubeconfig's current context as one cluster, user and
    context, all named `mithril:<cluster_name>`, the server at `kube_host`."""
    contexts = remote.get('contexts') or []
    if not contexts:
        raise CommandError('The control node\'s kubeconfig has no context.')
    current = remote.get('current-context') or contexts[0]['name']
    context = dict(_named(remote, 'contexts', current)['context'])
    cluster = dict(_named(remote, 'clusters', context['cluster'])['cluster'])
    user = _named(remote, 'users', context['user'])['user']
    name = context_name(cluster_name)
    cluster['server'] = with_host(cluster['server'], kube_host)
    context.update(cluster=name, user=name)
    return {'clusters': [{'name': name, 'cluster': cluster}],
            'users': [{'name': name, 'user': user}],
            'contexts': [{'name': name, 'context': context}]}


def merge(local: Kubeconfig, entries: Kubeconfig) -> Kubeconfig:
    """`local` with `entries` first in each section, replacing same-named
    ones; everything else kept, the current context too (set to the new one
    only when there was none)."""
    merged: Kubeconfig = {'apiVersion': 'v1', 'kind': 'Config',
                          'preferences': {}, **local}
    for section, _ in SECTIONS:
        new: List[Dict[str, Any]] = list(entries.get(section) or [])
        names = {entry['name'] for entry in new}
        merged[section] = new + [entry for entry in local.get(section) or []
                                 if entry.get('name') not in names]
    if not merged.get('current-context'):
        merged['current-context'] = entries['contexts'][0]['name']
    return merged


def back_up(path: Path, now: datetime.datetime) -> Path:
    """Copies `path` to `config.backup.YYYYMMDD_HHMMSS` beside it (mode kept)."""
    backup = path.with_name(f'{path.name}.backup.{now:%Y%m%d_%H%M%S}')
    shutil.copy2(path, backup)
    return backup
