"""The spend budget (`max_hourly_spend`) holds for every change that can
lift the project's worst case: a launch, a relaunch at a higher limit, `sky
start`, a managed job's standby; two launches racing past the check settle
so that only what fits stays (two processes against the emulator)."""

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, List

import pytest

from sky.provision import common

from sky_mithril.account import connection
from sky_mithril.api import client as client_lib
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import budget as budget_lib
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.recovery import standby as standby_lib
from sky_mithril.task import settings

from tests.helpers import REPO
from tests.helpers.provisioning import bids_named, launch, provision_config

PROVIDER = {'project_id': 'proj_emulator'}
TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'


def within(budget: str, **kwargs: Any) -> common.ProvisionConfig:
    """A launch's config with `max_hourly_spend: budget`."""
    config = provision_config(**kwargs)
    config.provider_config['max_hourly_spend'] = budget
    return config


def statuses(server: EmulatorServer, name: str) -> List[str]:
    return [b['status'] for b in bids_named(server, name)]


def test_a_launch_that_would_exceed_the_budget_places_nothing(fast_emulator):
    launch('first', within('15.00', limit='10.00'))
    with pytest.raises(budget_lib.BudgetExceededError) as refusal:
        launch('second', within('15.00', limit='10.00'))
    message = str(refusal.value)
    assert 'from $10.00/h to $20.00/h, $5.00/h above' in message
    assert 'max_hourly_spend of this launch' in message
    first, = bids_named(fast_emulator, 'first')
    assert f"bid first ({first['fid']}, Allocated, 1× $10.00/h" in message
    assert bids_named(fast_emulator, 'second') == []
    # Within the budget, the same launch goes through.
    launch('second', within('20.00', limit='10.00'))
    assert statuses(fast_emulator, 'second') == ['Allocated']


def test_a_paused_bid_costs_nothing_but_resuming_it_is_checked(
        fast_emulator):
    launch('stopped', within('15.00', limit='10.00'))
    provisioner.stop_instances('stopped', PROVIDER)
    launch('running', within('15.00', limit='10.00'))
    with pytest.raises(budget_lib.BudgetExceededError, match='resuming bid'):
        launch('stopped', within('15.00', limit='10.00', resume=True))
    assert statuses(fast_emulator, 'stopped') == ['Paused']


def test_a_relaunch_may_keep_its_limit_but_not_raise_it_past_the_budget(
        fast_emulator):
    launch('job', within('15.00', limit='10.00'))
    launch('other', within('15.00', limit='4.00'))
    launch('job', within('14.00', limit='10.00'))  # lifts nothing
    with pytest.raises(budget_lib.BudgetExceededError, match='re-pricing'):
        launch('job', within('15.00', limit='12.00'))
    job, = bids_named(fast_emulator, 'job')
    assert job['limit_price'] == '$10.00' and job['status'] == 'Allocated'


def test_a_relaunch_may_lower_its_limit_while_the_project_is_over_budget(
        fast_emulator):
    """The budget was lowered below what the project's bids already hold:
    lowering one of them lifts nothing, so it goes through and stays, even
    though the project stays above the budget."""
    launch('a', within('30.00', limit='10.00'))
    launch('b', within('30.00', limit='10.00'))
    launch('a', within('15.00', limit='8.00'))
    a, = bids_named(fast_emulator, 'a')
    assert a['limit_price'] == '$8.00' and a['status'] == 'Allocated'


def test_a_standby_counts_the_bid_in_its_notice(fast_emulator):
    launch('job', provision_config(limit='10.00'))
    conn = connection.connect()
    old = cluster_bid.live_bid(conn, 'job')
    # In its notice (and Open again after it, at 600x soon) the old bid
    # can bill up to its limit.
    fast_emulator.control('POST', f'bids/{old.fid}/preempt')
    budget = settings.SpendBudget(Decimal('25.00'), 'the test')
    with pytest.raises(budget_lib.BudgetExceededError,
                       match=r"the new bid 'job' \(1× \$20.00/h\)"):
        standby_lib.place_standby(conn, old, Decimal('20.00'), budget)
    assert len(bids_named(fast_emulator, 'job')) == 1
    standby_lib.place_standby(conn, old, Decimal('15.00'), budget)
    assert 'Terminated' not in statuses(fast_emulator, 'job')
    assert len(statuses(fast_emulator, 'job')) == 2


