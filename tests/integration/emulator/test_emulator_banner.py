"""What `sky-mithril emulator` prints once it listens: the exports, then that
`sky api stop` must follow, and what its hosts can do (placeholder hosts
serve the API only: `sky launch` needs `--hosts namespace`)."""

import pytest

from sky_mithril.emulator import cli
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts


def _banner(hosts: str):
    options = cli.EmulatorOptions(port=0, hosts=hosts)
    with cli.build_server(options, PlaceholderHosts()) as server:
        return server, cli.usage(server, options)


def test_the_banner_says_to_restart_the_api_server_after_exporting():
    server, lines = _banner('placeholder')
    exports = [i for i, line in enumerate(lines) if line.startswith('  export ')]
    assert len(exports) == 3 and lines[exports[0]].endswith(server.url)
    after = lines[exports[-1] + 1]
    assert after.startswith('then `sky api stop`: the SkyPilot API server keeps the '
                            'environment it started with')
    assert lines[-1] == 'Press Ctrl-C to stop.'


@pytest.mark.parametrize('hosts,note', [
    ('placeholder', 'the API answers, but nothing listens at an instance\'s address, '
                    'so `sky launch` cannot reach its nodes. For launches, run `sudo '
                    'sky-mithril emulator --hosts namespace` (root: real SSH hosts).'),
    ('namespace', '`sky launch --infra mithril` works.'),
    ('local', 'one cluster at a time'),
])
def test_the_banner_says_what_the_hosts_can_do(hosts, note):
    _, lines = _banner(hosts)
    assert note in lines[-2]
