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
when Mithril's notice appears.

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


def register(provision: ModuleType) -> None:
    """Registers sky-mithril's provisioner in a loaded `sky.provision`."""
    try:
        from sky_mithril import provision as ours  # pylint: disable=import-outside-toplevel
        # The provisioner tells a cluster's bid from its standby by recovery's
        # records, here as on the API server.
        from sky_mithril.recovery import standby  # pylint: disable=import-outside-toplevel,unused-import
        provision.register_provisioner(CLOUD_NAME, ours)
        if _is_skylet():
            threading.Thread(target=notice.watch_for_notice, daemon=True,
                             name='sky-mithril-preemption-notice').start()
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
