"""What the dashboard's routes answer, as JSON-ready dicts: the market (spot
price now, free capacity, 7-day history, the user's and the suggested limit),
the project's bids with their SkyPilot clusters and truth-table statuses,
the worst-case spend against `max_hourly_spend`, volumes, reservations, and
the Infra page's rows. The project's bids and instances come from its shared
snapshot (`project_snapshot`), the one every status refresh reads; the
instance types and the price history, which move slowly, are shared for
longer (`shared_answers.SLOW_TTL_SECONDS`). Money is a number of
dollars (per instance-hour where it is a price); times are ISO 8601. Nothing
here holds or returns the API key."""

import datetime
import hashlib
from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple

from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.catalog import live_prices
from sky_mithril.catalog import price_history
from sky_mithril.money import cents_to_dollars
from sky_mithril.plugin.dashboard import shared_answers
from sky_mithril.provision import budget as budget_lib
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import project_snapshot
from sky_mithril.provision import status_table
from sky_mithril.task import settings

HISTORY_DAYS = 7
SUGGESTED_LIKELIHOOD = Decimal('0.9')
"""The allocation likelihood the suggested limit is for, as `prices`' default."""
_IN_USE = (models.InstanceState.RUNNING,)
_PAUSED = (models.InstanceState.PAUSED, models.InstanceState.STOPPING,
           models.InstanceState.STOPPED)


def _oldest_first(snapshot: project_snapshot.Snapshot) -> List[models.Bid]:
    """The project's live bids in the order they were placed."""
    return sorted(snapshot.bids, key=lambda b: (b.created_at, b.fid))


def _nodes(snapshot: project_snapshot.Snapshot,
           bid: models.Bid) -> List[models.Instance]:
    """The instances that stand for the bid's nodes, head first, at most
    `instance_quantity` (as a status refresh reads them)."""
    return cluster_bid.nodes_of(bid, snapshot.instances_of_bid(bid.fid))


def _dollars(amount: Optional[Decimal]) -> Optional[float]:
    return None if amount is None else float(amount)


def _user_section() -> Dict[str, Any]:
    """The user's `plugins.mithril` settings; none when the config is one
    a launch would refuse (the launch says why)."""
    try:
        return settings.sections_from_skypilot(None)[1]
    except settings.MithrilConfigError:
        return {}


def _quotes() -> live_prices.Snapshot:
    """Spot price and free capacity per auction: the live prices every
    process of the API server shares (one refresh per TTL)."""
    live_prices.refresh_if_stale(blocking=True)
    return live_prices.snapshot()


def _spot_now(quotes: live_prices.Snapshot, auction: models.Auction,
              name: str) -> Tuple[Decimal, int]:
    """(spot price, free capacity): the shared live quote, else the
    availability row's."""
    return quotes.quote(name, auction.region) or (auction.last_instance_price,
                                                  auction.capacity)


def _instance_types(
        conn: connection.Connection) -> Dict[str, models.InstanceType]:
    """The instance types by fid, listed once per slow TTL for everyone."""
    listed = shared_answers.shared(
        f'{project_snapshot.scope_of(conn)}/instance-types',
        shared_answers.SLOW_TTL_SECONDS,
        lambda: [t.model_dump(mode='json')
                 for t in conn.client.list_instance_types()])
    return {t.fid: t for t in map(models.InstanceType.model_validate, listed)}


def _price_history(conn: connection.Connection,
                   type_fids: List[str]) -> models.PriceHistory:
    """The last HISTORY_DAYS of spot prices of `type_fids`, asked once per
    slow TTL for everyone."""
    def ask() -> Dict[str, Any]:
        start = (datetime.datetime.now(datetime.timezone.utc) -
                 datetime.timedelta(days=HISTORY_DAYS))
        return conn.client.get_price_history(
            instance_types=type_fids, num_samples=price_history.NUM_SAMPLES,
            start_time=start).model_dump(mode='json')

    which = hashlib.sha256(','.join(type_fids).encode()).hexdigest()[:16]
    return models.PriceHistory.model_validate(shared_answers.shared(
        f'{project_snapshot.scope_of(conn)}/price-history/{which}',
        shared_answers.SLOW_TTL_SECONDS, ask))


