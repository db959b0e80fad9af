"""The standby's guard: a process of its own, beside the jobs controller,
that cancels the old bid once its preemption notice is over if the
controller's `StandbyWatch` has not by then.

The watch is a thread of the controller process. In SkyPilot 0.14.1 nothing
takes over a controller that died: its job is marked FAILED_CONTROLLER and
its cluster torn down (both bids) only at the next managed-job status
refresh, up to 5 minutes later; a controller that hangs is never noticed.
Meanwhile the old bid, back to Open at the notice's end, could win a second
node beside the standby. The guard is started with the watch, in a session
of its own (a SIGKILL or a stall of the controller leaves it running), and
does what the watch does at the notice's end: once the old bid is Open or
Allocated again, the standby is promoted (`standby.promote_standby`: the old
bid is cancelled, under the lock the controller's drop of the standby holds
too, so the two never cancel both bids; the old bid's state is read again
under that lock, so a `sky stop` that paused it meanwhile wins). It leaves
as soon as either bid is gone (the watch promoted or dropped the standby,
`sky down`) or the old bid is paused (`sky stop`), and after GUARD_SECONDS
in any case: it starts inside the notice, which lasts 5 minutes.

Usage (started by `spawn`, never by hand):
  python -m sky_mithril.recovery.standby_guard '<json: name, old, standby,
  profile, project_id, api_url>'
"""

import json
import os
import subprocess
import sys
import time
from typing import Any, Dict

from sky_mithril import files

# Mithril's notice lasts 5 minutes and the guard starts inside it; a minute
# more lets it act after an API hiccup at the notice's end.
GUARD_SECONDS = 360.0
POLL_SECONDS = 2.0


def _log_path() -> str:
    return str(files.state_dir() / 'standby-guard.log')


def spawn(conn: Any, name: str, old_fid: str, standby_fid: str) -> None:
    """Starts the guard for the cluster `name`'s standby, connected as `conn`
    is (profile, project and API URL; never the key)."""
    spec = {'name': name, 'old': old_fid, 'standby': standby_fid,
            'profile': conn.credentials.profile,
            'project_id': conn.project_id,
            'api_url': conn.credentials.api_url}
    files.make_private_dir(files.state_dir())
    with open(_log_path(), 'a', encoding='utf-8') as log:
        subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, '-m', __name__, json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, close_fds=True)


def guard(spec: Dict[str, str]) -> None:
    """Watches the old bid until the notice is over, then promotes the
    standby, unless one of the bids is gone or the old one paused first
    (module docstring)."""
    # pylint: disable=import-outside-toplevel
    from sky_mithril.account import connection
    from sky_mithril.api import errors
    from sky_mithril.api import models
    from sky_mithril.recovery import standby as standby_lib
    name, old_fid, standby_fid = spec['name'], spec['old'], spec['standby']
    conn = connection.connect(profile=spec['profile'] or None,
                              project_id=spec['project_id'] or None,
                              api_url=spec['api_url'] or None)
    ends = time.monotonic() + GUARD_SECONDS
    while time.monotonic() < ends:
        try:
            # The old bid first: `sky stop` cancels the standby before it
            # pauses the old bid, so a paused old bid is never promoted over.
            old = conn.client.get_bid(old_fid).status
            standby = conn.client.get_bid(standby_fid).status
        except errors.NotFoundError:
            return
        except Exception as e:  # pylint: disable=broad-except
            print(f'{name}: reading bids {old_fid}, {standby_fid}: {e}',
                  flush=True)
        else:
            if (models.BidState.TERMINATED in (old, standby) or
                    old == models.BidState.PAUSED):
                return
            if old in (models.BidState.OPEN, models.BidState.ALLOCATED):
                try:
                    promoted = standby_lib.promote_standby(
                        conn, name, standby_fid, replacing=old_fid)
                except Exception as e:  # pylint: disable=broad-except
                    print(f'{name}: cancelling {old_fid}: {e}', flush=True)
                else:
                    if promoted:
                        print(f'{name}: the notice of {old_fid} is over and '
                              'its jobs controller had not replaced it: '
                              f'cancelled it; standby {standby_fid} is the '
                              'cluster\'s bid.', flush=True)
                        return
        time.sleep(POLL_SECONDS)


if __name__ == '__main__':
    os.umask(0o077)
    guard(json.loads(sys.argv[1]))
