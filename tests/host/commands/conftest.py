"""`home` (a private HOME with an SSH key pair) and `kubectl` from
tests.helpers.commands."""

from tests.helpers.commands import home, kubectl  # noqa: F401 (fixtures)
