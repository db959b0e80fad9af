"""The cluster's CPU VM: its one home. Finding it (from the project snapshot
or live), creating it exactly once, resuming or adopting it, waiting for
SSH, deleting, and undoing a launch.

A cluster on a CPU VM type (a fixed-price machine without GPUs, sold outside
the auction) is one CPU VM named exactly `cluster_name_on_cloud`, created
with `POST /v2/cpu/instances`: synchronous, never a bid, no limit price.
Mithril lists it among the project's instances, with no bid (its hidden
reservation is on the row but absent from the reservation listing), so it
is found by its exact name, no bid and an instance type of the CPU catalog
(in the project snapshot, by its name and no bid: a reserved instance is
named after its reservation).

`ClusterVm.acquire` says what it did with an explicit `Outcome`, as
`cluster_bid` does for bids: CREATED, RESUMED (a paused VM resumed) or
ADOPTED. `undo` reverses exactly that: a created VM is deleted, a resumed
one paused again, an adopted one left alone. Requests that change the
market run with SIGINT/SIGTERM held (`interrupts.deferred`), so their
outcome is known before an interrupt leaves. A create answered
ambiguously (a 5xx, a timeout) may still have been applied: the VM is
looked for by name for LATE_COMMIT_WINDOW_SECONDS, and one that appears is
the launch's (it is deleted if the launch fails); none is created twice.

Mithril charges a CPU VM its fixed price until it is deleted, paused or
not, so sky-mithril never stops one (the cloud declares stop and autostop
unsupported for CPU VM types): only `sky down` or autodown
(`DELETE /v2/cpu/instances/{fid}`) ends the bill. A VM paused in Mithril's
console is resumed (`PATCH /v2/instances`) by the next `sky start` or
`sky launch` of its cluster.
"""

import datetime
import enum
import time
from typing import Any, Dict, List, Optional

from sky import sky_logging
from sky.provision import common

from sky_mithril.account import connection
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import interrupts
from sky_mithril.provision import project_snapshot

logger = sky_logging.init_logger('sky.sky_mithril.provision')

# The provider-config key (from the cluster template) that marks a cluster
# on a CPU VM type.
PROVIDER_KEY = 'cpu_vm'
POLL_SECONDS = 2.0
DELETE_CONFIRM_SECONDS = 60.0
# How long a pause or resume waits for a VM that is still booting or
# stopping (Mithril refuses to pause or resume it then: 409).
READY_SECONDS = 300.0
LATE_COMMIT_WINDOW_SECONDS = cluster_bid.LATE_COMMIT_WINDOW_SECONDS

_I = models.InstanceState
_GONE = (_I.TERMINATED, _I.REPLACED)
_PAUSED = (_I.PAUSED, _I.STOPPING, _I.STOPPED)


class CpuVmError(RuntimeError):
    """A CPU VM did not become usable; the message says why and what to do."""


class Outcome(enum.Enum):
    """What `ClusterVm.acquire` did."""

    CREATED = 'created'  # A new CPU VM.
    RESUMED = 'resumed'  # The cluster's VM, paused in the console, resumed.
    ADOPTED = 'adopted'  # The cluster's VM used as it was.


def on_cpu_vm(provider_config: Optional[Dict[str, Any]]) -> bool:
    """Whether the cluster the provider config describes is on a CPU VM."""
    return str((provider_config or {}).get(PROVIDER_KEY) or '') == 'true'


def find(conn: connection.Connection, name: str) -> Optional[models.Instance]:
    """The cluster's CPU VM (not terminated), or None. Two requests."""
    cpu_types = {t.fid for t in conn.client.list_cpu_instance_types()}
    live = [i for i in conn.client.list_instances(conn.project_id)
            if i.name == name and i.bid is None and
            i.instance_type in cpu_types and i.status not in _GONE]
    if len(live) > 1:
        raise CpuVmError(
            f'{len(live)} CPU VMs are named {name!r} '
            f'({", ".join(i.fid for i in live)}); sky-mithril cannot tell which '
            'is the cluster\'s: delete the extra ones in Mithril\'s console.')
    return live[0] if live else None


def from_snapshot(conn: connection.Connection, name: str,
                  snapshot: project_snapshot.Snapshot
                  ) -> Optional[models.Instance]:
    """The cluster's CPU VM as the project snapshot shows it; read live
    (`find`) when the snapshot shows none (only Mithril's answer now reads
    a VM gone) or several."""
    listed = snapshot.unbid_instances(name)
    if len(listed) == 1:
        return listed[0]
    return find(conn, name)


