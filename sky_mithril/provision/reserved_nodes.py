"""A cluster on a reservation's instances: finding the reservation, claiming
free instances exactly once (`reservation_claims`), adding the task's volumes
to the reservation, resuming, pausing and giving them back clean, and reading
their statuses through the truth table.

Reserved capacity is paid for at the reservation's creation, so a cluster on
it adds nothing to the bill: `sky stop` pauses its instances (pause credit
after an hour), `sky start` resumes them, `sky down` pauses them, resets their
boot disks and releases the claims. Capacity goes back for credit only
through `sky-mithril reservations return`.

On a node (autostop, autodown) there is no claims database: the cluster's
instances are read from NODE_FILE, which the launch stages for the nodes. It
names its cluster: a node also launches other clusters (a jobs controller on
reserved instances launches each job's), which are never on its instances.
"""

import datetime
import enum
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from sky import sky_logging
from sky.provision import common
from sky.utils import status_lib

from sky_mithril import shared_state
from sky_mithril.account import connection
from sky_mithril.account import local_keys
from sky_mithril.account import node_keys
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import interrupts
from sky_mithril.provision import key_install
from sky_mithril.provision import node_key_renewal
from sky_mithril.provision import project_snapshot
from sky_mithril.provision import reservation_claims
from sky_mithril.provision import status_table

logger = sky_logging.init_logger('sky.sky_mithril.provision')

_I = models.InstanceState
CLAIMABLE = (_I.NEW, _I.CONFIRMED, _I.SCHEDULED, _I.INITIALIZING,
             _I.STARTING, _I.RUNNING, _I.PAUSED, _I.STOPPING, _I.STOPPED)
_GONE = (_I.TERMINATED, _I.REPLACED)
# Reservations not over: an ended or canceled one's instances are gone.
LIVE_RESERVATION = (models.ReservationState.ACTIVE,
                    models.ReservationState.PENDING,
                    models.ReservationState.PAUSED)
# Instances whose host is up: volumes added to the reservation reach them
# only at their next start (the others boot, or resume, with them).
_BOOTED = (_I.STARTING, _I.RUNNING)
POLL_SECONDS = 2.0
PAUSE_CONFIRM_SECONDS = 300.0
# Where a node finds the reserved instances of its cluster (autostop/autodown).
NODE_FILE = '~/.sky/mithril/reserved-instances.json'


class ReservationError(ValueError):
    """A reservation the task names cannot be used; the message says why
    and what to do."""


class Outcome(enum.Enum):
    """What `ReservedNodes.claim`/`held_by` did."""

    CLAIMED = 'claimed'  # Free instances newly claimed for the cluster.
    RESUMED = 'resumed'  # The cluster's paused instances resumed.
    ADOPTED = 'adopted'  # The cluster's instances used as they were.


def find(conn: connection.Connection, name_or_fid: str) -> models.Reservation:
    """The project's reservation of that fid, else of that name (a live one
    before an ended one)."""
    return find_each(conn, [name_or_fid])[0]


def find_each(conn: connection.Connection,
              names_or_fids: Sequence[str]) -> List[models.Reservation]:
    """`find` for each of `names_or_fids`, in order, from one listing of the
    project's reservations."""
    reservations = conn.client.list_reservations(conn.project_id)
    return [_match(conn, reservations, n) for n in names_or_fids]


def _match(conn: connection.Connection,
           reservations: List[models.Reservation],
           name_or_fid: str) -> models.Reservation:
    """The reservation `find` picks among `reservations`; ReservationError
    naming the fix when there is none."""
    matches = ([r for r in reservations if r.fid == name_or_fid] or
               [r for r in reservations if r.name == name_or_fid])
    if not matches:
        names = ', '.join(sorted({r.name for r in reservations})) or 'none'
        raise ReservationError(
            f'config.mithril.reservation names {name_or_fid!r}, but project '
            f'{conn.project_id} has no reservation of that name or fid (its '
            f'reservations: {names}). `sky-mithril reservations list` shows '
            'them; `sky-mithril reservations create` buys one.')
    return sorted(matches, key=lambda r: (r.status not in LIVE_RESERVATION,
                                          r.start_time))[0]


