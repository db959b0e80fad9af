"""Runs one provisioner call in a child process that a test signals from
outside, as SkyPilot's API server cancels a request: SIGTERM to the worker,
whose handler raises KeyboardInterrupt wherever the worker is.

Usage: python -m tests.helpers.provision_child '{"call": "run"|"stop"|"down", "name": ..., "config": {...}}'
Prints READY before the call and one of DONE / INTERRUPTED / FAILED <error> after.
"""

import json
import signal
import sys
from typing import Any, NoReturn

from sky.provision import common

from sky_mithril.provision import instance as provisioner


def _raise_keyboard_interrupt(signum: int, frame: Any) -> NoReturn:
    del signum, frame
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    spec = json.loads(sys.argv[1])
    name = spec['name']
    provider_config = spec['config']['provider_config']
    print('READY', flush=True)
    try:
        if spec['call'] == 'run':
            provisioner.run_instances(provider_config['region'], name, name,
                                      common.ProvisionConfig(**spec['config']))
        elif spec['call'] == 'stop':
            provisioner.stop_instances(name, provider_config)
        else:
            provisioner.terminate_instances(name, provider_config)
    except KeyboardInterrupt:
        print('INTERRUPTED', flush=True)
        return
    except Exception as e:  # pylint: disable=broad-except
        print(f'FAILED {e}', flush=True)
        return
    print('DONE', flush=True)


if __name__ == '__main__':
    main()