def test_of_bids_that_raced_past_the_check_the_earlier_stays(fast_emulator):
    """`must_yield` directly: two bids placed without a budget, then
    settled as two racing launches would settle them."""
    launch('early', provision_config(limit='10.00'))
    launch('late', provision_config(limit='10.00'))
    conn = connection.connect()
    early, late = (cluster_bid.live_bid(conn, n) for n in ('early', 'late'))
    budget = settings.SpendBudget(Decimal('15.00'), 'the test')
    assert budget_lib.must_yield(conn, budget, early, latest=False) is None
    assert 'raced' in str(budget_lib.must_yield(conn, budget, late,
                                                latest=False))
    # A resumed or re-priced bid entered just now: it yields to the others.
    assert budget_lib.must_yield(conn, budget, early, latest=True) is not None


def test_a_new_bid_the_listing_does_not_show_yet_still_counts(
        fast_emulator, monkeypatch):
    """A teammate's bid lands between this launch's check and its POST, and
    the listing right after the POST does not show the new bid yet (a read
    that lags the write): the new bid counts from the POST's answer, so it
    yields to the earlier one."""
    provision_config()  # the SSH key registered before the POSTs are watched
    create_bid = client_lib.MithrilClient.create_bid
    list_bids = client_lib.MithrilClient.list_bids
    lagging: List[str] = []

    def create_after_a_teammate(client: client_lib.MithrilClient,
                                request: models.CreateBidRequest) -> models.Bid:
        if request.name == 'mine':
            create_bid(client, request.model_copy(update={'name': 'teammate'}))
        placed = create_bid(client, request)
        lagging.append(placed.fid)
        return placed

    def lagging_listing(client: client_lib.MithrilClient, project: str,
                        **filters: Any) -> List[models.Bid]:
        listed = list_bids(client, project, **filters)
        if filters or not lagging:
            return listed
        hidden = lagging.pop()
        return [b for b in listed if b.fid != hidden]

    monkeypatch.setattr(client_lib.MithrilClient, 'create_bid',
                        create_after_a_teammate)
    monkeypatch.setattr(client_lib.MithrilClient, 'list_bids', lagging_listing)
    with pytest.raises(budget_lib.BudgetExceededError, match='raced'):
        launch('mine', within('15.00', limit='10.00'))
    assert statuses(fast_emulator, 'mine') == ['Terminated']
    assert statuses(fast_emulator, 'teammate') != ['Terminated']


def test_a_raised_limit_is_put_back_when_the_budget_cannot_be_rechecked(
        fast_emulator, monkeypatch):
    """A relaunch raises the limit of the cluster's (adopted) bid within the
    budget, then the listing that settles it against racing changes fails:
    the old limit is restored before the error leaves."""
    launch('job', within('15.00', limit='10.00'))
    update_bid = client_lib.MithrilClient.update_bid

    def update_then_fail_listings(client: client_lib.MithrilClient,
                                  bid_fid: str, **change: Any) -> models.Bid:
        updated = update_bid(client, bid_fid, **change)
        fast_emulator.control('PUT', 'faults', rules=[{
            'method': 'GET', 'path': '/v2/spot/bids', 'server_error': 1.0,
            'server_error_statuses': [501], 'max_faults': 1}])
        return updated

    monkeypatch.setattr(client_lib.MithrilClient, 'update_bid',
                        update_then_fail_listings)
    with pytest.raises(errors.MithrilAPIError):
        launch('job', within('15.00', limit='12.00'))
    job, = bids_named(fast_emulator, 'job')
    assert job['limit_price'] == '$10.00' and job['status'] == 'Allocated'


