"""Live spot prices laid over the shipped catalog, so the optimizer's cost,
`sky show-gpus` and the cheapest-region choice reflect the market now.

The market comes from `GET /v2/spot/availability` (one row per instance type
and region auction, with its free capacity), `GET /v2/instance-types` (the
shapes) and `GET /v2/pricing/current` per auction (the spot price). The
overlay (`~/.sky/mithril/vms-live.csv`, read by the catalog module through
SkyPilot's LazyDataFrame) has a row for every auction the API lists, also
for types and regions the shipped catalog lacks; shipped rows the API no
longer lists are kept (existing clusters still resolve) and marked
`delisted` in the state file, so ranking puts them last.

One refresh per CACHE_TTL_SECONDS for all processes sharing SkyPilot's
state (an API server's workers, and a team server's replicas on its
Postgres): the market fetched last, with its time, is kept in SkyPilot's
database (`shared_state`, one entry per API endpoint and project), and a
stale overlay is served while one process, holding SkyPilot's lock `live-prices`, refreshes it in the background; the
others skip. A host whose overlay is older than the shared market writes its
overlay (and `live-prices.json`, its local state) from it without asking the
API. The optimizer never waits on the API, except for one short
attempt when no overlay exists yet. Without credentials, or with the API
unreachable, the shipped catalog stands as it is: its prices are recent
median spot prices (see `refresh`), an estimate, never the auction floor.
A price of $0 is never taken from the API.
"""

import dataclasses
import json
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Tuple

from sky_mithril.account import credentials as credentials_lib
from sky_mithril import files
from sky_mithril import shared_state
from sky_mithril.api import client as client_lib
from sky_mithril.api import errors
from sky_mithril.catalog import catalog_files
from sky_mithril.catalog import rows as rows_lib

CACHE_TTL_SECONDS = 60.0
FETCH_TIMEOUT_SECONDS = 3.0
# The shared market outlives its TTL (a stale market is served while it is
# refreshed, and stands when the API is down), but not forever.
SHARED_KEEP_SECONDS = 7 * 86400.0
SHARED_KEY = 'live-prices'
REFRESH_LOCK = 'live-prices'

Key = Tuple[str, str]  # (instance type name, region)
Quotes = Dict[Key, Tuple[Decimal, int]]

_refreshing = threading.Lock()


def cache_dir() -> Path:
    return files.state_dir()


def overlay_path() -> Path:
    """The catalog copy with live prices that the catalog module reads."""
    return cache_dir() / 'vms-live.csv'


def _state_path() -> Path:
    return cache_dir() / 'live-prices.json'


@dataclasses.dataclass(frozen=True)
class Market:
    """What the API lists now: quotes per auction and the catalog rows
    (shape and spot price) of every auction, and of every CPU VM type and
    region (at its fixed price)."""

    quotes: Quotes
    rows: List[Dict[str, str]]
    # The fid each auction (or CPU VM region) sells its instance type under,
    # so a launch can place its bid or create its VM without looking the
    # type up again.
    fids: Dict[Key, str]


def fetch_market(creds: credentials_lib.Credentials) -> Market:
    """Every listed auction: (spot price, free capacity) and its catalog row;
    and every CPU VM type in every CPU region, at its fixed price (no quote:
    nothing to win). A project without CPU VMs (the CPU endpoints refuse)
    gets the auctions alone.

    The spot price comes from `/v2/pricing/current`, since the availability
    row's `last_instance_price` is what the last allocation paid and goes
    stale when the market moves. When pricing calls fail or the time budget
    runs out, the availability price stands in.
    """
    deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
    with client_lib.MithrilClient.from_credentials(
            creds, timeout=FETCH_TIMEOUT_SECONDS,
            max_retry_seconds=0.0) as client:
        types = {t.fid: t for t in client.list_instance_types()}
        quotes: Quotes = {}
        rows: List[Dict[str, str]] = []
        fids: Dict[Key, str] = {}
        for auction in client.list_spot_availability():
            instance_type = types.get(auction.instance_type)
            if instance_type is None:
                continue
            price = auction.last_instance_price
            if time.monotonic() < deadline:
                try:
                    current = client.get_current_price(auction.instance_type,
                                                       region=auction.region)
                    price = current.spot_price or price
                except errors.MithrilAPIError:
                    pass
            if price > 0:
                quotes[(instance_type.name, auction.region)] = (price,
                                                                auction.capacity)
                fids[(instance_type.name, auction.region)] = auction.instance_type
                rows.append(rows_lib.catalog_row(instance_type,
                                                 auction.region, price))
        try:
            cpu_rows, cpu_fids = rows_lib.cpu_vm_rows(client)
        except errors.MithrilAPIError:
            cpu_rows, cpu_fids = [], {}
        return Market(quotes, rows + cpu_rows, {**fids, **cpu_fids})