def ended_at(conn: connection.Connection,
             name: str) -> Optional[datetime.datetime]:
    """Mithril's clock now once no CPU VM of the name is live (an instance
    row says nothing of when it ended), else None."""
    if find(conn, name) is not None:
        return None
    return conn.client.server_now()


def instance_type_fid(conn: connection.Connection, instance_type: str,
                      provider_config: Dict[str, Any]) -> str:
    """The CPU type's fid: from the live catalog the launch was planned
    with, else looked up by name."""
    planned = provider_config.get('instance_type_fid') or ''
    if planned:
        return str(planned)
    for cpu_type in conn.client.list_cpu_instance_types():
        if cpu_type.name == instance_type:
            return cpu_type.fid
    raise CpuVmError(f'Mithril sells no CPU VM of type {instance_type} any '
                     'more; launch again for the optimizer to pick another.')


def set_paused_when_ready(conn: connection.Connection, instance_fid: str,
                          paused: bool) -> None:
    """Pauses or resumes the CPU VM, waiting up to READY_SECONDS while
    Mithril refuses because it is still booting or stopping (409)."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            with interrupts.deferred(), project_snapshot.changing(conn):
                conn.client.set_instances_paused([instance_fid], paused=paused)
            return
        except errors.ConflictError:
            if time.monotonic() > deadline:
                raise
        time.sleep(POLL_SECONDS)


def delete(conn: connection.Connection, name: str) -> None:
    """`sky down`: deletes the cluster's CPU VM and confirms it is gone."""
    vm = find(conn, name)
    if vm is not None:
        with interrupts.deferred():
            delete_and_confirm(conn, vm.fid)
        logger.info(f'Deleted CPU VM {vm.fid}.')


def delete_and_confirm(conn: connection.Connection, instance_fid: str) -> None:
    """Deletes the CPU VM and waits until Mithril reports it terminated; a
    404 means it is gone. Raises CpuVmError if that cannot be confirmed."""
    with project_snapshot.changing(conn):
        try:
            conn.client.terminate_cpu_instance(instance_fid)
        except errors.NotFoundError:
            return
        deadline = time.monotonic() + DELETE_CONFIRM_SECONDS
        while True:
            try:
                status = conn.client.get_instance_status(instance_fid).status
            except errors.NotFoundError:
                return
            if status in _GONE:
                return
            if time.monotonic() > deadline:
                raise CpuVmError(
                    f'CPU VM {instance_fid} is still {status} after deleting '
                    f'it for {DELETE_CONFIRM_SECONDS:.0f}s.')
            time.sleep(1.0)


def _create_once(conn: connection.Connection,
                 request: models.CreateCpuInstanceRequest) -> models.Instance:
    """POSTs the CPU VM so that it exists once, never twice. The POST runs
    with signals held; an interrupt held meanwhile deletes the VM it
    created before it leaves. A create answered ambiguously is looked for
    by name for LATE_COMMIT_WINDOW_SECONDS and used once it appears; if it
    never does, the ambiguous error is raised. Whatever ends that looking
    early (Ctrl-C) first looks once more and deletes a VM it finds."""
    created: List[models.Instance] = []
    try:
        with interrupts.deferred(), project_snapshot.changing(conn):
            created.append(conn.client.create_cpu_instance(request))
    except errors.AmbiguousResponseError as ambiguous:
        return _await_late_commit(conn, request.name, ambiguous)
    except BaseException:
        if created:
            with interrupts.deferred():
                delete_and_confirm(conn, created[0].fid)
        raise
    return created[0]


def _await_late_commit(conn: connection.Connection, name: str,
                       ambiguous: errors.AmbiguousResponseError
                       ) -> models.Instance:
    """The VM of an ambiguously answered create, once it appears;
    `ambiguous` is raised if it does not."""
    deadline = time.monotonic() + LATE_COMMIT_WINDOW_SECONDS
    try:
        while time.monotonic() < deadline:
            vm = find(conn, name)
            if vm is not None:
                return vm
            time.sleep(POLL_SECONDS)
    except BaseException:
        with interrupts.deferred():
            late = find(conn, name)
            if late is not None:
                delete_and_confirm(conn, late.fid)
        raise
    raise ambiguous


