"""Plays a jobs controller recovering a cluster through a standby, in a
child process a test can kill: places the standby for the cluster's bid
(in its preemption notice) and watches it as the controller does, then
waits until it is killed.

Usage: python -m tests.helpers.standby_child '{"name": ..., "limit": "30.00"}'
Prints `WATCHING <old fid> <standby fid>` once the watch runs.
"""

import json
import sys
import threading
from decimal import Decimal

from sky_mithril.account import connection
from sky_mithril.provision import cluster_bid
from sky_mithril.recovery import standby as standby_lib


def main() -> None:
    spec = json.loads(sys.argv[1])
    name = spec['name']
    conn = connection.connect()
    old = cluster_bid.live_bid(conn, name)
    assert old is not None, f'{name} has no live bid'
    standby = standby_lib.place_standby(conn, old, Decimal(spec['limit']), None)
    never = threading.Event()
    with standby_lib.StandbyWatch(conn, name, old.fid, standby.bid.fid,
                                  never):
        print(f'WATCHING {old.fid} {standby.bid.fid}', flush=True)
        never.wait()


if __name__ == '__main__':
    main()
