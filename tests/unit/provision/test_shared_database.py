"""Which processes share the API server's SkyPilot database
(`shared_state.apart_from_api_server`), and so may claim reserved instances."""

from pathlib import Path

import pytest

from sky.jobs import constants as jobs_constants

from sky_mithril import shared_state
from sky_mithril.provision import reservation_claims


@pytest.fixture
def signal_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Where SkyPilot's jobs-consolidation signal file is, in a fresh home."""
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.delenv('IS_SKYPILOT_JOB_CONTROLLER', raising=False)
    monkeypatch.delenv('SKYPILOT_DB_CONNECTION_URI', raising=False)
    return Path(jobs_constants.JOBS_CONSOLIDATION_RELOADED_SIGNAL_FILE
                ).expanduser()


def test_the_api_server_and_the_cli_share_it(signal_file: Path) -> None:
    del signal_file
    assert not shared_state.apart_from_api_server()
    reservation_claims.refuse_apart_from_api_server('team-res')


def test_a_remote_controller_on_sqlite_does_not_and_is_refused(
        signal_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    del signal_file
    monkeypatch.setenv('IS_SKYPILOT_JOB_CONTROLLER', 'true')
    assert shared_state.apart_from_api_server()
    with pytest.raises(reservation_claims.SeparateDatabaseError,
                       match='consolidation mode'):
        reservation_claims.refuse_apart_from_api_server('team-res')


def test_a_controller_on_the_api_servers_host_in_consolidation_mode_does(
        signal_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('IS_SKYPILOT_JOB_CONTROLLER', 'true')
    signal_file.parent.mkdir(parents=True)
    signal_file.touch()
    assert not shared_state.apart_from_api_server()


def test_a_controller_on_the_teams_postgres_does(
        signal_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    del signal_file
    monkeypatch.setenv('IS_SKYPILOT_JOB_CONTROLLER', 'true')
    monkeypatch.setenv('SKYPILOT_DB_CONNECTION_URI',
                       'postgresql://team@db.example/skypilot')
    assert not shared_state.apart_from_api_server()
