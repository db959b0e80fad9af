"""`sky-mithril`'s infrastructure commands, for people who know Mithril's `ml`:
`instance` (bids by hand), `ssh` (into a bid's instances), `k8s`
(Kubernetes clusters and their kubeconfig), `volumes` (persistent
volumes) and `reservations` (reserved capacity); and `spend`, what the
project paid. One module per command
group."""

import argparse

from sky_mithril.commands import instance
from sky_mithril.commands import k8s
from sky_mithril.commands import reservations
from sky_mithril.commands import spend
from sky_mithril.commands import ssh
from sky_mithril.commands import volumes


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Registers `instance`, `ssh`, `k8s`, `volumes`, `reservations` and
    `spend` under `sky-mithril`."""
    instance.add_parser(commands)
    ssh.add_parser(commands)
    k8s.add_parser(commands)
    volumes.add_parser(commands)
    reservations.add_parser(commands)
    spend.add_parser(commands)
