"""A reservation made in Mithril's console (its instances boot without
SkyPilot's key) used through the provisioner, on the emulator's real SSH
hosts: SkyPilot's key is installed through a local key pair the reservation
carries; an install that fails leaves nothing claimed."""

import datetime
import functools
import os
import pwd
import subprocess
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from sky_mithril.account import connection
from sky_mithril.account import local_keys
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.api import models
from sky_mithril.devtools import provisioning as devtools_provisioning
from sky_mithril.emulator.hosts.local import LocalPortHosts
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import key_install
from sky_mithril.provision import reservation_claims

from tests.helpers.provisioning import bids_named, point_plugin_at
from tests.helpers.reservations import reserve

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
PROVIDER = {'project_id': 'proj_emulator'}


@pytest.fixture
def ssh_hosts_emulator(monkeypatch: pytest.MonkeyPatch,
                       tmp_path: Path) -> Iterator[EmulatorServer]:
    """The emulator at 600x whose instances are real sshds on 127.0.0.1."""
    with EmulatorServer(speed=600, hosts=LocalPortHosts()) as server:
        point_plugin_at(server, monkeypatch, tmp_path / 'config')
        yield server


def _key_pair(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C',
                    path.name, '-f', str(path)], check=True)
    return path


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tuple[Path, Path]:
    """The console key (this machine's only local pair, `~/.ssh/id_ed25519`
    of a home of the test's) and SkyPilot's key (not a local pair here)."""
    home = tmp_path / 'home'
    console = _key_pair(home / '.ssh' / 'id_ed25519')
    monkeypatch.setattr(local_keys, 'local_key_pairs',
                        functools.partial(local_keys.local_key_pairs, home))
    return console, _key_pair(tmp_path / 'skypilot' / 'sky-key')


def _public(private_key: Path) -> str:
    return private_key.with_name(private_key.name + '.pub').read_text().strip()


def _console_reservation(server: EmulatorServer,
                         console_key: Path) -> models.Reservation:
    """An active reservation whose launch specification has only the
    console key, as Mithril's console makes one."""
    reservation = reserve(server, 'from-console',
                          public_key=_public(console_key))
    conn = connection.connect()
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
    while datetime.datetime.now() < deadline:
        instances = conn.client.list_instances(
            conn.project_id, reservation_fids=[reservation.fid])
        if instances and all(i.status == models.InstanceState.RUNNING and
                             i.ssh_destination for i in instances):
            return reservation
    raise AssertionError('the reservation\'s instance never ran')


def _host_authorized_keys(server: EmulatorServer, instance_fid: str) -> Path:
    """The file the instance's sshd reads, owned by its login user as on
    Mithril's image (a local host keeps it in its own folder: the hosts
    share this machine's home)."""
    hosts = server.market.hosts
    assert isinstance(hosts, LocalPortHosts)
    path = hosts.signal_file(instance_fid).parent / 'authorized_keys'
    user = pwd.getpwnam(hosts.ssh_user)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


def _opens(private_key: Path, instance_fid: str) -> bool:
    conn = connection.connect()
    [instance] = [i for i in conn.client.list_instances(conn.project_id)
                  if i.fid == instance_fid]
    return subprocess.run(
        ['ssh', '-i', str(private_key), '-p',
         str(cluster_bid.ssh_port(instance)), *key_install.SSH_OPTIONS,
         f'{cluster_bid.ssh_user_of(instance)}@{instance.ssh_destination}',
         'true'], capture_output=True, check=False).returncode == 0


def _launch(name: str, reservation: str, sky_key: Path) -> object:
    key_fid = ssh_key_fid_for(connection.connect(), _public(sky_key))
    config = devtools_provisioning.provision_config(
        {'profile': '', 'project_id': 'proj_emulator', 'api_url': '',
         'region': REGION, 'limit_price_per_hour': '32.00',
         'provision_timeout': '', 'boot_timeout': '30',
         'reservation': reservation}, key_fid, TYPE)
    return provisioner.run_instances(REGION, name, name, config)


def test_skypilots_key_is_installed_through_a_local_key_the_reservation_has(
        ssh_hosts_emulator: EmulatorServer, keys: Tuple[Path, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    console_key, sky_key = keys
    reservation = _console_reservation(ssh_hosts_emulator, console_key)
    [fid] = reservation.instances
    authorized_keys = _host_authorized_keys(ssh_hosts_emulator, fid)
    monkeypatch.setattr(key_install, 'AUTHORIZED_KEYS', str(authorized_keys))
    assert _opens(console_key, fid) and not _opens(sky_key, fid)

    record = _launch('console-res', reservation.name, sky_key)
    assert record.created_instance_ids == [fid]
    assert bids_named(ssh_hosts_emulator, 'console-res') == []
    assert _opens(sky_key, fid)

    # Installing again (a later launch) adds nothing.
    body = local_keys.key_body(_public(sky_key))
    key_install.install(
        key_install.KeyInstall(console_key, _public(sky_key)),
        [i for i in connection.connect().client.list_instances('proj_emulator')
         if i.fid == fid], timeout=10)
    assert authorized_keys.read_text().count(body) == 1
    provisioner.terminate_instances('console-res', PROVIDER)


def test_a_failed_install_leaves_nothing_claimed(
        ssh_hosts_emulator: EmulatorServer, keys: Tuple[Path, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    console_key, sky_key = keys
    reservation = _console_reservation(ssh_hosts_emulator, console_key)
    monkeypatch.setattr(key_install, 'AUTHORIZED_KEYS',
                        '/proc/no-such-place/authorized_keys')
    with pytest.raises(key_install.KeyInstallError) as failed:
        _launch('cannot-install', reservation.name, sky_key)
    assert str(console_key) in str(failed.value)
    assert reservation_claims.of_cluster('cannot-install') == []
    assert bids_named(ssh_hosts_emulator, 'cannot-install') == []
    assert _public(sky_key).split()[1] not in str(failed.value)
