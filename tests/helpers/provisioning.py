"""Helpers for tests that drive the provisioner against the emulator."""

import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest

from sky.provision import common

from sky_mithril import shared_state
from sky_mithril.account import connection
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.devtools import provisioning as devtools_provisioning
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.plugin.dashboard import shared_answers
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import project_snapshot
from sky_mithril.provision import reservation_claims
from sky_mithril.recovery import back_to_reservation
from sky_mithril.recovery import reservation_end

PUBLIC_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtestkeyforprovisionertests000000000000 me@test'


def point_plugin_at(server: EmulatorServer, monkeypatch: pytest.MonkeyPatch,
                    config_home: Path) -> None:
    """The environment a user would export for `server`: key, URL, project,
    and a config folder with no profiles. The project snapshot ages by the
    emulator's clock, as it ages by the market's time against Mithril: a
    test that moves the market's time on reads the market as it is then.
    Reservation claims, dashboard answers and jobs' moves an earlier test
    left are dropped: a new emulator gives out the same fids again (and may
    get the same port), so they would name this emulator's instances (a
    move's promise would keep a launch off its reservation)."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    for prefix in (reservation_claims.KEY_PREFIX, shared_answers.KEY_PREFIX):
        kv_cache.delete_cache_entries_by_prefix(
            f'{shared_state.KEY_PREFIX}{prefix}')
    forget_earlier_jobs()
    monkeypatch.setattr(project_snapshot, 'now',
                        lambda: server.market.clock.now().timestamp())
    monkeypatch.setenv('XDG_CONFIG_HOME', str(config_home))
    monkeypatch.setenv('MITHRIL_API_KEY', 'emulator-test-key')
    monkeypatch.setenv('MITHRIL_API_URL', server.url)
    monkeypatch.setenv('MITHRIL_PROJECT', 'proj_emulator')
    monkeypatch.delenv('MITHRIL_PROFILE', raising=False)


def forget_earlier_jobs() -> None:
    """Drops what earlier tests' jobs kept per cluster name: the lead a job
    left a reservation by (`reservation_end.remember_lead`, kept a day) and
    its moves and their promises (`back_to_reservation`), which a deploy or
    a claim reads."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    for prefix in (reservation_end.LEAD_KEY_PREFIX,
                   back_to_reservation.MOVE_KEY_PREFIX,
                   back_to_reservation.NEXT_KEY_PREFIX):
        kv_cache.delete_cache_entries_by_prefix(prefix)


def bids_named(server: EmulatorServer, name: str) -> List[Dict[str, Any]]:
    return [b for b in server.control('GET', 'state')['bids'] if b['name'] == name]


def provision_config(count: int = 1,
                     instance_type: str = 'a100-80gb.sxm.1x',
                     limit: str = '32.00',
                     timeout: str = '',
                     resume: bool = False,
                     boot_timeout: str = '') -> common.ProvisionConfig:
    """What SkyPilot passes run_instances for a launch in the emulator's
    project, with this module's SSH key registered."""
    key_fid = ssh_key_fid_for(connection.connect(), PUBLIC_KEY)
    return devtools_provisioning.provision_config(
        {'profile': '', 'project_id': 'proj_emulator', 'api_url': '',
         'region': 'us-central3-a', 'limit_price_per_hour': limit,
         'provision_timeout': timeout, 'boot_timeout': boot_timeout},
        key_fid, instance_type, count=count, resume_stopped_nodes=resume)


def launch(name: str, config: common.ProvisionConfig) -> common.ProvisionRecord:
    return provisioner.run_instances('us-central3-a', name, name, config)


def query(name: str, non_terminated_only: bool = True):
    return provisioner.query_instances(name, name, {'project_id': 'proj_emulator'},
                                       non_terminated_only=non_terminated_only)


def launch_on_manual_clock(server: EmulatorServer, name: str,
                           config: common.ProvisionConfig,
                           clearing_s: float = 120.0) -> None:
    """Launches `name`, moving a manual-clock emulator's time along (a
    quarter of a clearing at a time) until the launch returns."""
    launcher = threading.Thread(target=launch, args=(name, config))
    launcher.start()
    while launcher.is_alive():
        server.control('POST', 'advance', seconds=clearing_s / 4)
        launcher.join(0.05)


def snapshot_requests() -> int:
    """What taking the project snapshot costs in a project of fewer than 100
    live bids and instances: a list per live bid state, one of the live
    instances, and one of the reservations while any cluster (of any test)
    holds reserved instances."""
    return (len(project_snapshot.LIVE_BID_STATES) + 1 +
            int(reservation_claims.any_claim()))
