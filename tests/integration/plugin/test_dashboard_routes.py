"""The dashboard's routes (`/plugins/api/mithril/...`) against the emulator,
through FastAPI as the API server mounts them: their shapes, a market with
history, bids with their clusters and truth-table reasons, the spend
budget, volumes and reservations; that a status refresh and any number of
dashboard loads within the snapshot's TTL list the project once, that five
viewers cost Mithril what one does, and that a change made through the
plugin shows at the next load; that no answer carries the API key; and that
the viewer allowlist the plugin declares covers every route."""

import datetime
import json
from concurrent import futures
from pathlib import Path
from typing import Dict, Iterator, List

import casbin.util
import fastapi
import pytest
from fastapi import testclient
from sky import skypilot_config
from sky.utils import config_utils

from sky_mithril import cli
from sky_mithril.catalog import live_prices
from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import PROJECT_FID, InstanceStatus, Market
from sky_mithril.emulator.server import EmulatorServer, load_catalog
from sky_mithril.plugin import MithrilPlugin
from sky_mithril.plugin.dashboard import routes
from sky_mithril.plugin.dashboard import shared_answers
from sky_mithril.provision import budget as budget_lib
from sky_mithril.provision import project_snapshot

from tests.helpers.commands import REGION, TYPE
from tests.helpers.provisioning import point_plugin_at, query

API_KEY = 'emulator-test-key'  # What point_plugin_at exports.
HOUR = 3600.0
JSON_ROUTES = ('market', 'bids', 'spend', 'volumes', 'reservations', 'infra')


@pytest.fixture(name='market')
def fixture_market() -> Market:
    """A market whose clock started two days ago and has run since, so
    there is price history: TYPE in REGION at $2.00, then $3.00."""
    start = (datetime.datetime.now(datetime.timezone.utc) -
             datetime.timedelta(days=2)).replace(second=0, microsecond=0)
    market = Market(ManualClock(start), PlaceholderHosts(), load_catalog())
    market.auctions.set_price(TYPE, REGION, '$2.00')
    market.advance(24 * HOUR)
    market.auctions.set_price(TYPE, REGION, '$3.00')
    market.advance(23 * HOUR)
    return market


