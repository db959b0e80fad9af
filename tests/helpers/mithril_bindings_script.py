"""Calls through the OpenAPI-generated client inside Mithril's own SDK
(`mithril.api.bindings` of PyPI's mithril-client), unchanged, as its users do.

Run by the interpreter of the venv that holds mithril-client (never this
repository's), against the endpoint in MITHRIL_API_URL with MITHRIL_API_KEY
and MITHRIL_PROJECT:

    python mithril_bindings_script.py place NAME PUBLIC_KEY
        the account, the catalog and prices, an SSH key registered, a bid
        placed on the cheapest auction at three times its spot price
    python mithril_bindings_script.py settle BID_FID
        the bid read, its instances listed and read, the bid cancelled

Each prints one JSON object with what the client parsed. Every call raises
on a status the spec does not document for it, and a call that parsed a
validation error or nothing fails, so a shape the client cannot read ends
the script with a traceback.
"""

import json
import os
import sys
from decimal import Decimal
from typing import Any, Dict, List

from mithril.api.bindings import AuthenticatedClient
from mithril.api.bindings.api.instance_types import \
    get_instance_types_v2_instance_types_get as instance_types
from mithril.api.bindings.api.instances import \
    get_instance_status_v2_instances_instance_fid_status_get as instance_status
from mithril.api.bindings.api.instances import \
    get_instances_v2_instances_get as instances
from mithril.api.bindings.api.pricing import \
    get_current_prices_v2_v2_pricing_current_get as current_prices
from mithril.api.bindings.api.pricing import \
    get_historical_prices_v2_v2_pricing_history_get as price_history
from mithril.api.bindings.api.profile import get_me_v2_me_get as me
from mithril.api.bindings.api.projects import \
    get_projects_v2_projects_get as projects
from mithril.api.bindings.api.spot import \
    cancel_bid_v2_spot_bids_bid_fid_delete as cancel_bid
from mithril.api.bindings.api.spot import create_bid_v2_spot_bids_post as create_bid
from mithril.api.bindings.api.spot import \
    get_auctions_v2_spot_availability_get as availability
from mithril.api.bindings.api.spot import \
    get_bid_history_v2_spot_bids_bid_fid_history_get as bid_history
from mithril.api.bindings.api.spot import \
    get_bid_status_v2_spot_bids_bid_fid_status_get as bid_status
from mithril.api.bindings.api.spot import get_bid_v2_spot_bids_bid_fid_get as get_bid
from mithril.api.bindings.api.spot import get_bids_v2_spot_bids_get as bids
from mithril.api.bindings.api.ssh_keys import \
    create_ssh_key_v2_ssh_keys_post as create_ssh_key
from mithril.api.bindings.api.ssh_keys import \
    get_ssh_keys_v2_ssh_keys_get as ssh_keys
from mithril.api.bindings.models import (CreateBidRequest, CreateSshKeyRequest,
                                         HTTPValidationError,
                                         LaunchSpecificationModel)


def _parsed(value: Any) -> Any:
    """A call's parsed answer; fails on a validation error or nothing."""
    if value is None or isinstance(value, HTTPValidationError):
        raise SystemExit(f'the call parsed {value!r}')
    return value


def _client() -> AuthenticatedClient:
    return AuthenticatedClient(base_url=os.environ['MITHRIL_API_URL'],
                               token=os.environ['MITHRIL_API_KEY'],
                               raise_on_unexpected_status=True)


def place(client: AuthenticatedClient, project: str, name: str,
          public_key: str) -> Dict[str, Any]:
    """The account, catalog and prices; a key; a bid over the spot price."""
    organization = _parsed(me.sync(client=client)).organization_id
    project_fids = [p.fid for p in _parsed(projects.sync(client=client))]
    types = _parsed(instance_types.sync(client=client))
    auctions = _parsed(availability.sync(client=client))
    cheapest = min(auctions,
                   key=lambda a: Decimal(a.last_instance_price.lstrip('$')))
    prices = _parsed(current_prices.sync(client=client,
                                         instance_type=cheapest.instance_type,
                                         region=cheapest.region))
    history = _parsed(price_history.sync(client=client,
                                         instance_types=cheapest.instance_type,
                                         region=cheapest.region,
                                         num_samples=-1))
    key = _parsed(create_ssh_key.sync(client=client, body=CreateSshKeyRequest(
        project=project, name=f'{name}-key', public_key=public_key)))
    listed_keys = _parsed(ssh_keys.sync(client=client, project=project))
    limit = Decimal(cheapest.last_instance_price.lstrip('$')) * 3
    bid = _parsed(create_bid.sync(client=client, body=CreateBidRequest(
        project=project, region=cheapest.region,
        instance_type=cheapest.instance_type, limit_price=f'${limit:.2f}',
        instance_quantity=1, name=name,
        launch_specification=LaunchSpecificationModel(volumes=[],
                                                      ssh_keys=[key.fid]))))
    listed = _parsed(bids.sync(client=client, project=project, name=name))
    return {
        'organization_id': organization,
        'projects': project_fids,
        'instance_types': sorted(t.name for t in types),
        'auctions': len(auctions),
        'auction': {'instance_type': cheapest.instance_type,
                    'region': cheapest.region},
        'spot_price_cents': prices.spot_price_cents,
        'history_series': len(history.series),
        'ssh_key': key.fid,
        'ssh_keys': [k.fid for k in listed_keys],
        'bid': {'fid': bid.fid, 'status': bid.status.value,
                'limit_price': bid.limit_price},
        'bids_named': [b.fid for b in listed.data],
    }


def settle(client: AuthenticatedClient, project: str,
           bid_fid: str) -> Dict[str, Any]:
    """The allocated bid, its instances, then its cancellation."""
    bid = _parsed(get_bid.sync(bid_fid, client=client))
    status = _parsed(bid_status.sync(bid_fid, client=client))
    listed = _parsed(instances.sync(client=client, project=project,
                                    bid_fid_in=[bid_fid]))
    statuses: List[str] = [
        _parsed(instance_status.sync(i.fid, client=client)).status.value
        for i in listed.data
    ]
    cancel = cancel_bid.sync_detailed(bid_fid, client=client)
    history = _parsed(bid_history.sync(bid_fid, client=client))
    after = _parsed(get_bid.sync(bid_fid, client=client))
    return {
        'status': bid.status.value,
        'status_endpoint': status.status.value,
        'instances': [i.fid for i in listed.data],
        'instance_statuses': statuses,
        'cancel_status': int(cancel.status_code),
        'history': [e.event_type.value for e in history.events],
        'status_after_cancel': after.status.value,
    }


def main(argv: List[str]) -> None:
    client = _client()
    project = os.environ['MITHRIL_PROJECT']
    with client:
        if argv[1] == 'place':
            report = place(client, project, argv[2], argv[3])
        elif argv[1] == 'settle':
            report = settle(client, project, argv[2])
        else:
            raise SystemExit(f'unknown step {argv[1]!r}')
    print(json.dumps(report))


if __name__ == '__main__':
    main(sys.argv)