def mismatch(reservation: models.Reservation, instance_type_fid: str,
             instance_type: str, region: str) -> Optional[str]:
    """Why the reservation cannot hold a node of this type and region."""
    if reservation.instance_type != instance_type_fid:
        return (f'reservation {reservation.name} ({reservation.fid}) holds '
                f'another instance type than {instance_type}')
    if reservation.region and reservation.region != region:
        return (f'reservation {reservation.name} ({reservation.fid}) is in '
                f'{reservation.region}, not {region}')
    return None


def _instances(conn: connection.Connection,
               reservation_fid: str) -> List[models.Instance]:
    return conn.client.list_instances(conn.project_id,
                                      reservation_fids=[reservation_fid])


def free_instances(conn: connection.Connection,
                   reservation: models.Reservation) -> List[models.Instance]:
    """The reservation's instances no live SkyPilot cluster holds, running
    ones first (they need no resume)."""
    return _unclaimed(reservation, _instances(conn, reservation.fid))


def _unclaimed(reservation: models.Reservation,
               instances: Sequence[models.Instance]) -> List[models.Instance]:
    claims = reservation_claims.on(reservation.fid)
    free = [i for i in instances
            if i.status in CLAIMABLE and
            (i.fid not in claims or reservation_claims.is_stale(claims[i.fid]))]
    return sorted(free, key=lambda i: (i.status != _I.RUNNING, i.fid))


def list_instances(conn: connection.Connection,
                   reservations: Sequence[models.Reservation]
                   ) -> List[models.Instance]:
    """The instances of all `reservations`, in one listing."""
    return conn.client.list_instances(
        conn.project_id, reservation_fids=sorted({r.fid for r in reservations}))


def free_counts(reservations: Sequence[models.Reservation],
                instances: Sequence[models.Instance]) -> Dict[str, int]:
    """How many of each reservation's `instances` (`list_instances`) no
    live SkyPilot cluster holds, by reservation fid."""
    return {r.fid: len(_unclaimed(r, [i for i in instances
                                       if i.reservation == r.fid]))
            for r in reservations}


def first_with_room(reservations: Sequence[models.Reservation],
                    free: Mapping[str, int], nodes: int,
                    now: datetime.datetime, lead: datetime.timedelta,
                    taken: Mapping[str, int]
                    ) -> Tuple[Optional[models.Reservation], Dict[str, str]]:
    """The first of `reservations` that `nodes` fit on whole now
    (`why_not_now`), its `free` instances less those `taken` (promised to
    other clusters' moves) counted, both by fid; else None and why not,
    by fid. Every launch, move and relaunch picks its reservation here."""
    whys: Dict[str, str] = {}
    for reservation in reservations:
        why = why_not_now(reservation, free.get(reservation.fid, 0), nodes,
                          now, lead, taken.get(reservation.fid, 0))
        if why is None:
            return reservation, {}
        whys[reservation.fid] = why
    return None, whys


def why_not_now(reservation: models.Reservation, free: int, quantity: int,
                now: datetime.datetime, lead: datetime.timedelta,
                promised: int = 0) -> Optional[str]:
    """Why `quantity` nodes cannot go on the reservation `now` (Mithril's
    clock; None: they can), `promised` of its `free` instances being other
    clusters' moves'. One that ends within `lead` (the managed job's lead
    time, `recovery.policy.resolve_reservation_end_lead`) takes no launch:
    a job would have to move off it again at once."""
    where = f'reservation {reservation.name} ({reservation.fid})'
    if reservation.status == models.ReservationState.PENDING:
        return f'{where} starts at {reservation.start_time.isoformat()}'
    if reservation.status != models.ReservationState.ACTIVE:
        return f'{where} is {reservation.status}'
    if reservation.end_time - now <= lead:
        return (f'{where} ends at {reservation.end_time.isoformat()}, within '
                f'the job\'s lead time ({lead.total_seconds() / 60:.0f} min)')
    if free - promised < quantity:
        promises = (f' ({promised} promised to managed jobs moving onto it)'
                    if promised else '')
        return (f'{where} has {free} of its {reservation.instance_quantity} '
                f'instances free{promises}; the cluster needs {quantity}')
    return None


