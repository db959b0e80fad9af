"""Finding the cluster's bid and its head when the server is less helpful
than the emulator: a name filter it ignores, an order it does not keep, and
a worker that gets its address before the head. (`responses` stands in for
such a server; the provisioner runs unchanged.)"""

import json
import re
from typing import Any, Dict, List, Optional

import responses

from sky_mithril.provision import instance as provisioner

API = 'https://api.example.test'
PROVIDER = {'project_id': 'proj_x', 'api_url': API}


def bid_json(fid: str, name: str, status: str, created_at: str,
             instances: Optional[List[str]] = None) -> Dict[str, Any]:
    return {'fid': fid, 'name': name, 'project': 'proj_x', 'created_by': 'u',
            'created_at': created_at, 'limit_price': '$10.00',
            'instance_quantity': len(instances or ['x']),
            'instance_type': 'it_1', 'instances': instances or [],
            'status': status, 'region': 'r1'}


def instance_json(fid: str, status: str,
                  address: Optional[str]) -> Dict[str, Any]:
    return {'fid': fid, 'name': fid, 'project': 'proj_x',
            'created_at': '2026-01-01T00:00:00Z', 'created_by': 'u',
            'instance_type': 'it_1', 'status': status, 'bid': 'bid_mine',
            'ssh_destination': address, 'private_ip': address}


@responses.activate
def test_live_bid_is_found_when_the_server_ignores_the_name_filter(monkeypatch):
    monkeypatch.setenv('MITHRIL_API_KEY', 'k')
    monkeypatch.setenv('MITHRIL_API_URL', API)
    # Twelve other bids, newest first, then an old terminated namesake, then
    # ours on the second page: a server that ignored `name=`.
    others = [bid_json(f'bid_{i}', f'other-{i}', 'Allocated',
                       f'2026-01-{20 - i:02d}T00:00:00Z') for i in range(12)]
    page_one = others + [bid_json('bid_old', 'mine', 'Terminated',
                                  '2025-12-01T00:00:00Z')]
    ours = bid_json('bid_mine', 'mine', 'Allocated', '2026-01-02T00:00:00Z',
                    ['inst_head', 'inst_worker'])
    pages = iter([{'data': page_one, 'next_cursor': 'c2'},
                  {'data': [ours], 'next_cursor': None}])
    responses.add_callback(
        responses.GET, f'{API}/v2/spot/bids',
        callback=lambda request: (200, {}, json.dumps(next(pages))))
    responses.add(responses.GET, re.compile(f'{API}/v2/instances.*'), json={
        'data': [instance_json('inst_worker', 'STATUS_RUNNING', '10.0.0.3'),
                 instance_json('inst_head', 'STATUS_STARTING', None)],
        'next_cursor': None})
    info = provisioner.get_cluster_info('r1', 'mine', PROVIDER)
    # The worker has an address first; it is never taken for the head.
    assert info.head_instance_id is None
    assert list(info.instances) == ['inst_worker']