def fetch_quotes(creds: credentials_lib.Credentials) -> Quotes:
    """(instance type name, region) → (spot price, free capacity)."""
    return fetch_market(creds).quotes


def _read_state() -> Dict:
    try:
        return json.loads(_state_path().read_text())
    except (OSError, ValueError):
        return {}


def _overlay_rows(market_rows: List[Dict[str, str]]
                  ) -> Tuple[List[Dict[str, str]], List[Key]]:
    """The overlay's rows and the shipped auctions the API no longer lists
    (`market_rows`: a `Market`'s rows)."""
    shipped = catalog_files.read_rows(catalog_files.catalog_path())
    if not market_rows:
        return shipped, []
    listed = {(r['InstanceType'], r['Region']) for r in market_rows}
    delisted = [r for r in shipped
                if (r['InstanceType'], r['Region']) not in listed]
    return market_rows + delisted, [(r['InstanceType'], r['Region'])
                                    for r in delisted]


def _credentials() -> Optional[credentials_lib.Credentials]:
    try:
        return credentials_lib.load_credentials()
    except credentials_lib.CredentialsError:
        return None


def shared_key(creds: Optional[credentials_lib.Credentials]) -> str:
    """The shared market's entry for the API endpoint and project `creds`
    name: processes pointed elsewhere (another profile, an emulator) never
    read each other's market."""
    if creds is None:
        return f'{SHARED_KEY}/no-credentials'
    return (f'{SHARED_KEY}/'
            f'{shared_state.project_scope(creds.api_url, creds.project_id)}')


def refresh() -> None:
    """Fetches the market, shares it, and rewrites this host's overlay from
    it (`_write_local`); the shipped catalog stands wherever (or whenever)
    the API has nothing."""
    creds = _credentials()
    market: Optional[Market] = None
    if creds is not None:
        try:
            market = fetch_market(creds)
        except errors.MithrilAPIError:
            market = None
    shared = {
        'fetched_at': time.time(),
        'live': bool(market and market.rows),
        'quotes': {f'{t}@{r}': [str(p), c]
                   for (t, r), (p, c) in (market.quotes if market else {}).items()},
        'fids': {f'{t}@{r}': fid
                 for (t, r), fid in (market.fids if market else {}).items()},
        'rows': market.rows if market else [],
    }
    _write_shared(shared_key(creds), shared)
    _write_local(shared)


def _read_shared(key: str) -> Optional[Dict]:
    """The market last fetched by any process sharing SkyPilot's state, as
    `refresh` shares it under `key`; None when there is none (or it cannot
    be read)."""
    try:
        shared = json.loads(shared_state.get(key) or 'null')
    except ValueError:
        return None
    if not isinstance(shared, dict) or not isinstance(shared.get('rows'), list):
        return None
    return shared


def _write_shared(key: str, shared: Dict) -> None:
    shared_state.put(key, json.dumps(shared),
                     shared['fetched_at'] + SHARED_KEEP_SECONDS)