def add_volumes(conn: connection.Connection, reservation_fid: str,
                volume_fids: Sequence[str]) -> List[str]:
    """Adds the task's volumes the reservation's launch specification lacks
    (read afresh: another launch may have added some) to it, keeping its
    other volumes; they attach at each instance's next start. Returns those
    added. ReservationError, naming the volumes and Mithril's reason, when
    Mithril refuses them (a block volume another order holds, one in
    another region)."""
    if not volume_fids:
        return []
    reservation = find(conn, reservation_fid)
    current = list(reservation.launch_specification.volumes)
    missing = [fid for fid in volume_fids if fid not in current]
    if not missing:
        return []
    where = f'reservation {reservation.name} ({reservation.fid})'
    try:
        with interrupts.deferred(), project_snapshot.changing(conn):
            conn.client.update_reservation(reservation.fid,
                                           volumes=current + missing)
    except (errors.ValidationError, errors.ConflictError,
            errors.PermissionDeniedError, errors.NotFoundError) as e:
        raise ReservationError(f'{where} cannot take the task\'s volume(s) '
                               f'{", ".join(missing)}: {e}') from e
    logger.info(f'Added the task\'s volume(s) {", ".join(missing)} to {where} '
                '(its other volumes kept); they attach at each instance\'s '
                'next start.')
    return missing


def check_ssh_key(conn: connection.Connection,
                  reservation: models.Reservation,
                  ssh_key_fid: str) -> Optional[key_install.KeyInstall]:
    """The reservation's instances boot with the keys given at its creation.
    None when SkyPilot's key is one of them; else how SkyPilot's key gets on
    them: through a local key pair that is one of them (as `sky-mithril ssh`
    matches one). ReservationError, before anything is claimed, when no
    local key pair is."""
    keys = reservation.launch_specification.ssh_keys
    if ssh_key_fid in keys:
        return None
    project_keys = conn.client.list_ssh_keys(conn.project_id)
    identity = local_keys.matching_private_key(keys, project_keys)
    skypilots = [k for k in project_keys if k.fid == ssh_key_fid]
    if identity is not None and skypilots:
        logger.info(f'Reservation {reservation.name} ({reservation.fid}) was '
                    f'created without SkyPilot\'s SSH key; it is installed on '
                    f'the instances with {identity} once they run.')
        return key_install.KeyInstall(identity, skypilots[0].public_key)
    names = {k.fid: k.name for k in project_keys}
    listed = ', '.join(f'{names.get(fid, "?")} ({fid})' for fid in keys) or 'none'
    raise ReservationError(
        f'Reservation {reservation.name} ({reservation.fid}) was created '
        f'without SkyPilot\'s SSH key ({ssh_key_fid}), and a reservation\'s '
        f'keys cannot change: its keys are {listed}, and no local key pair '
        f'({local_keys.LOCAL_KEY_PLACES}) is one of them. Put one of those '
        'private keys in ~/.ssh (with its .pub beside it): the launch then '
        'installs SkyPilot\'s key on the instances through it. Or buy '
        'reservations with `sky-mithril reservations create`, which puts '
        'SkyPilot\'s key in them; or drop config.mithril.reservation to run '
        'on spot.')


def node_file_path(cluster_name_on_cloud: str) -> Path:
    """The local copy of NODE_FILE for one cluster, staged for its nodes."""
    return (Path('~/.sky/mithril/clusters').expanduser() /
            cluster_name_on_cloud / 'reserved-instances.json')


