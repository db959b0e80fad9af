"""`run` (`sky-mithril ...` in-process) from tests.helpers.commands."""

from tests.helpers.commands import run  # noqa: F401 (a fixture)
