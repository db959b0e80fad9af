"""Managed-job recovery after a Mithril preemption, in one package.

`notice`: the notice's files on a node (the node hook runs the task's
preemption hooks; the jobs controller waits for them). `records`: what the
jobs controller records (clusters being relaunched, preemptions handled,
standby bids). `policy`: when recovery starts and the one limit a relaunch
bids at. `runtime`: SkyPilot's job runtime, which starts recovery at the
notice. `standby`: the standby bid (plan, place, watch, promote, drop) and
the switch onto it. `staging`: SkyPilot's launch steps replayed on the
standby. `strategy`: the recovery strategies registered in SkyPilot.

Above `provision`, below `plugin`. This file imports nothing: the node hook
imports `notice` at interpreter start.
"""