def stage_node_file(cluster_name_on_cloud: str) -> Path:
    """Writes the staged file from the cluster's claims now, empty when it
    holds none: a file left by an earlier cluster of the name (one that took
    itself down keeps its folder here) must never reach a node of this one,
    whose autostop would pause those instances instead of its bid."""
    return _write_node_file(cluster_name_on_cloud,
                            reservation_claims.of_cluster(cluster_name_on_cloud))


def _write_node_file(cluster_name_on_cloud: str,
                     claims: List[reservation_claims.Claim]) -> Path:
    path = node_file_path(cluster_name_on_cloud)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        'cluster': cluster_name_on_cloud,
        'reservation': claims[0].reservation_fid,
        'instances': [c.instance_fid for c in claims]} if claims else {}),
                    encoding='utf-8')
    return path


def _from_node_file(cluster_name_on_cloud: str) -> Optional[Dict[str, Any]]:
    """The node's staged instances, if this node is one of that cluster's."""
    path = Path(NODE_FILE).expanduser()
    try:
        staged = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    if staged.get('cluster') != cluster_name_on_cloud:
        return None
    return staged if staged.get('instances') else None


def _autodown_set(cluster_name: str) -> bool:
    """Whether SkyPilot's record of the cluster has autodown armed."""
    from sky import global_user_state  # pylint: disable=import-outside-toplevel
    record = global_user_state.get_cluster_from_name(cluster_name)
    if not record or not record.get('to_down'):
        return False
    autostop = record.get('autostop')
    return autostop is not None and autostop >= 0


def held_reservation(claims: Sequence[reservation_claims.Claim],
                     instances: Sequence[models.Instance]) -> Optional[str]:
    """The reservation of a cluster's `claims` while one of their instances
    is among `instances` (its reservation's, as listed); None when there are
    no claims, and once none is left (the reservation ended, or they were
    returned). The deploy step and the provisioner both decide here; only
    the provisioner, which lists afresh, acts on it (`still_held`)."""
    left = {i.fid for i in instances if i.status not in _GONE}
    if any(c.instance_fid in left for c in claims):
        return claims[0].reservation_fid
    return None


def still_held(cluster_name_on_cloud: str,
               instances: Sequence[models.Instance]) -> Optional[str]:
    """In the provisioner, `held_reservation` of the cluster's claims among
    `instances` (its reservation's, listed now): once none is left the
    claims are released and the nodes' file staged empty (autostop there
    would take them for the cluster's), and the launch starts afresh. Never
    on a cached listing: it would free instances claimed since."""
    claims = reservation_claims.of_cluster(cluster_name_on_cloud)
    held = held_reservation(claims, instances)
    if held is not None or not claims:
        return held
    logger.info('The cluster\'s reserved instances are gone (the reservation '
                'ended, or they were returned); launching afresh.')
    reservation_claims.release(claims)
    stage_node_file(cluster_name_on_cloud)
    return None


