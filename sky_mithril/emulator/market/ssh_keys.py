"""The project's SSH keys: registered or generated (returning the private
half once, as Mithril does), marked `required` or not, deleted. A bid's hosts
accept the keys its launch specification lists plus every key the project
marks `required`, as of when each host is created (so do a CPU VM's and a
reservation's). A key that a live (not terminated, not ended) bid, CPU VM,
reservation or Kubernetes cluster lists cannot be deleted.
"""

from typing import List, Optional, Sequence, Tuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sky_mithril.emulator.market.accounts import Accounts
from sky_mithril.emulator.market.errors import (FieldError, InvalidRequest,
                                                InvalidState, NotFound)
from sky_mithril.emulator.market.records import (BidStatus,
                                                 KubernetesClusterStatus, Order,
                                                 SshKey)
from sky_mithril.emulator.market.state import MarketState


class SshKeys:
    """Registers and lists keys; says which keys a host accepts."""

    def __init__(self, state: MarketState, accounts: Accounts) -> None:
        self._state = state
        self._store = state.store
        self._accounts = accounts

    def list(self, project: str) -> List[SshKey]:
        self._accounts.require_project(project)
        return [
            key for key in self._store.ssh_keys.values()
            if key.project == project
        ]

    def create(self,
               project: str,
               name: str,
               public_key: Optional[str] = None,
               required: bool = False) -> Tuple[SshKey, Optional[str]]:
        """Registers a key; without `public_key` generates a pair and also
        returns its private key (OpenSSH PEM)."""
        project_error = self._accounts.project_error(project)
        if project_error is not None:
            raise InvalidRequest([project_error])
        if not name.strip():
            raise InvalidRequest([
                FieldError('name', 'name must not be empty',
                           'string_too_short')
            ])
        private_key = None
        if public_key is None:
            public_key, private_key = generate_key_pair()
        elif not public_key.strip().startswith(('ssh-', 'ecdsa-', 'sk-')):
            raise InvalidRequest([
                FieldError('public_key',
                           'public_key is not an OpenSSH public key')
            ])
        key = SshKey(fid=self._state.new_fid('sshkey'),
                     name=name,
                     project=project,
                     public_key=public_key.strip(),
                     created_at=self._state.now,
                     required=required)
        self._store.ssh_keys[key.fid] = key
        return key, private_key

    def get(self, fid: str) -> SshKey:
        key = self._store.ssh_keys.get(fid)
        if key is None:
            raise NotFound('SSH key', fid)
        return key

    def update(self, fid: str, *, required: bool) -> SshKey:
        """Marks the key required (every host of the project created from
        now on accepts it) or not."""
        key = self.get(fid)
        key.required = required
        return key

    def delete(self, fid: str) -> None:
        """Deletes a key no live bid, CPU VM, reservation or Kubernetes
        cluster lists (InvalidState otherwise)."""
        key = self.get(fid)
        for bid in self._store.bids.values():
            if (bid.status != BidStatus.TERMINATED and
                    fid in bid.launch_specification.ssh_keys):
                raise InvalidState(
                    f'SSH key {fid} ({key.name}) is used by bid {bid.fid} '
                    f'({bid.name}); cancel the bid first.')
        for vm in self._store.cpu_vms.values():
            if (vm.deactivated_at is None and
                    fid in vm.launch_specification.ssh_keys):
                raise InvalidState(
                    f'SSH key {fid} ({key.name}) is used by CPU VM '
                    f'{vm.instances[0].fid} ({vm.name}); terminate it first.')
        for reservation in self._store.reservations.values():
            if (reservation.live and
                    fid in reservation.launch_specification.ssh_keys):
                raise InvalidState(
                    f'SSH key {fid} ({key.name}) is used by reservation '
                    f'{reservation.fid} ({reservation.name}) until it ends.')
        for cluster in self._store.k8s_clusters.values():
            if (cluster.status != KubernetesClusterStatus.TERMINATED and
                    fid in cluster.ssh_keys):
                raise InvalidState(
                    f'SSH key {fid} ({key.name}) is used by Kubernetes '
                    f'cluster {cluster.fid} ({cluster.name}); delete the '
                    'cluster first.')
        del self._store.ssh_keys[fid]

    def unknown_key_errors(self, project: str,
                           fids: Sequence[str]) -> List[FieldError]:
        """One error per entry of an `ssh_keys` argument that is not a key of
        `project`."""
        errors = []
        for index, fid in enumerate(fids):
            key = self._store.ssh_keys.get(fid)
            if key is None or key.project != project:
                errors.append(
                    FieldError('ssh_keys',
                               f'SSH key {fid} not found in project',
                               index=index))
        return errors

    def public_keys(self, fids: Sequence[str]) -> List[str]:
        """The public halves of keys `fids`, without duplicates."""
        return list(
            dict.fromkeys(self._store.ssh_keys[fid].public_key for fid in fids))

    def for_order(self, order: Order) -> List[str]:
        """What the order's hosts accept: its keys plus the project's
        required keys, without duplicates."""
        return self.public_keys(
            list(order.launch_specification.ssh_keys) + [
                key.fid
                for key in self._store.ssh_keys.values()
                if key.required and key.project == order.project
            ])


def generate_key_pair() -> Tuple[str, str]:
    """A fresh ed25519 pair: (OpenSSH public key, OpenSSH private key)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH,
        serialization.PublicFormat.OpenSSH).decode()
    return public, private
