"""A renewed node key reaches every node through SkyPilot's command runners
(rsync over SSH, as SkyPilot copies a file mount), or the renewal fails; and
only while SkyPilot's record reaches the bid's current nodes."""

import types
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest
from sky import global_user_state

from sky_mithril.account import node_keys
from sky_mithril.api import models
from sky_mithril.provision import node_key_renewal


class Runner:
    """A command runner that records its copies; it connects to `node`."""

    def __init__(self, copies: List[Tuple[str, str, bool, bool]],
                 node: Tuple[str, int] = ('10.0.0.2', 22)) -> None:
        self.copies = copies
        self.node = node

    def rsync(self, source: str, target: str, *, up: bool,
              stream_logs: bool = True) -> None:
        self.copies.append((source, target, up, stream_logs))


def record(monkeypatch: pytest.MonkeyPatch, runners: List[Runner],
           launched_nodes: int) -> None:
    """SkyPilot's record of cluster `train`, whose runners are `runners`."""
    handle = types.SimpleNamespace(launched_nodes=launched_nodes,
                                   get_command_runners=lambda: runners)

    def handle_of(cluster: str) -> Optional[Any]:
        return handle if cluster == 'train' else None

    monkeypatch.setattr(global_user_state, 'get_handle_from_cluster_name',
                        handle_of)


def test_the_file_is_copied_over_every_nodes_credentials(monkeypatch,
                                                         tmp_path):
    copies: List[Tuple[str, str, bool, bool]] = []
    record(monkeypatch, [Runner(copies), Runner(copies)], 2)
    path = tmp_path / 'renewing.yaml'
    node_key_renewal.push_to_nodes('train', path)
    assert copies == [(str(path), node_keys.NODE_PATH, True, False)] * 2
    assert node_keys.NODE_PATH == '~/.config/mithril/config.yaml'


@pytest.mark.parametrize('cluster, runners, reason', [
    ('gone', 1, 'no record of cluster'),
    ('train', 1, 'reaches 1 of the 2 nodes'),
])
def test_a_cluster_it_cannot_reach_whole_fails_the_push(
        monkeypatch, cluster, runners, reason):
    copies: List[Tuple[str, str, bool, bool]] = []
    record(monkeypatch, [Runner(copies)] * runners, 2)
    with pytest.raises(RuntimeError, match=reason):
        node_key_renewal.push_to_nodes(cluster, Path('renewing.yaml'))
    assert copies == []


def instance(fid: str, address: str, port: Optional[int] = None
             ) -> models.Instance:
    """A running instance of the cluster's bid at `address` (and `port`,
    as the emulator's local hosts say it)."""
    extra = {} if port is None else {'ssh_port': port}
    return models.Instance.model_validate({
        'fid': fid, 'name': fid, 'project': 'proj', 'created_by': 'me',
        'instance_type': 'it_a100', 'status': 'STATUS_RUNNING',
        'created_at': '2025-01-01T00:00:00Z', 'ssh_destination': address,
        **extra})


def test_the_record_must_reach_the_bids_current_nodes(monkeypatch, caplog):
    record(monkeypatch, [Runner([], ('10.0.0.2', 22)),
                         Runner([], ('10.0.0.3', 2222))], 2)
    assert node_key_renewal.records_the_nodes('train', [
        instance('inst_b', '10.0.0.3', 2222), instance('inst_a', '10.0.0.2')])
    assert caplog.text == ''

    replaced = [instance('inst_c', '10.0.0.9'),
                instance('inst_b', '10.0.0.3', 2222)]
    assert not node_key_renewal.records_the_nodes('train', replaced)
    assert "cluster 'train'" in caplog.text
    assert '10.0.0.2:22' in caplog.text and '10.0.0.9:22' in caplog.text
    assert '`sky status -r`' in caplog.text