class ReservedNodes:
    """The reserved instances one cluster holds, head first."""

    def __init__(self, conn: connection.Connection, reservation_fid: str,
                 instance_fids: List[str], outcome: Outcome,
                 claims: List[reservation_claims.Claim],
                 on_node: bool = False,
                 key_to_install: Optional[key_install.KeyInstall] = None,
                 volumes_added: Sequence[str] = ()) -> None:
        self.conn = conn
        self.on_node = on_node
        self.reservation_fid = reservation_fid
        self.instance_fids = instance_fids
        self.outcome = outcome
        self._claims = claims
        self._resumed: List[str] = []
        self._key_to_install = key_to_install
        self._volumes_added = list(volumes_added)

    @classmethod
    def held_by(cls, conn: connection.Connection,
                cluster_name_on_cloud: str) -> Optional['ReservedNodes']:
        """The cluster's reserved instances, from its claims (on one of its
        nodes, from NODE_FILE); None for a cluster on a spot bid."""
        claims = reservation_claims.of_cluster(cluster_name_on_cloud)
        if claims:
            return cls(conn, claims[0].reservation_fid,
                       [c.instance_fid for c in claims], Outcome.ADOPTED,
                       claims)
        staged = _from_node_file(cluster_name_on_cloud)
        if staged is None:
            return None
        return cls(conn, staged['reservation'], list(staged['instances']),
                   Outcome.ADOPTED, [], on_node=True)

    @classmethod
    def still_held_by(cls, conn: connection.Connection,
                      cluster_name_on_cloud: str) -> Optional['ReservedNodes']:
        """`held_by`, but None once none of the instances is left
        (`still_held`)."""
        held = cls.held_by(conn, cluster_name_on_cloud)
        if held is None or held.on_node or still_held(cluster_name_on_cloud,
                                                      held.instances()):
            return held
        return None

    @classmethod
    def claim(cls, conn: connection.Connection,
              reservation: models.Reservation, cluster_name: str,
              cluster_name_on_cloud: str, quantity: int,
              lead: datetime.timedelta,
              key_to_install: Optional[key_install.KeyInstall] = None,
              volume_fids: Sequence[str] = ()) -> 'ReservedNodes':
        """Claims `quantity` free instances for a new cluster, all or none,
        on a reservation that ends later than `lead` from now, besides those
        promised to other clusters' moves (`back_to_reservation.promised`),
        whose launch specification takes the task's `volume_fids`
        (`add_volumes`; the claims are released if it does not);
        ReservationError says why not. `key_to_install` (`check_ssh_key`)
        goes on the instances once they run, and instances booted without
        added volumes restart with them (`wait_until_ready`). Claims of
        ended reservations whose cluster is gone are pruned first; a
        failure to prune is reported, never raised."""
        try:
            reservation_claims.prune_ended()
        except Exception as e:  # pylint: disable=broad-except
            logger.warning('Could not prune the claims of ended '
                           f'reservations: {e}')
        # Imported here: back_to_reservation imports this module.
        from sky_mithril.recovery import back_to_reservation  # pylint: disable=import-outside-toplevel
        with reservation_claims.lock(reservation.fid):
            free = free_instances(conn, reservation)
            now = conn.client.server_now()
            # Other clusters' moves' promises are read, and the claims
            # written, under the moves' lock: a poll deciding a move reads
            # the claims under it, so one free instance goes to either.
            with shared_state.held(back_to_reservation.LOCK):
                why = why_not_now(
                    reservation, len(free), quantity, now, lead,
                    back_to_reservation.promised(cluster_name).get(
                        reservation.fid, 0))
                if why is not None:
                    raise ReservationError(why)
                chosen = free[:quantity]
                stale = [c for fid, c in
                         reservation_claims.on(reservation.fid).items()
                         if fid in {i.fid for i in chosen}]
                reservation_claims.release(stale)
                claims = reservation_claims.write(reservation,
                                                  [i.fid for i in chosen],
                                                  cluster_name,
                                                  cluster_name_on_cloud)
            try:
                volumes_added = add_volumes(conn, reservation.fid,
                                            volume_fids)
            except BaseException:
                reservation_claims.release(claims)
                raise
        _write_node_file(cluster_name_on_cloud, claims)
        logger.info(f'Claimed {quantity} instance(s) of reservation '
                    f'{reservation.name} ({reservation.fid}): '
                    f'{", ".join(c.instance_fid for c in claims)}.')
        return cls(conn, reservation.fid, [c.instance_fid for c in claims],
                   Outcome.CLAIMED, claims, key_to_install=key_to_install,
                   volumes_added=volumes_added)

    def add_task_volumes(self, volume_fids: Sequence[str]) -> None:
        """A relaunch or `sky start` of the cluster: the task's volumes the
        reservation lacks are added to it (`add_volumes`, under the
        reservation's lock as a first launch does), and the instances that
        run restart with them (`wait_until_ready`). The cluster holds the
        instances, so it cannot go to spot instead: ReservationError, naming
        the fix, when Mithril refuses a volume."""
        if not volume_fids:
            return
        try:
            with reservation_claims.lock(self.reservation_fid):
                self._volumes_added = add_volumes(self.conn,
                                                  self.reservation_fid,
                                                  volume_fids)
        except ReservationError as e:
            raise ReservationError(
                f'{str(e).rstrip(".")}. The cluster runs on the '
                'reservation\'s instances, so it cannot go on a spot bid '
                'instead: launch without those volumes, or `sky down` the '
                'cluster and launch again (a new cluster bids on spot with '
                'them when the reservation cannot take them).') from e

    def reservation(self) -> Optional[models.Reservation]:
        for r in self.conn.client.list_reservations(self.conn.project_id):
            if r.fid == self.reservation_fid:
                return r
        return None

    def instances(self) -> List[models.Instance]:
        """The cluster's instances that still exist, head first."""
        return self._held(_instances(self.conn, self.reservation_fid))

    def _held(self, instances: List[models.Instance]) -> List[models.Instance]:
        """Of the reservation's `instances`, the cluster's that still exist,
        head first."""
        by_fid = {i.fid: i for i in instances if i.status not in _GONE}
        return [by_fid[fid] for fid in self.instance_fids if fid in by_fid]

    def wait_until_ready(self, boot_timeout: float) -> List[models.Instance]:
        """Pauses newly claimed instances that booted before the task's
        volumes were added to the reservation (`_pause_for_volumes`),
        resumes paused instances, waits until every node has an SSH
        destination, and installs SkyPilot's key on newly claimed ones of a
        reservation made without it; on any failure or interrupt what this
        launch did is undone (`undo`)."""
        try:
            instances = self.instances()
            if len(instances) < len(self.instance_fids):
                raise ReservationError(
                    f'{len(self.instance_fids) - len(instances)} of the '
                    'cluster\'s reserved instances no longer exist (returned, '
                    'or the reservation ended); `sky down` and launch again.')
            deadline = time.monotonic() + boot_timeout
            restarting = self._pause_for_volumes(instances, deadline)
            stopping = [i.fid for i in instances if i.status == _I.STOPPING]
            if stopping:
                # A `sky start` right after `sky stop`: Mithril refuses to
                # resume an instance until its stop has finished.
                self._wait_for(stopping, (_I.PAUSED, _I.STOPPED), deadline,
                               'to be resumed')
            if restarting or stopping:
                instances = self.instances()
            paused = [i.fid for i in instances
                      if i.status in (_I.PAUSED, _I.STOPPING, _I.STOPPED)]
            if paused:
                with interrupts.deferred(), \
                        project_snapshot.changing(self.conn):
                    self.conn.client.set_instances_paused(paused, paused=False)
                # Those that ran before this launch are not paused again
                # by its undo: it leaves them as a launch without volumes
                # to add would (`undo`).
                self._resumed = [fid for fid in paused
                                 if fid not in restarting]
                if self.outcome == Outcome.ADOPTED:
                    self.outcome = Outcome.RESUMED
                logger.info(f'Resuming {len(paused)} paused reserved '
                            'instance(s); Mithril may first give a spot user '
                            'its 5-minute notice.')
            instances = self._wait(boot_timeout)
            if self._key_to_install is not None:
                key_install.install(self._key_to_install, instances,
                                    boot_timeout)
            return instances
        except BaseException as e:
            self.undo(e)
            raise

    def _pause_for_volumes(self, instances: List[models.Instance],
                           deadline: float) -> List[str]:
        """Pauses the instances whose host was up when this launch added
        volumes to the reservation (once they run: a booting one cannot be
        paused), and waits until they are paused, so that resuming them
        starts their hosts with the volumes. Returns their fids."""
        booted = [i.fid for i in instances if i.status in _BOOTED]
        if not self._volumes_added or not booted:
            return []
        logger.info(f'Restarting reserved instance(s) {", ".join(booted)} '
                    '(pause, then resume): they booted before volume(s) '
                    f'{", ".join(self._volumes_added)} were added to the '
                    'reservation, and volumes attach at an instance\'s next '
                    'start.')
        purpose = 'to attach the task\'s volumes'
        self._wait_for(booted, (_I.RUNNING,), deadline, purpose)
        with interrupts.deferred(), project_snapshot.changing(self.conn):
            self.conn.client.set_instances_paused(booted, paused=True)
        self._wait_for(booted, (_I.PAUSED,), deadline, purpose)
        return booted

    def _wait_for(self, fids: List[str], statuses: Sequence[str],
                  deadline: float, purpose: str) -> None:
        """Waits until each of the instances `fids` is in one of
        `statuses`; ReservationError naming `purpose` at `deadline`
        (time.monotonic)."""
        while True:
            now = {i.fid: i.status for i in self.instances() if i.fid in fids}
            if len(now) == len(fids) and all(s in statuses
                                             for s in now.values()):
                return
            if time.monotonic() > deadline:
                raise ReservationError(
                    'Reserved instances did not get to '
                    f'{"/".join(statuses)} in time {purpose} '
                    f'({", ".join(f"{fid}: {s}" for fid, s in now.items())}); '
                    'raise config.mithril.boot_timeout or try again.')
            time.sleep(POLL_SECONDS)

    def _wait(self, boot_timeout: float) -> List[models.Instance]:
        deadline = time.monotonic() + boot_timeout
        while True:
            instances = self.instances()
            if (len(instances) == len(self.instance_fids) and
                    all(i.status in (_I.STARTING, _I.RUNNING) and
                        i.ssh_destination for i in instances)):
                return instances
            if any(i.status == _I.ERROR for i in instances):
                raise ReservationError(
                    'A reserved instance reports an error: '
                    f'{", ".join(i.fid for i in instances if i.status == _I.ERROR)}.')
            if time.monotonic() > deadline:
                raise ReservationError(
                    f'Reserved instances not reachable after {boot_timeout:.0f}s '
                    f'({", ".join(f"{i.fid}: {i.status}" for i in instances)}); '
                    'raise config.mithril.boot_timeout or try again.')
            time.sleep(POLL_SECONDS)

    def undo(self, cause: BaseException) -> None:
        """Reverses this launch: instances it resumed are paused again, then
        its new claims released (the instances stay in the reservation).
        Instances that could not be paused again keep their claims: they run
        as this launch left them (SkyPilot's key installed, the head's ports
        forwarded), and a released one would be the next launch's as it is.
        SkyPilot's teardown of the failed launch, or `sky down`, gives them
        back clean (`give_back`)."""
        logger.info(f'Undoing the launch on reservation '
                    f'{self.reservation_fid} ({type(cause).__name__}).')
        if self._resumed:
            try:
                with interrupts.deferred(), \
                        project_snapshot.changing(self.conn):
                    self.conn.client.set_instances_paused(self._resumed,
                                                          paused=True)
            except Exception as e:  # pylint: disable=broad-except
                logger.warning(
                    f'Could not pause reserved instance(s) '
                    f'{", ".join(self._resumed)} again: {e} The cluster keeps '
                    'them, so that its teardown (`sky down`) gives them back '
                    'clean.')
                return
        if self.outcome != Outcome.CLAIMED:
            return
        try:
            reservation_claims.release(self._claims)
        except Exception as e:  # pylint: disable=broad-except
            logger.warning(f'Could not release the launch\'s claims on '
                           f'reservation {self.reservation_fid}: {e} `sky '
                           'down` releases them.')

    def pause(self) -> None:
        """`sky stop`: pauses the running instances (asynchronous)."""
        running = [i.fid for i in self.instances()
                   if i.status not in (_I.PAUSED, _I.STOPPING, _I.STOPPED)]
        if running:
            with interrupts.deferred(), project_snapshot.changing(self.conn):
                self.conn.client.set_instances_paused(running, paused=True)
            logger.info(f'Paused reserved instance(s) {", ".join(running)}; '
                        'a pause earns credit once it has lasted an hour '
                        '(`sky-mithril reservations info` shows it).')

    def give_back(self) -> None:
        """`sky down`: pauses the instances, resets their boot disks (the next
        cluster finds them clean) and releases the claims. The capacity stays
        in the reservation."""
        self.pause()
        deadline = time.monotonic() + PAUSE_CONFIRM_SECONDS
        while True:
            instances = self.instances()
            if all(i.status == _I.PAUSED for i in instances):
                break
            if time.monotonic() > deadline:
                raise ReservationError(
                    'Reserved instances did not pause within '
                    f'{PAUSE_CONFIRM_SECONDS:.0f}s '
                    f'({", ".join(f"{i.fid}: {i.status}" for i in instances)}); '
                    'run `sky down` again.')
            time.sleep(POLL_SECONDS)
        for instance in instances:
            try:
                self.conn.client.refresh_boot_disk(instance.fid)
            except errors.NotFoundError:
                continue
        reservation_claims.release(self._claims)
        logger.info(f'Gave {len(self.instance_fids)} instance(s) back to '
                    f'reservation {self.reservation_fid} with fresh boot '
                    'disks; they stay reserved (paused) for the next launch.')

    def statuses(self, cluster_name: str, cluster_name_on_cloud: str,
                 non_terminated_only: bool,
                 snapshot: project_snapshot.Snapshot
                 ) -> status_table.NodeStatuses:
        """The nodes' statuses, from the project's `snapshot` (taken with
        its reservations). They are read live instead when the snapshot
        shows a node gone (SkyPilot forgets a cluster it reads gone), and
        before a cluster whose node took itself down is given back here; it
        then reads gone. A node's autodown pauses the instances (a paused
        node cannot reset its own disk) and revokes the cluster's node keys
        (`node_keys.revoked_by_teardown`); instances paused in Mithril's
        console read paused too, but keep their live key and their disks,
        which are the user's. When every node is UP, the nodes' key is
        renewed if it nears its expiry, as a spot cluster's is
        (`node_key_renewal`; most refreshes decide that without a
        request)."""
        instances = self._held(
            snapshot.reserved_instances(self.reservation_fid))
        statuses = self._statuses(snapshot.reservation(self.reservation_fid),
                                  instances, non_terminated_only)
        if (self._reads_a_node_gone(statuses) or
                self._all_paused_with_autodown(cluster_name, statuses)):
            instances = self.instances()
            statuses = self._statuses(self.reservation(), instances,
                                      non_terminated_only)
        if (self._all_paused_with_autodown(cluster_name, statuses) and
                node_keys.revoked_by_teardown(self.conn,
                                              cluster_name_on_cloud)):
            self.give_back()
            return {}
        if (len(statuses) == len(self.instance_fids) and
                all(status == status_lib.ClusterStatus.UP
                    for status, _ in statuses.values())):
            node_key_renewal.renew_if_due(self.conn, cluster_name,
                                          cluster_name_on_cloud, instances)
        return statuses

    @staticmethod
    def _statuses(reservation: Optional[models.Reservation],
                  instances: List[models.Instance],
                  non_terminated_only: bool) -> status_table.NodeStatuses:
        if reservation is None:
            return {}
        return status_table.reserved_node_statuses(reservation, instances,
                                                   non_terminated_only)

    def _reads_a_node_gone(self, statuses: status_table.NodeStatuses) -> bool:
        return sum(status is not None for status, _ in statuses.values()
                   ) < len(self.instance_fids)

    def _all_paused_with_autodown(self, cluster_name: str,
                                  statuses: status_table.NodeStatuses) -> bool:
        """Whether every node is paused and SkyPilot armed autodown: a node
        may have taken the cluster down."""
        return bool(statuses) and not self.on_node and all(
            status == status_lib.ClusterStatus.STOPPED
            for status, _ in statuses.values()) and _autodown_set(cluster_name)

    def cluster_info(self, provider_config: Optional[Dict[str, Any]]
                     ) -> common.ClusterInfo:
        return cluster_bid.nodes_info(self.instances(), provider_config)
