"""The truth table's CPU VM rows: every instance status a CPU VM can show
reads as SkyPilot expects (gone only once terminated; never STOPPED, as a
CPU VM bills until deleted: paused reads INIT and says it still bills)."""

import datetime

import pytest
from sky.utils import status_lib

from sky_mithril.api import models
from sky_mithril.provision import status_table

_S = status_lib.ClusterStatus
_I = models.InstanceState


def _vm(status: str) -> models.Instance:
    return models.Instance(fid='inst_1', name='ctl', project='proj_1',
                           created_at=datetime.datetime.now(
                               datetime.timezone.utc),
                           created_by='user_1', instance_type='it_cpu',
                           status=status, reservation='res_hidden')


def test_every_instance_status_has_a_row() -> None:
    assert set(status_table.CPU_VM_TRUTH_TABLE) == set(
        status_table.CPU_VM_STATES)


@pytest.mark.parametrize('status,expected', [
    (_I.RUNNING, _S.UP), (_I.NEW, _S.INIT), (_I.CONFIRMED, _S.INIT),
    (_I.STARTING, _S.INIT), (_I.ERROR, _S.INIT), (_I.PAUSED, _S.INIT),
    (_I.STOPPING, _S.INIT), (_I.STOPPED, _S.INIT), (_I.TERMINATED, None),
    (_I.REPLACED, None),
    (_I.PREEMPTING, _S.INIT), ('STATUS_SOMETHING_NEW', _S.INIT),
])
def test_a_cpu_vm_reads_by_its_instance(status: str, expected: _S) -> None:
    statuses = status_table.cpu_vm_statuses(_vm(status),
                                            non_terminated_only=False)
    assert statuses['inst_1'][0] == expected


def test_no_cpu_vm_row_reads_stopped() -> None:
    """Every live CPU VM bills its fixed price: none reads STOPPED."""
    assert _S.STOPPED not in {reading.status for reading
                              in status_table.CPU_VM_TRUTH_TABLE.values()}


def test_a_paused_vm_says_it_bills_until_down() -> None:
    [(status, reason)] = status_table.cpu_vm_statuses(
        _vm(_I.PAUSED), non_terminated_only=True).values()
    assert status == _S.INIT
    assert 'still bills' in reason
    assert '`sky start` resumes it' in reason
    assert '`sky down` deletes it and ends the bill' in reason


def test_a_terminated_vm_is_gone() -> None:
    assert status_table.cpu_vm_statuses(_vm(_I.TERMINATED),
                                        non_terminated_only=True) == {}
