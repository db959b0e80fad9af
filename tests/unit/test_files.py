"""The plugin's own files under `~/.sky/mithril/` (market timing, this host's
live-price overlay and its state) are private to its user: 0600 files in a
0700 directory, also when the directory was left looser before. (Recovery
records and the locks live in SkyPilot's database and lock directory.)"""

import stat
from pathlib import Path
from typing import Optional

import pytest

from sky_mithril.catalog import live_prices
from sky_mithril.provision.market_timing import MarketTiming
from sky_mithril.recovery import records


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize('existing_mode', [None, 0o755, 0o777],
                         ids=['missing', '0755', '0777'])
def test_state_files_are_private_in_a_private_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        existing_mode: Optional[int]) -> None:
    monkeypatch.setenv('HOME', str(tmp_path))
    state_dir = tmp_path / '.sky' / 'mithril'
    if existing_mode is not None:
        state_dir.mkdir(parents=True)
        state_dir.chmod(existing_mode)

    MarketTiming('https://api.mithril.test').save()
    live_prices.refresh_if_stale(blocking=True)
    records.mark('train', 'bid_1', preemptions=0)

    assert _mode(state_dir) == 0o700
    written = {path.name: _mode(path) for path in state_dir.iterdir()}
    assert set(written) == {'market-timing.json', 'vms-live.csv',
                            'live-prices.json'}
    assert records.is_recovering('train')
    assert written == dict.fromkeys(written, 0o600)
