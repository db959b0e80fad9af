"""A child process that acts as a SkyPilot API server's worker would, for
the plugin's shared state: `IS_SKYPILOT_SERVER` set and, once told to
start, SkyPilot's config loaded from its home's `~/.sky/config.yaml`, whose
`db:` names the team's Postgres.

Usage: python -m tests.helpers.api_server_worker
Reads one request a line on stdin, `{"action": ..., "args": {...}}`, runs
it and answers with one line `RESULT <json>`, until stdin closes (so that
workers act at once when released together). Actions:
- start {} -> null: SkyPilot's config loaded and its tables made (as the API
  server does as it starts), on Postgres;
- launch {name, config} -> "DONE" | "FAILED <error>";
- down {name} -> null;
- mark {cluster, bid, preemptions} -> null;
- records {cluster, bid} -> [is_recovering, preemptions_recovered];
- claims {clusters} -> {cluster: [instance fid]};
- refresh {ttl, seconds} -> null: refresh_if_stale every 0.1 s for
  `seconds`, with the TTL `ttl`;
- share_market {} -> the market fetched from the API now and shared, as
  `market` reads it;
- market {} -> {fetched_at, quotes: {"type@region": [price, capacity]}} of
  the live-price market shared for this worker's API and project, or null;
- forget_market {} -> null: that shared market dropped;
- users {} -> [SkyPilot user id]: the users in SkyPilot's database.
"""

import json
import sys
import time
from typing import Any, Dict

from sky import global_user_state
from sky import skypilot_config
from sky.provision import common
from sky.utils.db import db_utils

from sky_mithril import shared_state
from sky_mithril.account import credentials
from sky_mithril.catalog import live_prices
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import reservation_claims
from sky_mithril.recovery import records


def _start(args: Dict[str, Any]) -> None:
    del args
    skypilot_config.reload_config()
    global_user_state.initialize_and_get_db()
    shared_state.get('start')
    assert db_utils.get_engine('kv_cache').dialect.name == 'postgresql'


def _launch(args: Dict[str, Any]) -> str:
    config = common.ProvisionConfig(**args['config'])
    try:
        provisioner.run_instances(config.provider_config['region'],
                                  args['name'], args['name'], config)
    except Exception as e:  # pylint: disable=broad-except
        return f'FAILED {e}'
    return 'DONE'


def _down(args: Dict[str, Any]) -> None:
    provisioner.terminate_instances(args['name'], {'project_id': 'proj_emulator'})


def _mark(args: Dict[str, Any]) -> None:
    records.mark(args['cluster'], args['bid'], args['preemptions'])


def _records(args: Dict[str, Any]) -> Any:
    return [records.is_recovering(args['cluster']),
            records.preemptions_recovered(args['bid'])]


def _claims(args: Dict[str, Any]) -> Any:
    return {name: [c.instance_fid for c in reservation_claims.of_cluster(name)]
            for name in args['clusters']}


def _refresh(args: Dict[str, Any]) -> None:
    live_prices.CACHE_TTL_SECONDS = args['ttl']
    stop_at = time.monotonic() + args['seconds']
    while time.monotonic() < stop_at:
        live_prices.refresh_if_stale(blocking=True)
        time.sleep(0.1)


def _market_key() -> str:
    return live_prices.shared_key(credentials.load_credentials())


def _share_market(args: Dict[str, Any]) -> Any:
    live_prices.refresh()
    return _market(args)


def _market(args: Dict[str, Any]) -> Any:
    del args
    shared = json.loads(shared_state.get(_market_key()) or 'null')
    if shared is None:
        return None
    return {'fetched_at': shared['fetched_at'], 'quotes': shared['quotes']}


def _forget_market(args: Dict[str, Any]) -> None:
    del args
    shared_state.forget(_market_key())


def _users(args: Dict[str, Any]) -> Any:
    del args
    return [user.id for user in global_user_state.get_all_users()]


ACTIONS = {'start': _start, 'launch': _launch, 'down': _down, 'mark': _mark,
           'records': _records, 'claims': _claims, 'refresh': _refresh,
           'share_market': _share_market, 'market': _market,
           'forget_market': _forget_market, 'users': _users}


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        result = ACTIONS[request['action']](request['args'])
        print(f'RESULT {json.dumps(result)}', flush=True)


if __name__ == '__main__':
    main()
