"""SkyPilot's serve controller, with the API server's plugins loaded.

SkyPilot 0.14.1 loads plugins in its API server, its request workers and its
jobs controller, but not in the serve controller (`python -m
sky.serve.service`), which reads its replicas' endpoints and status
in-process: SkyPilot's built-in Mithril cloud refuses a replica's endpoint
("Querying endpoints is not supported"), so the service never serves, and
nothing replaces a replica at Mithril's notice (`recovery.serve_notice`).
(Replicas are launched and torn down through the API server, which has the
plugin.) Where sky-mithril is installed beside it (consolidation mode:
the API server's host; a remote controller that got our wheel,
`sky-mithril setup --remote`), `takeover._serve_controller_loads_plugins`
starts it as

    python -u -m sky_mithril.plugin.serve_controller sky.serve.service --service-name ...

The module to run stays on the command line: SkyPilot finds a service's
controller process by `sky.serve.service` in it.
"""

import runpy
import sys

from sky.server import plugins


def load_plugins() -> None:
    """The server's plugins (`plugins.yaml`), as SkyPilot's jobs controller
    loads them."""
    plugins.load_plugins(plugins.ExtensionContext(
        context=plugins.PluginContext.CONTROLLER))


# The controller spawns its replica manager and load balancer ('spawn'
# start method): each child imports this module again as `__mp_main__`, and
# needs the plugins as much as the parent does.
load_plugins()

if __name__ == '__main__':
    module = sys.argv.pop(1)
    runpy.run_module(module, run_name='__main__')
