"""Refreshes the status of some clusters in a process of its own, as one
API-server process does for `sky status --refresh`, its project snapshot's
clock set to a given time.

Usage: python -m tests.helpers.status_child '{"names": [...], "now": <epoch seconds>}'
Prints one line: the number of clusters that read as having nodes.
"""

import json
import sys

from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import project_snapshot


def main() -> None:
    spec = json.loads(sys.argv[1])
    project_snapshot.now = lambda: float(spec['now'])
    found = sum(bool(provisioner.query_instances(
        name, name, {'project_id': 'proj_emulator'})) for name in spec['names'])
    print(found, flush=True)


if __name__ == '__main__':
    main()
