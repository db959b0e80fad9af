"""One action of the plugin's in a child process set up as a SkyPilot API
server's worker is: `IS_SKYPILOT_SERVER` set and SkyPilot's config loaded
from its home's `~/.sky/config.yaml`, whose `db:` names the team's
Postgres.

Usage: python -m tests.helpers.api_server_worker <action>
Prints READY once set up, waits for the action's JSON args as a line on
stdin (so that several workers act at once, on what exists by then), runs
the action and prints its JSON result last.
Actions: start {} -> null, SkyPilot's tables made (as an API server does
as it starts, before its workers run); launch {name, config} -> "DONE" | "FAILED <error>";
mark {cluster, bid, preemptions}; records {cluster, bid} ->
[is_recovering, preemptions_recovered]; claims {clusters} -> {cluster:
[instance fid]}; refresh {ttl, seconds} -> refresh_if_stale every 0.1 s
for `seconds`, with the TTL `ttl`.
"""

import json
import sys
import time
from typing import Any, Dict

from sky import skypilot_config
from sky.provision import common


def _start(args: Dict[str, Any]) -> None:
    del args
    from sky import global_user_state  # pylint: disable=import-outside-toplevel
    from sky_mithril import shared_state  # pylint: disable=import-outside-toplevel
    global_user_state.initialize_and_get_db()
    shared_state.get('start')


def _launch(args: Dict[str, Any]) -> str:
    from sky_mithril.provision import instance as provisioner  # pylint: disable=import-outside-toplevel
    config = common.ProvisionConfig(**args['config'])
    try:
        provisioner.run_instances(config.provider_config['region'],
                                  args['name'], args['name'], config)
    except Exception as e:  # pylint: disable=broad-except
        return f'FAILED {e}'
    return 'DONE'


def _mark(args: Dict[str, Any]) -> None:
    from sky_mithril.recovery import records  # pylint: disable=import-outside-toplevel
    records.mark(args['cluster'], args['bid'], args['preemptions'])


def _records(args: Dict[str, Any]) -> Any:
    from sky_mithril.recovery import records  # pylint: disable=import-outside-toplevel
    return [records.is_recovering(args['cluster']),
            records.preemptions_recovered(args['bid'])]


def _claims(args: Dict[str, Any]) -> Any:
    from sky_mithril.provision import reservation_claims  # pylint: disable=import-outside-toplevel
    return {name: [c.instance_fid for c in reservation_claims.of_cluster(name)]
            for name in args['clusters']}


def _refresh(args: Dict[str, Any]) -> None:
    from sky_mithril.catalog import live_prices  # pylint: disable=import-outside-toplevel
    live_prices.CACHE_TTL_SECONDS = args['ttl']
    stop_at = time.monotonic() + args['seconds']
    while time.monotonic() < stop_at:
        live_prices.refresh_if_stale(blocking=True)
        time.sleep(0.1)


ACTIONS = {'start': _start, 'launch': _launch, 'mark': _mark, 'records': _records,
           'claims': _claims, 'refresh': _refresh}


def main() -> None:
    action = sys.argv[1]
    skypilot_config.reload_config()
    from sky.utils.db import db_utils  # pylint: disable=import-outside-toplevel
    assert db_utils.get_engine('kv_cache').dialect.name == 'postgresql'
    print('READY', flush=True)
    args = json.loads(sys.stdin.readline())
    print(json.dumps(ACTIONS[action](args)), flush=True)


if __name__ == '__main__':
    main()