class ClusterVm:
    """The CPU VM behind one cluster and how this launch came to hold it."""

    def __init__(self, conn: connection.Connection, vm: models.Instance,
                 outcome: Outcome) -> None:
        self.conn = conn
        self.vm = vm
        self.outcome = outcome

    @classmethod
    def acquire(cls, conn: connection.Connection, region: str, name: str,
                config: common.ProvisionConfig) -> 'ClusterVm':
        """The cluster's CPU VM: the live one resumed (if paused in the
        console) or adopted, else a new one. A fixed-price VM has no limit
        price: one the task sets is not used (the cloud says so as it plans
        the launch)."""
        if config.count != 1:
            raise CpuVmError(
                f'A CPU VM is one node; this launch asks for {config.count}. '
                'Use one node, or a GPU instance type for a multi-node cluster.')
        existing = find(conn, name)
        if existing is not None:
            held = cls(conn, existing, Outcome.RESUMED if existing.status in
                       _PAUSED else Outcome.ADOPTED)
            if held.outcome == Outcome.RESUMED:
                try:
                    set_paused_when_ready(conn, existing.fid, paused=False)
                except BaseException as e:
                    held.undo(e)
                    raise
                logger.info(f'Resuming paused CPU VM {existing.fid}.')
            return held
        instance_type = config.node_config['InstanceType']
        request = models.CreateCpuInstanceRequest(
            project=conn.project_id,
            name=name,
            instance_type=instance_type_fid(conn, instance_type,
                                            config.provider_config),
            region=region,
            volumes=cluster_bid.volume_fids(config.provider_config),
            ssh_keys=[config.authentication_config['ssh_key_id']])
        vm = _create_once(conn, request)
        logger.info(f'Created Mithril CPU VM {vm.fid}: {instance_type} in '
                    f'{region}, at its fixed hourly price; no bid.')
        return cls(conn, vm, Outcome.CREATED)

    def wait_until_ready(self, boot_timeout: float) -> List[models.Instance]:
        """Waits until the VM has an SSH destination; on any failure or
        interrupt what this launch did is undone (`undo`)."""
        try:
            return [self._wait(boot_timeout)]
        except BaseException as e:
            self.undo(e)
            raise

    def _wait(self, boot_timeout: float) -> models.Instance:
        deadline = time.monotonic() + boot_timeout
        while True:
            vm = self._current()
            if vm.status in (_I.STARTING, _I.RUNNING) and vm.ssh_destination:
                self.vm = vm
                return vm
            if vm.status == _I.ERROR:
                raise CpuVmError(f'CPU VM {vm.fid} reports an error.')
            if vm.status in _GONE:
                raise CpuVmError(f'CPU VM {vm.fid} was terminated while it '
                                 'booted.')
            if time.monotonic() > deadline:
                raise CpuVmError(
                    f'CPU VM {vm.fid} not reachable after {boot_timeout:.0f}s '
                    f'({vm.status}); raise config.mithril.boot_timeout or try '
                    'again.')
            time.sleep(POLL_SECONDS)

    def _current(self) -> models.Instance:
        for vm in self.conn.client.list_instances(self.conn.project_id):
            if vm.fid == self.vm.fid:
                return vm
        raise CpuVmError(f'CPU VM {self.vm.fid} is no longer listed.')

    def undo(self, cause: BaseException) -> None:
        """Reverses this launch's outcome (deletes a created VM, pauses
        again one it resumed, as the console had left it); if that is
        impossible, stops SkyPilot's failover so the user learns about the
        VM."""
        try:
            with interrupts.deferred():
                if self.outcome == Outcome.CREATED:
                    delete_and_confirm(self.conn, self.vm.fid)
                elif self.outcome == Outcome.RESUMED:
                    set_paused_when_ready(self.conn, self.vm.fid, paused=True)
        except Exception as cleanup_error:  # pylint: disable=broad-except
            raise common.StopFailoverError(
                f'Launch failed ({type(cause).__name__}: {cause}) and '
                f'sky-mithril could not clean up CPU VM {self.vm.fid}: '
                f'{cleanup_error}. It bills at its fixed price until deleted: '
                'run `sky down` for this cluster or delete it in Mithril\'s '
                'console.') from cleanup_error
        if self.outcome != Outcome.ADOPTED:
            logger.info(f'{"Deleted" if self.outcome == Outcome.CREATED else "Paused"} '
                        f'CPU VM {self.vm.fid} after: '
                        f'{type(cause).__name__}: {cause}')

    def cluster_info(self, provider_config: Optional[Dict[str, Any]]
                     ) -> common.ClusterInfo:
        """The VM as SkyPilot sees a one-node cluster."""
        return cluster_bid.nodes_info([self._current()], provider_config)


def cluster_info(conn: connection.Connection, name: str,
                 provider_config: Optional[Dict[str, Any]]
                 ) -> common.ClusterInfo:
    """The cluster's VM as SkyPilot sees a one-node cluster (no nodes once
    it is gone)."""
    vm = find(conn, name)
    return cluster_bid.nodes_info([vm] if vm else [], provider_config)