def test_a_raised_limit_whose_update_answer_was_lost_is_put_back(
        fast_emulator, monkeypatch):
    """The PATCH raising the limit is applied, but its answer is lost (and
    the client's retries spent): the launch cannot tell, so it puts the old
    limit back before the error leaves."""
    launch('job', within('15.00', limit='10.00'))
    connect = connection.connect
    monkeypatch.setattr(connection, 'connect',
                        lambda **kw: connect(**kw, max_retry_seconds=0.0))
    fast_emulator.control('PUT', 'faults', rules=[{
        'method': 'PATCH', 'path': '/v2/spot/bids/{bid_fid}',
        'lost_response': 1.0, 'max_faults': 1}])
    with pytest.raises(errors.MithrilAPIError):
        launch('job', within('15.00', limit='12.00'))
    assert fast_emulator.control('GET', 'faults')['counts'][
        'lost_response'] == 1
    job, = bids_named(fast_emulator, 'job')
    assert job['limit_price'] == '$10.00' and job['status'] == 'Allocated'


# Two launches at once, each in its own process, as two API-server workers
# (one home: the lock) or two machines (two homes: the re-check).

def _config_json(budget: str) -> Dict[str, Any]:
    config = within(budget, limit='10.00')
    return {field: getattr(config, field)
            for field in ('provider_config', 'authentication_config',
                          'docker_config', 'node_config', 'count', 'tags',
                          'resume_stopped_nodes', 'ports_to_open_on_launch')}


def _launch_both(homes: List[Path]) -> List[str]:
    """Launches `a` and `b` at once ($10/h each, budget $15/h), each in a
    process with its home (`provision_child`); how each ended: DONE, or
    FAILED and the error."""
    children = []
    for name, home in zip(('a', 'b'), homes):
        home.mkdir(parents=True, exist_ok=True)
        spec = json.dumps({'call': 'run', 'name': name,
                           'config': _config_json('15.00')})
        children.append(subprocess.Popen(
            [sys.executable, '-m', 'tests.helpers.provision_child', spec],
            cwd=REPO, text=True, stdout=subprocess.PIPE,
            env={**os.environ, 'HOME': str(home)}))
    return [child.communicate(timeout=240)[0].strip().splitlines()[-1]
            for child in children]


def _slow_bid_posts(server: EmulatorServer) -> None:
    """Every bid POST waits 4 s before the market sees it: both launches
    pass their checks before either bid exists."""
    server.control('PUT', 'faults', rules=[
        {'method': 'POST', 'path': '/v2/spot/bids', 'latency': 1.0,
         'latency_s': 4.0}])


def test_two_launches_on_one_machine_take_turns(fast_emulator, tmp_path):
    # Registered once, so neither child registers the SSH key.
    provision_config()
    _slow_bid_posts(fast_emulator)
    outcomes = _launch_both([tmp_path / 'home'] * 2)
    assert sorted(o.split()[0] for o in outcomes) == ['DONE', 'FAILED']
    refused = next(o for o in outcomes if o.startswith('FAILED'))
    assert 'Mithril spend budget' in refused and 'would lift' in refused
    # The lock kept the second from placing anything at all.
    bids = fast_emulator.control('GET', 'state')['bids']
    assert [b['status'] for b in bids] == ['Allocated']


def test_two_launches_from_two_machines_settle_on_the_earlier(
        fast_emulator, tmp_path):
    provision_config()
    _slow_bid_posts(fast_emulator)
    outcomes = _launch_both([tmp_path / 'one', tmp_path / 'two'])
    assert sorted(o.split()[0] for o in outcomes) == ['DONE', 'FAILED']
    refused = next(o for o in outcomes if o.startswith('FAILED'))
    assert 'raced' in refused
    bids = fast_emulator.control('GET', 'state')['bids']
    # Both were placed; the later one was cancelled.
    assert sorted(b['status'] for b in bids) == ['Allocated', 'Terminated']
    kept = next(b for b in bids if b['status'] == 'Allocated')
    assert kept['fid'] == bids[0]['fid']
