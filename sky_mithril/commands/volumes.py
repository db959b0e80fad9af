"""`sky-mithril volumes ls|create|delete|rename`: Mithril's persistent
volumes, under SkyPilot's volume type names (`mithril-file-share`,
`mithril-block`), each shown with the SkyPilot clusters that use it.

A volume a live bid uses cannot be deleted: the command says which bid and
which cluster, and that `sky down` (or `instance delete`) comes first.
"""

import dataclasses
from typing import Any, Dict, List, Optional, Sequence

import click

from sky_mithril.account import connection
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.api.models import VolumeInterface
from sky_mithril.commands import common
from sky_mithril.commands import options
from sky_mithril.commands import sky_clusters
from sky_mithril.commands.output import (CommandError, confirm, print_json,
                                         print_table, progress)
from sky_mithril.provision import project_snapshot

# SkyPilot's volume type names for Mithril's two interfaces.
VOLUME_TYPES = {
    'mithril-file-share': VolumeInterface.FILE,
    'mithril-block': VolumeInterface.BLOCK,
}
TYPE_NAMES = {interface: name for name, interface in VOLUME_TYPES.items()}


def size_gb(text: str) -> int:
    """`--size`: whole gigabytes, at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise click.BadParameter(
            f'{text!r} is not a size in GB; give a whole number of at least '
            '1, e.g. --size 100')
    return int(text)


@click.group('volumes', cls=options.Group, aliases={'list': 'ls'},
             short_help='File shares and block volumes.')
def group() -> None:
    """Persistent volumes: Mithril file shares and block devices, with the
    SkyPilot clusters using them."""


@dataclasses.dataclass(frozen=True)
class VolumeUser:
    """A live bid using a volume, and the SkyPilot cluster it backs if any."""

    bid_fid: str
    bid_name: Optional[str]
    cluster: Optional[str]

    @property
    def label(self) -> str:
        """How USED BY names it: the cluster, else the bid's name, else its fid."""
        return self.cluster or self.bid_name or self.bid_fid

    def how_to_free(self) -> str:
        """The bid, its cluster, and the command that releases the volume."""
        bid = (f'bid {self.bid_name} ({self.bid_fid})' if self.bid_name else
               f'bid {self.bid_fid}')
        if self.cluster:
            return (f'{bid}, which backs SkyPilot cluster {self.cluster}: run '
                    f'`sky down {self.cluster}` first')
        return (f'{bid}: cancel it first with `sky-mithril instance delete '
                f'{self.bid_name or self.bid_fid}`')


def volume_users(conn: connection.Connection,
                 volumes: Sequence[models.Volume]) -> Dict[str, List[VolumeUser]]:
    """Each volume's live bids (by volume fid). A bid Mithril lists but
    cannot find is kept, by fid; a terminated one is dropped."""
    bids: Dict[str, Optional[models.Bid]] = {}
    for fid in sorted({fid for volume in volumes for fid in volume.bids}):
        try:
            bids[fid] = conn.client.get_bid(fid)
        except errors.NotFoundError:
            bids[fid] = None
    clusters = sky_clusters.cluster_names_by_bid() if bids else {}
    users: Dict[str, List[VolumeUser]] = {}
    for volume in volumes:
        users[volume.fid] = []
        for fid in volume.bids:
            bid = bids[fid]
            if bid is None:
                users[volume.fid].append(VolumeUser(fid, None, None))
            elif common.is_live(bid):
                users[volume.fid].append(
                    VolumeUser(fid, bid.name, clusters.get(bid.name)))
    return users


def volume_json(volume: models.Volume,
                users: List[VolumeUser]) -> Dict[str, Any]:
    """One volume as `volumes ls --json` prints it."""
    return {
        'fid': volume.fid,
        'name': volume.name,
        'type': TYPE_NAMES[volume.interface],
        'interface': volume.interface.value,
        'region': volume.region,
        'size_gb': volume.capacity_gb,
        'created_at': volume.created_at.isoformat(),
        'used_by': [dataclasses.asdict(user) for user in users],
        'attachments': dict(volume.attachments),
    }


