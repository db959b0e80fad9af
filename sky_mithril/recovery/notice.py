"""Mithril's preemption notice on a node, and the two sides that use its files.

On the head node's skylet, `watch_for_notice` waits for the notice
(`SIGNAL_FILE`, written when the bid enters Preempting, 5 minutes before the
node is taken), runs the task's `config.hooks` entries for the `preemption`
event once through SkyPilot's own hook executor (the hooks SkyPilot stored on
the head node, output in `~/.sky/hooks/preemption.log`), with
`MITHRIL_PREEMPTION_DEADLINE` set to the notice's end, then writes
`HOOKS_DONE_FILE`. SkyPilot 0.14.1 runs preemption hooks only in Kubernetes
pods. The jobs controller waits for that file (`wait_for_preemption_hooks`)
before it tears the node down. A running task sees the notice itself in
`SIGNAL_FILE`.

A reservation's end is a notice known in advance: when a managed job's
reservation ends within its lead time, the jobs controller writes
`RESERVATION_END_FILE` on the head node (`write_reservation_end`), in
`SIGNAL_FILE`'s shape, its `end_time` the reservation's; the watcher and a
running task read it as they read Mithril's notice. A job moving from its
spot bid back onto its reservation (`back_to_reservation`) is told the same
way, its `end_time` the most its hooks may take.

Standard library only at import: the node hook imports it at interpreter
start.
"""

import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

# Mithril writes this inside the VM when the bid enters Preempting; a running
# task can watch it too (it holds the notice's `end_time`).
SIGNAL_FILE = Path('/opt/mithril/MITHRIL_SIGNAL.yml')
# The jobs controller writes this on the head node when the job's reservation
# ends within its lead time (`end_time`: the reservation's end).
RESERVATION_END_FILE = '~/.sky/mithril/reservation-end.yml'
# The node hook writes this (with the notice's deadline) once the task's
# preemption hooks have run.
HOOKS_DONE_FILE = '~/.sky/mithril/preemption-hooks-done'
NOTICE_POLL_SECONDS = 1.0
DEADLINE_ENV = 'MITHRIL_PREEMPTION_DEADLINE'
# How long the controller waits for the node's preemption hooks at most.
HOOKS_WAIT_SECONDS = 120.0
HOOKS_POLL_SECONDS = 2.0


def _deadline_in(path: Path) -> Optional[str]:
    """The `end_time` of the notice in `path`, if it has not passed."""
    try:
        import yaml  # pylint: disable=import-outside-toplevel
        notice = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
        end = datetime.datetime.fromisoformat(str(notice['end_time']))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if end.tzinfo is None:
        end = end.replace(tzinfo=datetime.timezone.utc)
    if end <= datetime.datetime.now(datetime.timezone.utc):
        return None  # a notice left over from an earlier preemption
    return end.isoformat()


def _notice_deadline() -> Optional[str]:
    """The end of a preemption notice that is running now, Mithril's or the
    reservation's end, if any."""
    return (_deadline_in(SIGNAL_FILE) or
            _deadline_in(Path(os.path.expanduser(RESERVATION_END_FILE))))


def write_reservation_end(handle: Any, end_time: datetime.datetime) -> None:
    """On the jobs controller: tells the head node that it leaves its node
    at `end_time` (its reservation's end, or a move back onto its
    reservation), which its watcher takes for a preemption notice."""
    import shlex  # pylint: disable=import-outside-toplevel
    text = f'end_time: {end_time.isoformat()}\n'
    path = RESERVATION_END_FILE
    handle.get_command_runners()[0].run(
        f'mkdir -p {os.path.dirname(path)} && printf %s {shlex.quote(text)} '
        f'> {path}.tmp && mv {path}.tmp {path}', stream_logs=False)


def _run_preemption_hooks(deadline: str) -> None:
    """SkyPilot's preemption hooks, as its Kubernetes skylet runs them."""
    from sky.skylet import autostop_lib  # pylint: disable=import-outside-toplevel
    from sky.skylet import hook_executor  # pylint: disable=import-outside-toplevel
    os.environ[DEADLINE_ENV] = deadline
    if hook_executor.try_claim_teardown(hook_executor.PREEMPTION):
        hook_executor.run(hook_executor.PREEMPTION, autostop_lib.get_hooks())


def watch_for_notice() -> None:
    """In the skylet: runs the preemption hooks once, as soon as a notice
    appears (a "done" file left by an earlier notice on this disk is removed
    first), then writes HOOKS_DONE_FILE."""
    done = Path(os.path.expanduser(HOOKS_DONE_FILE))
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


def wait_for_preemption_hooks(handle: Any) -> float:
    """On the jobs controller: waits until the head node has run the task's
    preemption hooks (or HOOKS_WAIT_SECONDS); returns the seconds waited."""
    from sky import sky_logging  # pylint: disable=import-outside-toplevel
    logger = sky_logging.init_logger('sky.sky_mithril.jobs')
    started = time.monotonic()
    try:
        runner = handle.get_command_runners()[0]
    except Exception as e:  # pylint: disable=broad-except
        logger.info(f'Cannot reach {handle.cluster_name} to wait for its '
                    f'preemption hooks: {e}')
        return 0.0
    while time.monotonic() - started < HOOKS_WAIT_SECONDS:
        try:
            returncode = runner.run(f'test -f {HOOKS_DONE_FILE}',
                                    stream_logs=False)
        except Exception:  # pylint: disable=broad-except
            returncode = 1
        if returncode == 0:
            break
        time.sleep(HOOKS_POLL_SECONDS)
    return time.monotonic() - started