def market(conn: connection.Connection,
           snapshot: project_snapshot.Snapshot) -> List[Dict[str, Any]]:
    """One entry per auction (instance type, region), by type then region."""
    types = _instance_types(conn)
    auctions = [a for a in conn.client.list_spot_availability()
                if a.instance_type in types]
    quotes = _quotes()
    samples: Dict[Tuple[str, str], List[price_history.Sample]] = {}
    if auctions:
        answer = _price_history(conn,
                                sorted({a.instance_type for a in auctions}))
        for series in answer.series:
            samples.setdefault((series.instance_type, series.region), []).extend(
                zip(series.timestamps, series.spot_prices))
    user_section = _user_section()
    entries = []
    for auction in auctions:
        instance_type = types[auction.instance_type]
        spot, free = _spot_now(quotes, auction, instance_type.name)
        history = sorted(samples.get((auction.instance_type, auction.region), []))
        prices = [price for _, price in history]
        suggested = (price_history.suggest_limit(
            prices, SUGGESTED_LIKELIHOOD, price_history.time_weights(history))
                     if history else None)
        bid_limits = [b.limit_price for b in snapshot.bids
                      if b.instance_type == auction.instance_type and
                      b.region == auction.region]
        if bid_limits:
            limit: Optional[Decimal] = max(bid_limits)
            limit_source = 'your live bids here (the highest limit)'
        else:
            try:
                configured = settings.resolve_limit_price(
                    instance_type.num_gpus, {}, user_section)
                limit, limit_source = configured.per_hour, configured.source
            except settings.MithrilConfigError:
                limit, limit_source = None, 'your config does not resolve'
        entries.append({
            'instance_type': instance_type.name,
            'region': auction.region,
            'gpus': instance_type.num_gpus,
            'accelerator': instance_type.gpu_type,
            'spot_price': _dollars(spot),
            'free_capacity': free,
            'suggested_limit': _dollars(suggested),
            'suggested_likelihood': float(SUGGESTED_LIKELIHOOD),
            'your_limit': _dollars(limit),
            'your_limit_source': limit_source,
            'history': [[when.isoformat(), float(price)]
                        for when, price in history],
        })
    return sorted(entries, key=lambda e: (e['instance_type'], e['region']))


def _type_names(conn: connection.Connection) -> Dict[str, str]:
    return {fid: t.name for fid, t in _instance_types(conn).items()}


def bids(conn: connection.Connection, snapshot: project_snapshot.Snapshot,
         clusters: Dict[str, str]) -> List[Dict[str, Any]]:
    """Every live bid, oldest first: its SkyPilot cluster (None: not
    SkyPilot's), the status and reason SkyPilot shows for each node (the
    truth table), its limit and the clearing price now."""
    names = _type_names(conn)
    quotes = _quotes()
    entries = []
    for bid in _oldest_first(snapshot):
        statuses = status_table.node_statuses(bid, _nodes(snapshot, bid),
                                              non_terminated_only=False)
        nodes = [{'node': key,
                  'status': status.value if status is not None else None,
                  'reason': reason}
                 for key, (status, reason) in statuses.items()]
        name = names.get(bid.instance_type, bid.instance_type)
        quote = quotes.quote(name, bid.region or '')
        entries.append({
            'fid': bid.fid,
            'name': bid.name,
            'cluster': clusters.get(bid.name),
            'bid_status': bid.status,
            'status': nodes[0]['status'] if nodes else None,
            'reason': next((n['reason'] for n in nodes if n['reason']), None),
            'instance_type': name,
            'region': bid.region,
            'instances': bid.instance_quantity,
            'limit_price': _dollars(bid.limit_price),
            'clearing_price': _dollars(quote[0]) if quote else None,
            'worst_case_per_hour': _dollars(budget_lib.worst_case(bid)),
            'nodes': nodes,
            'created_at': bid.created_at.isoformat(),
        })
    return entries


