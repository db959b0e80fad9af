"""What tests of several files share: provisioning against the emulator,
the emulator's API over HTTP, the secret scan, the infrastructure commands'
setup, the sandboxed `sky` stack, the provisioner child that a test signals,
the recovery records cleared, reservations bought on the emulator and
launches on them, a throwaway Postgres and API-server workers on it, and
Mithril's published OpenAPI spec with the endpoint the contract tests hold
to it."""

from pathlib import Path

# The checkout: where `python -m tests.helpers...` runs from.
REPO = Path(__file__).resolve().parents[2]
