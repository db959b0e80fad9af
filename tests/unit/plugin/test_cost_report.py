"""`sky cost-report`'s Mithril rows: the bid name is SkyPilot's name on the
cloud for the record's user, bids go to the record they were placed in, and
the wrapped `sky.core.cost_report` stays picklable by reference."""

import datetime
import pickle
from typing import Any, Dict

import pytest
from sky import core
from sky.clouds import mithril as builtin_mithril
from sky.utils import common_utils

from sky_mithril.api import models
from sky_mithril.plugin import cost_report
from sky_mithril.plugin import takeover


@pytest.mark.parametrize('name', ['train', 'My_Cluster.v2',
                                  'a-very-long-cluster-name-' * 3])
def test_the_bid_name_is_skypilots_name_on_the_cloud_for_the_records_user(
        monkeypatch, name):
    monkeypatch.setenv('SKYPILOT_USER_ID', 'ab12cd34')
    expected = common_utils.make_cluster_name_on_cloud(
        name, builtin_mithril.Mithril.max_cluster_name_length())
    # The record's user, not whoever asks for the report.
    monkeypatch.setenv('SKYPILOT_USER_ID', 'ffffffff')
    assert cost_report.bid_name({'name': name,
                                 'user_hash': 'ab12cd34'}) == expected


def _record(start: int) -> Dict[str, Any]:
    return {'name': 'c', 'usage_intervals': [(start, None)]}


def _bid(at: int) -> models.Bid:
    return models.Bid(fid=f'bid_{at}', name='c', project='p', created_by='u',
                      created_at=datetime.datetime.fromtimestamp(
                          at, datetime.timezone.utc),
                      limit_price='$1.00', instance_quantity=1,
                      instance_type='it', status='Terminated')


def test_a_bid_belongs_to_the_latest_record_started_before_it():
    records = [_record(1000), _record(5000)]
    assert cost_report._record_of(records, _bid(400)) is None  # pylint: disable=protected-access
    assert cost_report._record_of(records, _bid(800)) == 0  # within the skew  # pylint: disable=protected-access
    assert cost_report._record_of(records, _bid(4000)) == 0  # pylint: disable=protected-access
    assert cost_report._record_of(records, _bid(5100)) == 1  # pylint: disable=protected-access


def test_reports_without_mithril_clusters_make_no_request(monkeypatch):
    reports = [{'name': 'k8s', 'total_cost': 1.5, 'resources': None,
                'usage_intervals': [(1, None)]}]
    monkeypatch.setattr(cost_report.connection, 'connect',
                        lambda: pytest.fail('no Mithril cluster to price'))
    assert cost_report.with_charges(reports) == reports


def test_the_wrapped_report_passes_through_the_charges(monkeypatch):
    monkeypatch.setattr(core, 'cost_report', lambda days=None: [{'days': days}])
    monkeypatch.setattr(cost_report, 'with_charges',
                        lambda reports: reports + ['priced'])
    takeover._charges_reach_cost_report()  # pylint: disable=protected-access
    assert core.cost_report(days=3) == [{'days': 3}, 'priced']


def test_the_wrapped_report_pickles_as_skypilots(monkeypatch):
    """The server hands a worker its request's function pickled by
    reference: `sky.core.cost_report` must find the wrapper again."""
    original = core.cost_report
    monkeypatch.setattr(core, 'cost_report', original)  # restored after
    takeover._charges_reach_cost_report()  # pylint: disable=protected-access
    assert core.cost_report is not original
    assert pickle.loads(pickle.dumps(core.cost_report)) is core.cost_report