def _write_local(shared: Dict) -> None:
    """Rewrites this host's overlay (and the copy the plugin-less `sky`
    client validates against) and its state from the shared market."""
    rows, delisted = _overlay_rows(shared['rows'])
    files.write_private(overlay_path(),
                        catalog_files.rows_csv(rows, overlay_path()))
    _publish_for_client()
    state = {key: shared[key] for key in ('fetched_at', 'live', 'quotes', 'fids')}
    state['delisted'] = [f'{t}@{r}' for t, r in delisted]
    files.write_private(_state_path(), json.dumps(state))


def _publish_for_client() -> None:
    """The `sky` client loads no plugin and checks regions and instance
    types against SkyPilot's Mithril catalog file: keep it equal to the
    overlay, so a region that exists only in live data passes there too."""
    from sky.skylet import constants  # pylint: disable=import-outside-toplevel
    target = catalog_files.skypilot_catalog_file(
        Path.home() / '.sky', constants.CATALOG_SCHEMA_VERSION)
    try:
        catalog_files.publish_for_skypilot(target, overlay_path())
    except OSError:
        pass  # A read-only ~/.sky: the client keeps the shipped catalog.


def _is_fresh() -> bool:
    age = time.time() - _read_state().get('fetched_at', 0.0)
    return overlay_path().exists() and age <= CACHE_TTL_SECONDS


def _is_shared_fresh(shared: Optional[Dict]) -> bool:
    return (shared is not None and
            time.time() - shared.get('fetched_at', 0.0) <= CACHE_TTL_SECONDS)


def refresh_if_stale(blocking: bool) -> None:
    """Refreshes unless another process holds the lock (when not
    `blocking`) or this host's overlay is within the TTL; a shared market
    within the TTL is written here instead of fetched again."""
    with shared_state.held(REFRESH_LOCK, blocking) as held:
        if not held or _is_fresh():
            return
        shared = _read_shared(shared_key(_credentials()))
        if _is_shared_fresh(shared):
            _write_local(shared)
        else:
            refresh()


def _refresh_in_background() -> None:
    if not _refreshing.acquire(blocking=False):
        return

    def run() -> None:
        try:
            refresh_if_stale(blocking=False)
        finally:
            _refreshing.release()

    threading.Thread(target=run, name='mithril-live-prices', daemon=True).start()


class OverlayFreshness:
    """`update_if_stale_func` for the catalog's LazyDataFrame: True when the
    overlay changed since the last load; schedules refreshes of stale data."""

    def __init__(self) -> None:
        self._loaded_mtime = 0.0

    def __call__(self) -> bool:
        if not overlay_path().exists():
            refresh_if_stale(blocking=True)
        elif not _is_fresh():
            _refresh_in_background()
        mtime = overlay_path().stat().st_mtime
        changed = mtime != self._loaded_mtime
        self._loaded_mtime = mtime
        return changed


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The last market seen: whether it is live, quotes, delisted auctions."""

    live: bool
    quotes: Quotes
    delisted: FrozenSet[Key]
    fids: Dict[Key, str]

    def quote(self, instance_type: str,
              region: str) -> Optional[Tuple[Decimal, int]]:
        return self.quotes.get((instance_type, region))

    def fid(self, instance_type: str, region: str) -> Optional[str]:
        """The instance type's fid in that region's auction, if listed."""
        return self.fids.get((instance_type, region))


def _key(text: str) -> Key:
    instance_type, _, region = text.partition('@')
    return instance_type, region


def snapshot() -> Snapshot:
    """The market as of the last refresh (empty when there was none)."""
    state = _read_state()
    quotes = {_key(k): (Decimal(v[0]), int(v[1]))
              for k, v in state.get('quotes', {}).items()}
    return Snapshot(bool(state.get('live')) and bool(quotes), quotes,
                    frozenset(_key(k) for k in state.get('delisted', [])),
                    {_key(k): v for k, v in state.get('fids', {}).items()})


def quote(instance_type: str, region: str) -> Optional[Tuple[Decimal, int]]:
    """The last live (spot price, free capacity) seen for an auction."""
    return snapshot().quote(instance_type, region)