@pytest.fixture(name='server')
def fixture_server(market: Market, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """The emulator serving `market`, the plugin pointed at it, a private
    HOME (no SkyPilot clusters, no cached prices)."""
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    with EmulatorServer(market) as server:
        point_plugin_at(server, monkeypatch, tmp_path / 'config')
        yield server


@pytest.fixture(name='client')
def fixture_client(server: EmulatorServer) -> Iterator[testclient.TestClient]:
    """The routes on an app of their own, asking `server`."""
    del server
    app = fastapi.FastAPI()
    app.include_router(routes.router)
    with testclient.TestClient(app) as client:
        yield client


def _type_fid(market: Market) -> str:
    return market.auctions.get(TYPE, REGION).instance_type.fid


def test_market_bids_spend_volumes_and_reservations(
        market: Market, client: testclient.TestClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fid = _type_fid(market)
    won = market.bids.create(project=PROJECT_FID, region=REGION,
                             instance_type=fid, limit_price='$8.00',
                             instance_quantity=1, name='train-0a1b-head')
    market.bids.create(project=PROJECT_FID, region=REGION, instance_type=fid,
                       limit_price='$1.00', instance_quantity=2,
                       name='by-hand')
    volume = market.volumes.create(project=PROJECT_FID, name='data',
                                   interface='File', region=REGION, size_gb=100)
    market.advance(HOUR)
    market.reservations.create(
        project=PROJECT_FID, instance_type=fid, region=REGION,
        start_time=market.now + datetime.timedelta(hours=2),
        end_time=market.now + datetime.timedelta(hours=26),
        instance_quantity=1, name='next-week')
    monkeypatch.setattr(budget_lib, 'cluster_labels',
                        lambda: {'train-0a1b-head': 'train'})

    rows = client.get('/plugins/api/mithril/market').json()['market']
    ours = next(r for r in rows
                if (r['instance_type'], r['region']) == (TYPE, REGION))
    assert ours['spot_price'] == 3.0
    assert ours['free_capacity'] >= 0
    assert len(ours['history']) >= 2
    assert {price for _, price in ours['history']} == {2.0, 3.0}
    # Spot at $3.00 for about half the window: the 90% limit is $3.00.
    assert ours['suggested_limit'] == 3.0
    assert ours['your_limit'] == 8.0  # The highest of the project's bids here.

    bids = {b['name']: b for b in
            client.get('/plugins/api/mithril/bids').json()['bids']}
    assert bids['train-0a1b-head']['cluster'] == 'train'
    assert bids['train-0a1b-head']['fid'] == won.fid
    assert bids['train-0a1b-head']['status'] == 'UP'
    assert bids['train-0a1b-head']['clearing_price'] == 3.0
    waiting = bids['by-hand']
    assert waiting['cluster'] is None
    assert waiting['status'] == 'INIT'
    assert 'waiting for the auction' in waiting['reason']
    assert waiting['limit_price'] == 1.0
    assert len(waiting['nodes']) == 2

    assert client.get('/plugins/api/mithril/spend').json() == {
        'worst_case_per_hour': 10.0, 'max_hourly_spend': None,
        'max_hourly_spend_source': None, 'billable_bids': 2}
    with skypilot_config.replace_skypilot_config_in_process(
            config_utils.Config({'plugins': {'mithril':
                                             {'max_hourly_spend': 12}}})):
        budgeted = routes.spend()
    assert budgeted['max_hourly_spend'] == 12.0
    assert 'max_hourly_spend' in budgeted['max_hourly_spend_source']

    volumes = client.get('/plugins/api/mithril/volumes').json()['volumes']
    assert [(v['fid'], v['name'], v['capacity_gb']) for v in volumes] == [
        (volume.fid, 'data', 100)]

    reservations = client.get(
        '/plugins/api/mithril/reservations').json()['reservations']
    assert [(r['name'], r['status'], r['instance_type'], r['in_use'])
            for r in reservations] == [('next-week', 'Pending', TYPE, 0)]

    infra = client.get('/plugins/api/mithril/infra').json()
    assert infra['enabled'] is True
    region = next(r for r in infra['regions'] if r['region'] == REGION)
    assert TYPE in region['instance_types']
    assert (region['bids'], region['nodes']) == (2, 1)


def test_a_refresh_and_every_viewer_share_one_snapshot(
        market: Market, server: EmulatorServer,
        client: testclient.TestClient) -> None:
    """A `sky status --refresh` of N clusters (a provisioner query each)
    and three viewers loading every route, all within the snapshot's TTL,
    list the project's bids and instances once: the snapshot's requests,
    not a pair per viewer or per cluster."""
    clusters = [f'team-{n}' for n in range(6)]
    for name in clusters:
        market.bids.create(project=PROJECT_FID, region=REGION,
                           instance_type=_type_fid(market),
                           limit_price='$8.00', instance_quantity=1, name=name)
    market.advance(HOUR)
    server.control('DELETE', 'stats')

    for name in clusters:
        assert len(query(name)) == 1
    for _ in range(3):
        for name in JSON_ROUTES:
            answer = client.get(f'/plugins/api/mithril/{name}')
            assert answer.status_code == 200, (name, answer.text)
        shown = client.get('/plugins/api/mithril/bids').json()['bids']
        assert sorted((b['name'], b['status']) for b in shown) == [
            (name, 'UP') for name in clusters]

    by_route = server.control('GET', 'stats')['by_route']
    assert by_route['GET /v2/spot/bids'] == len(
        project_snapshot.LIVE_BID_STATES)
    assert by_route['GET /v2/instances'] == 1


def _load_every_route(client: testclient.TestClient) -> None:
    for name in JSON_ROUTES:
        answer = client.get(f'/plugins/api/mithril/{name}')
        assert answer.status_code == 200, (name, answer.text)


def test_five_viewers_cost_mithril_what_one_does(
        market: Market, server: EmulatorServer,
        client: testclient.TestClient) -> None:
    """Every request the routes make to Mithril, counted: one viewer
    loading every route, and later (all shared answers stale again) five
    viewers loading every route at once, cost the same requests."""
    fid = _type_fid(market)
    market.bids.create(project=PROJECT_FID, region=REGION, instance_type=fid,
                       limit_price='$8.00', instance_quantity=1, name='team')
    market.volumes.create(project=PROJECT_FID, name='data', interface='File',
                          region=REGION, size_gb=100)
    market.reservations.create(
        project=PROJECT_FID, instance_type=fid, region=REGION,
        start_time=market.now,
        end_time=market.now + datetime.timedelta(hours=4),
        instance_quantity=1, name='reserved')
    market.advance(HOUR)
    # The live market is shared by its own TTL (a minute, in real time).
    live_prices.refresh_if_stale(blocking=True)

    def requests_made_by(viewers: int) -> Dict[str, int]:
        market.advance(shared_answers.SLOW_TTL_SECONDS + 1)
        server.control('DELETE', 'stats')
        with futures.ThreadPoolExecutor(viewers) as pool:
            list(pool.map(lambda _: _load_every_route(client), range(viewers)))
        return server.control('GET', 'stats')['by_route']

    one = requests_made_by(1)
    assert requests_made_by(5) == one
    assert one['GET /v2/projects'] == 1
    assert one['GET /v2/spot/bids'] == len(project_snapshot.LIVE_BID_STATES)
    assert one['GET /v2/volumes'] == 1


def test_a_change_made_through_the_plugin_shows_at_the_next_load(
        market: Market, client: testclient.TestClient) -> None:
    """Answers are shared for a few seconds, but a volume created with
    `sky-mithril volumes create` marks them stale: the next load lists it
    (and one made meanwhile from the console, which alone would have shown
    within the TTL)."""
    def volume_names() -> List[str]:
        answer = client.get('/plugins/api/mithril/volumes').json()
        return [v['name'] for v in answer['volumes']]

    assert volume_names() == []
    market.volumes.create(project=PROJECT_FID, name='console',
                          interface='File', region=REGION, size_gb=10)
    assert volume_names() == []
    assert cli.main(['volumes', 'create', 'data', '--region', REGION,
                     '--size', '100']) == 0
    assert volume_names() == ['console', 'data']


def test_an_active_reservation_with_an_instance_paused(
        market: Market, client: testclient.TestClient) -> None:
    reservation = market.reservations.create(
        project=PROJECT_FID, instance_type=_type_fid(market), region=REGION,
        start_time=market.now,
        end_time=market.now + datetime.timedelta(hours=6),
        instance_quantity=2, name='team')
    market.advance(600)
    assert [i.status for i in reservation.instances] == [
        InstanceStatus.RUNNING] * 2
    market.instances.set_status([reservation.instances[0].fid],
                                InstanceStatus.PAUSED)
    market.advance(2 * HOUR)  # Paused an hour or more: credited.

    shown, = client.get(
        '/plugins/api/mithril/reservations').json()['reservations']
    assert (shown['status'], shown['instance_quantity'], shown['in_use'],
            shown['paused']) == ('Active', 2, 1, 1)
    charged = reservation.terms.unit_price * 2 * 6
    pause_credit = reservation.terms.pause_credit * 2
    assert pause_credit > 0
    assert shown['credits'] == {
        'charged': float(charged), 'pause_credit': float(pause_credit),
        'return_credit': 0.0, 'net_cost': float(charged - pause_credit)}


def test_no_answer_carries_the_api_key(market: Market,
                                       client: testclient.TestClient) -> None:
    market.bids.create(project=PROJECT_FID, region=REGION,
                       instance_type=_type_fid(market), limit_price='$8.00',
                       instance_quantity=1, name='any')
    market.advance(HOUR)
    for name in JSON_ROUTES:
        answer = client.get(f'/plugins/api/mithril/{name}')
        assert answer.status_code == 200, (name, answer.text)
        assert API_KEY not in answer.text, name
        assert API_KEY not in json.dumps(dict(answer.headers)), name
    script = client.get('/plugins/api/mithril/dashboard.js')
    assert script.status_code == 200
    assert script.headers['content-type'].startswith('text/javascript')
    assert 'registerDataProvider' in script.text
    assert API_KEY not in script.text


def test_without_credentials_infra_says_why_and_the_rest_answer_503(
        client: testclient.TestClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv('MITHRIL_API_KEY')
    infra = client.get('/plugins/api/mithril/infra').json()
    assert infra['enabled'] is False and infra['regions'] == []
    assert 'API key' in infra['reason'] or 'api_key' in infra['reason']
    answer = client.get('/plugins/api/mithril/bids')
    assert answer.status_code == 503
    assert answer.json()['error'] == infra['reason']


def test_viewers_may_read_every_route() -> None:
    """SkyPilot lets a viewer call what the plugin's viewer allowlist
    matches (Casbin keyMatch2, as sky.users.permission does); every route
    here is a GET it matches."""
    allowed = MithrilPlugin().viewer_allowlist
    for route in routes.router.routes:
        assert isinstance(route, fastapi.routing.APIRoute)
        assert route.methods == {'GET'}, route.path
        assert any(rule.method == 'GET' and
                   casbin.util.key_match2(route.path, rule.path)
                   for rule in allowed), route.path
