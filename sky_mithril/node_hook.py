"""Makes a cluster node's SkyPilot use sky-mithril's provisioner.

The skylet on the head node runs autostop and autodown with no plugin loaded:
it calls `sky.provision.stop_instances` / `terminate_instances` for the
`mithril` provider, which would reach SkyPilot's built-in Mithril code (it
ignores the cluster's API URL and takes the first bid of a name search). The
cluster template copies this package to the node and adds a `.pth` file to the
node's SkyPilot runtime that imports this module at interpreter start-up.
Once `sky.provision` has been imported, sky-mithril registers its provisioner
there, exactly as the plugin does on the API server.

In the skylet it also watches for Mithril's preemption notice
(`/opt/mithril/MITHRIL_SIGNAL.yml`, written when the bid enters Preempting, 5
minutes before the node is taken) and then runs the task's `config.hooks`
entries for the `preemption` event once, through SkyPilot's own hook executor
(the hooks SkyPilot stored on the head node, output in
`~/.sky/hooks/preemption.log`), with `MITHRIL_PREEMPTION_DEADLINE` set to the
notice's end. SkyPilot 0.14.1 runs preemption hooks only in Kubernetes pods.
When they are done it writes `preemption_notice.HOOKS_DONE_FILE`, which the managed-job
controller waits for before it tears the node down (`plugin.jobs_runtime`).
A running task sees the notice itself in `SIGNAL_FILE`. The SkyPilot names this
relies on are checked as the skylet starts (`_start_notice_watcher`).

Importing this module costs almost nothing and never raises: an interpreter
that never imports `sky.provision` is untouched.
"""

import datetime
import importlib.abc
import importlib.machinery
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Sequence

from sky_mithril import preemption_notice

CLOUD_NAME = 'mithril'
PROVISION_MODULE = 'sky.provision'
SKYLET_MODULE = 'sky.skylet.skylet'
SIGNAL_FILE = Path(preemption_notice.SIGNAL_FILE)
NOTICE_POLL_SECONDS = 1.0
DEADLINE_ENV = 'MITHRIL_PREEMPTION_DEADLINE'


def _notice_deadline() -> Optional[str]:
    """The end of a preemption notice that is running now, if any."""
    try:
        import yaml  # pylint: disable=import-outside-toplevel
        notice = yaml.safe_load(SIGNAL_FILE.read_text(encoding='utf-8')) or {}
        end = datetime.datetime.fromisoformat(str(notice['end_time']))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if end.tzinfo is None:
        end = end.replace(tzinfo=datetime.timezone.utc)
    if end <= datetime.datetime.now(datetime.timezone.utc):
        return None  # a notice left over from an earlier preemption
    return end.isoformat()


def _run_preemption_hooks(deadline: str) -> None:
    """SkyPilot's preemption hooks, as its Kubernetes skylet runs them."""
    from sky.skylet import autostop_lib  # pylint: disable=import-outside-toplevel
    from sky.skylet import hook_executor  # pylint: disable=import-outside-toplevel
    os.environ[DEADLINE_ENV] = deadline
    if hook_executor.try_claim_teardown(hook_executor.PREEMPTION):
        hook_executor.run(hook_executor.PREEMPTION, autostop_lib.get_hooks())


def _watch_for_notice() -> None:
    """Runs the preemption hooks once, as soon as a notice appears (a "done"
    file left by an earlier notice on this disk is removed first)."""
    done = Path(os.path.expanduser(preemption_notice.HOOKS_DONE_FILE))
    done.unlink(missing_ok=True)
    while True:
        deadline = _notice_deadline()
        if deadline is not None:
            try:
                _run_preemption_hooks(deadline)
            except Exception as e:  # pylint: disable=broad-except
                sys.stderr.write(f'sky-mithril: preemption hooks failed: '
                                 f'{e!r}\n')
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(deadline + '\n', encoding='utf-8')
            return
        time.sleep(NOTICE_POLL_SECONDS)


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
    threading.Thread(target=_watch_for_notice, daemon=True,
                     name='sky-mithril-preemption-notice').start()


def register(provision: ModuleType) -> None:
    """Registers sky-mithril's provisioner in a loaded `sky.provision`."""
    try:
        from sky_mithril import provision as ours  # pylint: disable=import-outside-toplevel
        provision.register_provisioner(CLOUD_NAME, ours)
        if _is_skylet():
            _start_notice_watcher()
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