def spend(snapshot: project_snapshot.Snapshot) -> Dict[str, Any]:
    """The project's worst case per hour (limit × instances over its
    billable bids) and the user's `max_hourly_spend`, if set."""
    budget = settings.resolve_spend_budget({}, _user_section())
    worst = budget_lib.total_worst_case(snapshot.bids)
    return {
        'worst_case_per_hour': _dollars(worst),
        'max_hourly_spend': _dollars(budget.per_hour) if budget else None,
        'max_hourly_spend_source': budget.source if budget else None,
        'billable_bids': sum(1 for b in snapshot.bids
                             if b.status in budget_lib.BILLABLE),
    }


def volumes(conn: connection.Connection, snapshot: project_snapshot.Snapshot,
            clusters: Dict[str, str]) -> List[Dict[str, Any]]:
    """The project's volumes and who uses them: a cluster, else a bid."""
    bid_names = {b.fid: b.name for b in snapshot.bids}
    entries = []
    for volume in conn.client.list_volumes(conn.project_id):
        users = [clusters.get(bid_names[fid], bid_names[fid])
                 for fid in volume.bids if fid in bid_names]
        entries.append({
            'fid': volume.fid,
            'name': volume.name,
            'region': volume.region,
            'interface': volume.interface.value,
            'capacity_gb': volume.capacity_gb,
            'used_by': users,
        })
    return sorted(entries, key=lambda e: e['name'])


def reservations(conn: connection.Connection) -> List[Dict[str, Any]]:
    """The project's reservations: window, instances in use and paused,
    and (once started) what was charged and earned back."""
    found = conn.client.list_reservations(conn.project_id)
    if not found:
        return []
    names = _type_names(conn)
    instances = conn.client.list_instances(
        conn.project_id, reservation_fids=[r.fid for r in found])
    entries = []
    for reservation in sorted(found, key=lambda r: r.start_time):
        own = [i for i in instances if i.reservation == reservation.fid]
        credits: Optional[Dict[str, Optional[float]]] = None
        if reservation.status != models.ReservationState.PENDING:
            usage = conn.client.get_reservation_usage(reservation.fid).summary
            credits = {
                'charged': _dollars(cents_to_dollars(usage.committed_cost_cents)),
                'pause_credit': _dollars(cents_to_dollars(
                    usage.flex_use_credits_cents)),
                'return_credit': _dollars(cents_to_dollars(
                    usage.early_termination_credits_cents)),
                'net_cost': _dollars(cents_to_dollars(usage.net_cost_cents)),
            }
        entries.append({
            'fid': reservation.fid,
            'name': reservation.name,
            'status': reservation.status,
            'instance_type': names.get(reservation.instance_type,
                                       reservation.instance_type),
            'region': reservation.region,
            'start_time': reservation.start_time.isoformat(),
            'end_time': reservation.end_time.isoformat(),
            'instance_quantity': reservation.instance_quantity,
            'in_use': sum(1 for i in own if i.status in _IN_USE),
            'paused': sum(1 for i in own if i.status in _PAUSED),
            'unit_price': _dollars(reservation.unit_price),
            'credits': credits,
        })
    return entries


def infra_regions(conn: connection.Connection,
                  snapshot: project_snapshot.Snapshot) -> List[Dict[str, Any]]:
    """One row per region the project can bid in: its instance types, live
    bids and nodes."""
    names = _type_names(conn)
    regions: Dict[str, Dict[str, Any]] = {}
    for auction in conn.client.list_spot_availability():
        if auction.instance_type not in names:
            continue
        row = regions.setdefault(auction.region, {
            'region': auction.region, 'instance_types': [], 'bids': 0,
            'nodes': 0})
        row['instance_types'].append(names[auction.instance_type])
    for bid in snapshot.bids:
        if bid.region in regions:
            regions[bid.region]['bids'] += 1
            regions[bid.region]['nodes'] += len(_nodes(snapshot, bid))
    for row in regions.values():
        row['instance_types'].sort()
    return [regions[r] for r in sorted(regions)]