def find_volume(volumes: Sequence[models.Volume], name_or_fid: str,
                project: str) -> models.Volume:
    """The volume with that fid or name; otherwise an error listing the
    names there are."""
    matches = [v for v in volumes if name_or_fid in (v.fid, v.name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        fids = ', '.join(f'{v.fid} in {v.region}' for v in matches)
        raise CommandError(f'{len(matches)} volumes are named {name_or_fid!r} '
                           f'({fids}); name one by its fid.')
    names = ', '.join(sorted(v.name for v in volumes))
    there = f'its volumes: {names}' if names else 'it has no volumes'
    raise CommandError(f'No volume {name_or_fid!r} in project {project}; '
                       f'{there}.')


def _reason(error: errors.ValidationError) -> str:
    """The server's own words for a 422, as one sentence."""
    text = (errors.format_validation_detail(error.detail)
            if error.detail else str(error))
    return f'{text.rstrip(".")}.'


# ls


@group.command('ls', epilog=options.examples(
    'sky-mithril volumes ls', 'sky-mithril volumes ls -r us-central3-a --json'))
@click.option('-r', '--region',
              help='only this region\'s volumes. In `sky status`, -r is '
              '--refresh')
@options.json_option('the volumes')
def list_volumes(region: Optional[str], as_json: bool) -> int:
    """Volumes and the clusters using them (alias: list)."""
    conn = common.connect()
    try:
        if region:
            common.check_region(region, conn.client.list_spot_availability())
        volumes = conn.client.list_volumes(conn.project_id, region=region)
        users = volume_users(conn, volumes)
    finally:
        conn.client.close()
    volumes = sorted(volumes, key=lambda v: (v.name, v.region))
    if as_json:
        print_json([volume_json(v, users[v.fid]) for v in volumes])
        return 0
    if not volumes:
        where = f' in {region}' if region else ''
        print(f'No volumes{where}. `sky-mithril volumes create NAME --region '
              'REGION --size GB` creates one.')
        return 0
    print_table(('NAME', 'TYPE', 'REGION', 'SIZE (GB)', 'FID', 'USED BY'),
                [(v.name, TYPE_NAMES[v.interface], v.region,
                  str(v.capacity_gb), v.fid,
                  ', '.join(u.label for u in users[v.fid]) or '-')
                 for v in volumes])
    return 0


# create


def _create(conn: connection.Connection, name: str, region: str, size: int,
            interface: VolumeInterface) -> models.Volume:
    """POSTs the volume; when the answer was lost, finds it by its name."""
    try:
        return conn.client.create_volume(conn.project_id, name, region, size,
                                         interface)
    except errors.ValidationError as e:
        raise CommandError(f'Mithril refused to create volume {name!r}: '
                           f'{_reason(e)}') from e
    except errors.AmbiguousResponseError:
        created = [v for v in conn.client.list_volumes(conn.project_id,
                                                       region=region)
                   if v.name == name]
        if len(created) == 1:
            return created[0]
        raise


@group.command('create', epilog=options.examples(
    'sky-mithril volumes create ckpt -r us-central3-a --size 100',
    'sky-mithril volumes create scratch -r us-central3-a --size 500 --type mithril-block'))
@click.argument('name', metavar='NAME')
@click.option('-r', '--region', required=True,
              help='a Mithril region, e.g. us-central3-a')
@click.option('--size', 'size', type=options.Parsed('GB', size_gb),
              required=True, help='capacity in whole GB')
@click.option('--type', 'volume_type', type=options.Choice(list(VOLUME_TYPES)),
              default='mithril-file-share',
              help='mithril-file-share (a shared file system, mounted at '
              '/mnt/NAME; the default) or mithril-block (a block device)')
def create_volume(name: str, region: str, size: int, volume_type: str) -> int:
    """Create a volume; prints its fid."""
    conn = common.connect()
    try:
        common.check_region(region, conn.client.list_spot_availability())
        taken = [v for v in conn.client.list_volumes(conn.project_id)
                 if v.name == name]
        if taken:
            raise CommandError(
                f'A volume is already named {name!r} ({taken[0].fid} in '
                f'{taken[0].region}); choose another name.')
        with project_snapshot.changing(conn):
            volume = _create(conn, name, region, size,
                             VOLUME_TYPES[volume_type])
    finally:
        conn.client.close()
    progress(f'Created {volume_type} volume {volume.name}: '
             f'{volume.capacity_gb} GB in {volume.region}.')
    print(volume.fid)
    return 0


# delete


def _in_use(volume: models.Volume, users: List[VolumeUser]) -> CommandError:
    return CommandError(
        f'Volume {volume.name} ({volume.fid}) is attached to ' +
        '; '.join(user.how_to_free() for user in users) +
        ', then delete the volume.')


@group.command('delete', short_help='Delete a volume and its data.',
               epilog=options.examples(
    'sky-mithril volumes delete ckpt', 'sky-mithril volumes delete vol_abc123 -y'))
@click.argument('volume_name_or_fid', metavar='NAME_OR_FID')
@options.YES
def delete_volume(volume_name_or_fid: str, yes: bool) -> int:
    """Delete a volume and its data; refused while a live bid uses it,
    naming the bid and the command that frees it."""
    conn = common.connect()
    try:
        volume = find_volume(conn.client.list_volumes(conn.project_id),
                             volume_name_or_fid, conn.project_id)
        users = volume_users(conn, [volume])[volume.fid]
        if users:
            raise _in_use(volume, users)
        if not confirm(f'Delete volume {volume.name} ({volume.fid}, '
                       f'{volume.capacity_gb} GB in {volume.region}) and '
                       'all its data?', yes):
            return 1
        try:
            with project_snapshot.changing(conn):
                conn.client.delete_volume(volume.fid)
        except errors.ConflictError as e:
            # A bid took the volume since it was read: name it as above.
            now = [v for v in conn.client.list_volumes(conn.project_id)
                   if v.fid == volume.fid]
            users = volume_users(conn, now)[volume.fid] if now else []
            if users:
                raise _in_use(volume, users) from e
            raise
        except errors.NotFoundError:
            print(f'Volume {volume.name} ({volume.fid}) is already gone.')
            return 0
    finally:
        conn.client.close()
    print(f'Deleted volume {volume.name} ({volume.fid}).')
    return 0


# rename


@group.command('rename', epilog=options.examples(
    'sky-mithril volumes rename ckpt ckpt-old'))
@click.argument('volume_name_or_fid', metavar='OLD')
@click.argument('new_name', metavar='NEW')
def rename_volume(volume_name_or_fid: str, new_name: str) -> int:
    """Give a volume (OLD: its name or fid) a new name."""
    conn = common.connect()
    try:
        volumes = conn.client.list_volumes(conn.project_id)
        volume = find_volume(volumes, volume_name_or_fid, conn.project_id)
        if new_name == volume.name:
            print(f'Volume {volume.fid} is already named {volume.name}.')
            return 0
        taken = [v for v in volumes if v.name == new_name]
        if taken:
            raise CommandError(
                f'A volume is already named {new_name!r} '
                f'({taken[0].fid}); choose another name.')
        try:
            with project_snapshot.changing(conn):
                conn.client.rename_volume(volume.fid, new_name)
        except errors.ValidationError as e:
            raise CommandError(f'Mithril refused the name {new_name!r}: '
                               f'{_reason(e)}') from e
    finally:
        conn.client.close()
    print(f'Renamed volume {volume.name} ({volume.fid}) to {new_name}.')
    return 0
