"""Live spot prices laid over the shipped catalog, so the optimizer's cost,
`sky show-gpus` and the cheapest-region choice reflect the market now.

Prices come from `GET /v2/spot/availability` (one row per instance type and
region auction) and `GET /v2/pricing/current` per auction, and are written into a copy of the catalog CSV in
`~/.sky/mithril/`, which the catalog module reads through SkyPilot's own
LazyDataFrame. The copy is refreshed in the background once it is older than
CACHE_TTL_SECONDS (stale-while-revalidate): the optimizer never waits on the
API, except for one short attempt when no copy exists yet. Without
credentials, or with the API unreachable, the shipped prices are used as
they are. A price of $0 is never taken from the API.
"""

import json
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Dict, Optional, Tuple

from sky_mithril import credentials as credentials_lib
from sky_mithril import files
from sky_mithril.api import client as client_lib
from sky_mithril.api import errors
from sky_mithril.catalog import catalog_files

CACHE_TTL_SECONDS = 60.0
FETCH_TIMEOUT_SECONDS = 3.0

Quotes = Dict[Tuple[str, str], Tuple[Decimal, int]]

_refreshing = threading.Lock()


def cache_dir() -> Path:
    return Path.home() / '.sky' / 'mithril'


def overlay_path() -> Path:
    """The catalog copy with live prices that the catalog module reads."""
    return cache_dir() / 'vms-live.csv'


def _state_path() -> Path:
    return cache_dir() / 'live-prices.json'


def fetch_quotes(creds: credentials_lib.Credentials) -> Quotes:
    """(instance type name, region) → (spot price, free capacity).

    The auctions come from one availability call; each one's spot price
    from `/v2/pricing/current`, since the availability row's
    `last_instance_price` is what the last allocation paid and goes stale
    when the market moves. When pricing calls fail or the time budget runs
    out, the availability price stands in.
    """
    deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
    with client_lib.MithrilClient.from_credentials(
            creds, timeout=FETCH_TIMEOUT_SECONDS,
            max_retry_seconds=0.0) as client:
        names = {t.fid: t.name for t in client.list_instance_types()}
        quotes: Quotes = {}
        for auction in client.list_spot_availability():
            name = names.get(auction.instance_type)
            if not name:
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
                quotes[(name, auction.region)] = (price, auction.capacity)
        return quotes


def _read_state() -> Dict:
    try:
        return json.loads(_state_path().read_text())
    except (OSError, ValueError):
        return {}


def refresh() -> None:
    """Fetches live prices and rewrites the overlay; the shipped prices stand
    wherever (or whenever) the API has none."""
    try:
        creds: Optional[credentials_lib.Credentials] = (
            credentials_lib.load_credentials())
    except credentials_lib.CredentialsError:
        creds = None
    quotes: Quotes = {}
    if creds is not None:
        try:
            quotes = fetch_quotes(creds)
        except errors.MithrilAPIError:
            pass
    rows = catalog_files.read_rows(catalog_files.catalog_path())
    for row in rows:
        quote = quotes.get((row['InstanceType'], row['Region']))
        if quote is not None:
            row['Price'] = row['SpotPrice'] = str(quote[0])
    catalog_files.write_rows(rows, overlay_path())
    state = {
        'fetched_at': time.time(),
        'quotes': {f'{t}@{r}': [str(p), c] for (t, r), (p, c) in quotes.items()},
    }
    files.write_atomically(_state_path(), json.dumps(state))


def _refresh_in_background() -> None:
    if not _refreshing.acquire(blocking=False):
        return

    def run() -> None:
        try:
            refresh()
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
            refresh()
        state = _read_state()
        age = time.time() - state.get('fetched_at', 0.0)
        if age > CACHE_TTL_SECONDS:
            _refresh_in_background()
        mtime = overlay_path().stat().st_mtime
        changed = mtime != self._loaded_mtime
        self._loaded_mtime = mtime
        return changed


def quote(instance_type: str, region: str) -> Optional[Tuple[Decimal, int]]:
    """The last live (spot price, free capacity) seen for an auction."""
    value = _read_state().get('quotes', {}).get(f'{instance_type}@{region}')
    return (Decimal(value[0]), int(value[1])) if value else None
