"""Makes a cluster node's SkyPilot use sky-mithril's provisioner.

The skylet on the head node runs autostop and autodown with no plugin loaded:
it calls `sky.provision.stop_instances` / `terminate_instances` for the
`mithril` provider, which would reach SkyPilot's built-in Mithril code (it
ignores the cluster's API URL and takes the first bid of a name search). The
cluster template copies this package to the node and adds a `.pth` file to the
node's SkyPilot runtime that imports this module at interpreter start-up.
Once `sky.provision` has been imported, sky-mithril registers its provisioner
there, exactly as the plugin does on the API server.

Importing this module costs almost nothing and never raises: an interpreter
that never imports `sky.provision` is untouched.
"""

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Optional, Sequence

CLOUD_NAME = 'mithril'
PROVISION_MODULE = 'sky.provision'


def register(provision: ModuleType) -> None:
    """Registers sky-mithril's provisioner in a loaded `sky.provision`."""
    try:
        from sky_mithril import provision as ours  # pylint: disable=import-outside-toplevel
        provision.register_provisioner(CLOUD_NAME, ours)
    except Exception as e:  # pylint: disable=broad-except
        sys.stderr.write(f'sky-mithril: could not register its provisioner on '
                         f'this node ({e!r}); autostop would use SkyPilot\'s '
                         'built-in Mithril code.\n')


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
