"""`sky-mithril`'s commands, one module per command family: `setup` (the
plugin for SkyPilot and the user's API key; cli.py lists it first),
`examples` (the shipped task YAMLs), `prices` (spot price history and the
limit that would have held); for people who know Mithril's `ml`, `instance`
(bids by hand), `ssh` (into a bid's instances), `k8s` (Kubernetes clusters
and their kubeconfig), `volumes` (persistent volumes) and `reservations`
(reserved capacity); and `spend`, what the project paid. `options` holds the
click pieces they share."""

import click

from sky_mithril.commands import examples
from sky_mithril.commands import instance
from sky_mithril.commands import k8s
from sky_mithril.commands import prices
from sky_mithril.commands import reservations
from sky_mithril.commands import spend
from sky_mithril.commands import ssh
from sky_mithril.commands import volumes


def add_commands(cli: click.Group) -> None:
    """Adds `examples`, `prices`, `instance`, `ssh`, `k8s`, `volumes`,
    `reservations` and `spend` to `sky-mithril`."""
    for command in (examples.examples_command, prices.prices_command,
                    instance.group, ssh.ssh_command, k8s.group, volumes.group,
                    reservations.group, spend.spend_command):
        cli.add_command(command)
