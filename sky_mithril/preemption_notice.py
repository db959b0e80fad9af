"""Where a Mithril node tells of a preemption notice, shared by the node hook
(which writes the "hooks done" file) and the managed-job runtime (which waits
for it). Standard library only: the node hook imports it at interpreter start.
"""

# Mithril writes this inside the VM when the bid enters Preempting; a running
# task can watch it too (it holds the notice's `end_time`).
SIGNAL_FILE = '/opt/mithril/MITHRIL_SIGNAL.yml'
# The node hook writes this (with the notice's deadline) once the task's
# preemption hooks have run.
HOOKS_DONE_FILE = '~/.sky/mithril/preemption-hooks-done'
