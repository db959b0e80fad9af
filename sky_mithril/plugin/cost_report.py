"""`sky cost-report` shows a Mithril cluster at what its bids were charged.

SkyPilot 0.14.1 prices every cluster of the report in `sky.core.cost_report`
as `Resources.get_cost(duration) × nodes`: the cloud's
`instance_type_to_hourly_cost` (for Mithril, today's spot price, else the
catalog's estimate) times how long SkyPilot saw the cluster up. A cloud is
asked only for an hourly price of an instance type in a region; nothing it
is given says which cluster, or when, so no cloud can report a cluster's real
cost through that interface. The plugin wraps `sky.core.cost_report` (the API
server and its workers run the report) and replaces each Mithril cluster's
`total_cost` with what its bids were charged, from Mithril's pricing history
(`account.charges`): the clearing prices over their lifetime, never more than
the limits. SkyPilot's other columns (the duration, the hourly PRICE the
client computes) are SkyPilot's.

A cluster's bids are the bids named as SkyPilot names the cluster on the
cloud (`make_cluster_name_on_cloud`, with the record's user hash), each
counted for the record of that name it was placed in (the latest one that
started before it: a name reused after `sky down` starts a new record). A
cluster whose bids are not in the current credentials' project (launched
under another profile or project) keeps SkyPilot's estimate; so does every
Mithril cluster when Mithril cannot be read, with a warning.
"""

import datetime
from decimal import Decimal
from typing import Any, Dict, List, Optional

from sky import sky_logging
from sky.utils import common_utils

from sky_mithril import CLOUD_NAME
from sky_mithril import cloud
from sky_mithril.account import charges as charges_lib
from sky_mithril.account import connection
from sky_mithril.account import credentials as credentials_lib
from sky_mithril.api import errors
from sky_mithril.api import models

logger = sky_logging.init_logger('sky.sky_mithril.plugin')

# A bid placed this long before its record's first usage interval began is
# still its record's (the interval starts in the API server's clock, the bid
# in Mithril's).
CLOCK_SKEW = datetime.timedelta(minutes=5)


def with_charges(reports: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """`reports` (what `sky.core.cost_report` returned) with each Mithril
    cluster's `total_cost` set to what its bids were charged."""
    by_bid_name: Dict[str, List[Dict[str, Any]]] = {}
    for report in reports:
        if 'total_cost' in report and _is_mithril(report) and (
                report.get('usage_intervals')):
            by_bid_name.setdefault(bid_name(report), []).append(report)
    if not by_bid_name:
        return reports
    try:
        conn = connection.connect()
    except (credentials_lib.CredentialsError, errors.MithrilAPIError) as e:
        logger.warning(f'Mithril clusters are shown at SkyPilot\'s estimate: '
                       f'cannot read what they were charged ({e}).')
        return reports
    try:
        for name, records in by_bid_name.items():
            _set_charged(conn, name, records)
    except errors.MithrilAPIError as e:
        logger.warning(f'Some Mithril clusters are shown at SkyPilot\'s '
                       f'estimate: reading what they were charged failed '
                       f'({e}).')
    finally:
        conn.client.close()
    return reports


def _is_mithril(report: Dict[str, Any]) -> bool:
    cloud = getattr(report.get('resources'), 'cloud', None)
    return cloud is not None and cloud.canonical_name() == CLOUD_NAME


def bid_name(report: Dict[str, Any]) -> str:
    """The name the cluster's bids carry: its name on the cloud, as SkyPilot
    makes it for the user who launched it (`report['user_hash']`)."""
    suffix = f'-{report.get("user_hash") or common_utils.get_user_hash()}'
    max_length = cloud.Mithril.max_cluster_name_length()
    return common_utils.make_cluster_name_on_cloud(
        report['name'], None if max_length is None else max_length - len(suffix),
        add_user_hash=False) + suffix


def _start(report: Dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(report['usage_intervals'][0][0],
                                           datetime.timezone.utc)


def _set_charged(conn: connection.Connection, name: str,
                 records: List[Dict[str, Any]]) -> None:
    """Sets each record's `total_cost` to what the bids placed in it were
    charged; a record with no bid found keeps SkyPilot's estimate."""
    records = sorted(records, key=_start)
    placed_in: Dict[int, List[models.Bid]] = {}
    for bid in conn.client.list_bids(conn.project_id, name=name):
        if bid.name != name:
            continue
        owner = _record_of(records, bid)
        if owner is not None:
            placed_in.setdefault(owner, []).append(bid)
    for index, bids in placed_in.items():
        records[index]['total_cost'] = float(sum(
            (charges_lib.bid_spend(conn, bid, None, None).cost
             for bid in bids),
            Decimal(0)))


def _record_of(records: List[Dict[str, Any]],
               bid: models.Bid) -> Optional[int]:
    """The index of the latest record (by start) that began before `bid` was
    placed, give or take CLOCK_SKEW."""
    owner = None
    for index, record in enumerate(records):
        if _start(record) - CLOCK_SKEW <= bid.created_at:
            owner = index
    return owner
