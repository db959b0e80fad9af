"""Makes a cluster node's SkyPilot use sky-mithril's provisioner.

The skylet on the head node runs autostop and autodown with no plugin loaded:
it calls `sky.provision.stop_instances` / `terminate_instances` for the
`mithril` provider, which would reach SkyPilot's built-in Mithril code (it
ignores the cluster's API URL and takes the first bid of a name search). The
cluster template copies this package to the node and adds a `.pth` file to the
node's SkyPilot runtime that imports this module at interpreter start-up.
Once `sky.provision` has been imported, sky-mithril registers its provisioner
there, exactly as the plugin does on the API server.

In the skylet it also starts the preemption-notice watcher
(`recovery.notice.watch_for_notice`), which runs the task's preemption hooks
when Mithril's notice appears. The SkyPilot names this relies on are checked as
the skylet starts (`_start_notice_watcher`). And it starts the watch of the
node's API key, which warns in the skylet's log as the key nears its expiry
(`account.node_keys.watch_expiry`).

Importing this module costs almost nothing and never raises: an interpreter
that never imports `sky.provision` is untouched.
"""

import importlib.abc
import importlib.machinery
import sys
import threading
from types import ModuleType
from typing import Any, Optional, Sequence

from sky_mithril import CLOUD_NAME
from sky_mithril.recovery import notice

PROVISION_MODULE = 'sky.provision'
SKYLET_MODULE = 'sky.skylet.skylet'


def _is_skylet() -> bool:
    """Whether this interpreter was started as `python -m sky.skylet.skylet`.

    Read from the original command line: `sky.provision` is first imported
    while runpy imports the `sky` package, before `__main__` is the skylet.
    """
    argv = list(getattr(sys, 'orig_argv', sys.argv))
    return any(flag == '-m' and module == SKYLET_MODULE
               for flag, module in zip(argv, argv[1:]))


def _start_notice_watcher() -> None:
    """Starts the preemption-notice watcher once the SkyPilot names the node
    relies on check out (`skypilot_names.NODE`; imported here, as the skylet
    starts, never at interpreter start).

    A node cannot refuse to run: the skylet starts regardless. A missing
    name is reported in the skylet's log, each one named, and the watcher is
    not started; our provisioner stays registered. That keeps the money
    safe: the provisioner is what stops and terminates the cluster's own bid
    on autostop and autodown, where SkyPilot's built-in code would ignore the
    cluster's API URL and cancel the first bid a name search finds. The
    watcher runs the task's hooks through SkyPilot's hook executor, so with
    its names gone it would fail only in the middle of a notice; without it
    the jobs controller waits its bounded time for the hooks, then recovers.
    """
    from sky_mithril import skypilot_names  # pylint: disable=import-outside-toplevel
    missing = skypilot_names.lacking((skypilot_names.NODE,))
    if missing:
        sys.stderr.write(f'sky-mithril: {skypilot_names.refusal(missing)} '
                         'This node will not run the task\'s preemption '
                         'hooks; nodes run the SkyPilot of the API server '
                         'that launched them.\n')
        return
    threading.Thread(target=notice.watch_for_notice, daemon=True,
                     name='sky-mithril-preemption-notice').start()


def _watch_node_key() -> None:
    """The node key's watch (`node_keys.watch_expiry`), imported in its own
    thread so this module's import stays cheap. It needs none of the names
    the notice watcher checks, so it runs whatever that check finds."""
    from sky_mithril.account import node_keys  # pylint: disable=import-outside-toplevel
    node_keys.watch_expiry()


def register(provision: ModuleType) -> None:
    """Registers sky-mithril's provisioner in a loaded `sky.provision`."""
    try:
        from sky_mithril import provision as ours  # pylint: disable=import-outside-toplevel
        # The provisioner tells a cluster's bid from its standby by recovery's
        # records, here as on the API server.
        from sky_mithril.recovery import standby  # pylint: disable=import-outside-toplevel,unused-import
        provision.register_provisioner(CLOUD_NAME, ours)
        if _is_skylet():
            _start_notice_watcher()
            threading.Thread(target=_watch_node_key, daemon=True,
                             name='sky-mithril-node-key').start()
    except Exception as e:  # pylint: disable=broad-except
        sys.stderr.write(f'sky-mithril: could not set up this node ({e!r}); '
                         'autostop would use SkyPilot\'s built-in Mithril '
                         'code.\n')


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Finds `sky.provision` as usual and registers ours after it executes."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        del target
        if fullname != PROVISION_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            register(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Registers now if `sky.provision` is loaded, else once it is."""
    loaded = sys.modules.get(PROVISION_MODULE)
    if loaded is not None:
        register(loaded)
    elif not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())


install()
