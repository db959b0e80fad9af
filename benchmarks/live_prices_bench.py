"""Live-price requests per minute from the worker processes of one API server.

WORKERS processes share one HOME (so one `~/.sky/mithril/`), as the executor
workers of a SkyPilot API server do, and each asks the catalog for freshness
every POLL_S seconds, as the optimizer does whenever it reads the catalog.
With a refresh TTL of TTL_S, the ideal is 60 / TTL_S refreshes per minute
whatever the number of workers. Prints refreshes (= `GET
/v2/spot/availability`) and all API requests per minute, counted by the
emulator.

Run: python benchmarks/live_prices_bench.py  (about 70 s; only 127.0.0.1).
To measure another version of the plugin, put its checkout first on
PYTHONPATH.
"""

import multiprocessing
import os
import tempfile
import time

from sky_mithril.emulator.server import EmulatorServer

WORKERS = 4
TTL_S = 10.0
POLL_S = 0.5
RUN_S = 60.0


def worker(stop_at: float) -> None:
    """Asks for freshness every POLL_S until `stop_at`, then waits for any
    background refresh it started."""
    from sky_mithril.catalog import live_prices  # pylint: disable=import-outside-toplevel
    live_prices.CACHE_TTL_SECONDS = TTL_S
    freshness = live_prices.OverlayFreshness()
    while time.time() < stop_at:
        freshness()
        time.sleep(POLL_S)
    with live_prices._refreshing:  # pylint: disable=protected-access
        pass


def main() -> None:
    with EmulatorServer() as server, tempfile.TemporaryDirectory() as home:
        os.environ.update({'HOME': home, 'MITHRIL_API_URL': server.url,
                           'MITHRIL_API_KEY': 'bench-key',
                           'MITHRIL_PROJECT': 'proj_emulator'})
        server.control('DELETE', 'stats')
        stop_at = time.time() + RUN_S
        context = multiprocessing.get_context('spawn')
        processes = [context.Process(target=worker, args=(stop_at,))
                     for _ in range(WORKERS)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        stats = server.control('GET', 'stats')
    per_minute = 60.0 / RUN_S
    refreshes = stats['by_route'].get('GET /v2/spot/availability', 0)
    print(f'{WORKERS} workers sharing one ~/.sky/mithril, TTL {TTL_S:g} s, '
          f'{RUN_S:g} s: {refreshes * per_minute:.0f} refreshes/min '
          f'(ideal {60 / TTL_S:.0f}), {stats["total"] * per_minute:.0f} API '
          'requests/min.')


if __name__ == '__main__':
    main()
