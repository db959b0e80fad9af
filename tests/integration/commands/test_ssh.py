"""`sky-mithril ssh` on real SSH hosts: sshds on 127.0.0.1 run by the emulator."""

import subprocess

from tests.helpers.commands import REGION, TYPE

# Each local host's sshd sets SKY_MITHRIL_HOST=<backend prefix>-<host index>,
# so a command can tell the nodes apart: node-1 (host 2) fails here.
FAIL_ON_SECOND_NODE = ('echo "hello from $SKY_MITHRIL_HOST"; '
                       'case "$SKY_MITHRIL_HOST" in *-2) exit 7;; esac')


def _two_nodes(run, name='pair'):
    result = run('instance', 'create', '-i', TYPE, '-r', REGION, '-m', '8',
                 '-n', name, '-N', '2')
    assert result.code == 0, result.err


def test_a_command_runs_on_every_node_and_one_failure_fails_it(local_ssh_emulator,
                                                               home, run):
    _two_nodes(run)
    result = run('ssh', 'pair', '--', FAIL_ON_SECOND_NODE)
    assert result.code == 1
    lines = sorted(result.out.splitlines())
    assert len(lines) == 2
    assert lines[0].startswith('[node-0] hello from slh') and lines[0].endswith('-1')
    assert lines[1].startswith('[node-1] hello from slh') and lines[1].endswith('-2')
    assert 'Failed on 1 of 2 nodes: node-1 (exit 7)' in result.err
    assert 'Bid pair:' in result.err  # waited, with progress lines

    everywhere = run('ssh', 'pair', 'true')
    assert everywhere.code == 0, everywhere.err


def test_node_picks_one_node_and_options_may_follow_the_bid(local_ssh_emulator, home,
                                                            run):
    _two_nodes(run)
    on_host = 'case "$SKY_MITHRIL_HOST" in *-{}) exit 0;; *) exit 9;; esac'
    assert run('ssh', 'pair', '--node', '1', on_host.format(2)).code == 0
    assert run('ssh', 'pair', '--node', '1', on_host.format(1)).code == 9
    assert run('ssh', '--node', '0', 'pair', '--', on_host.format(1)).code == 0
    assert run('ssh', 'pair', '--node', '0', '--', 'test', 'a', '=', 'a').code == 0
    assert run('ssh', 'pair', '--node', '0', '--', 'test', 'a', '=', 'b').code == 1
    out_of_range = run('ssh', 'pair', '--node', '2', 'true')
    assert out_of_range.code == 1 and 'has nodes 0 to 1' in out_of_range.err


def test_show_prints_the_command_with_the_bids_identity(local_ssh_emulator, home, run,
                                                        api):
    _two_nodes(run)
    # A second local key that is not one of the bid's keys must not be picked.
    other = home / '.ssh' / 'id_aaa_other'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f',
                    str(other)], check=True)
    result = run('ssh', 'pair', '--show')
    assert result.code == 0, result.err
    [line] = result.out.splitlines()
    assert f'-i {home}/.ssh/id_ed25519 ' in line
    [node0] = [n for n in api.get('/v2/instances', project='proj_emulator')['data']
               if n['name'] == 'pair-0']
    assert f"-p {node0['ssh_port']} " in line
    assert line.endswith(f"{node0.get('ssh_user', 'ubuntu')}@{node0['ssh_destination']}")
    assert len(run('ssh', 'pair', '--show', 'uptime').out.splitlines()) == 2


def test_an_unknown_identity_is_named(local_ssh_emulator, home, run):
    _two_nodes(run)
    for key in (home / '.ssh').glob('id_ed25519*'):
        key.rename(key.with_name(key.name.replace('id_', 'old_')))
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f',
                    str(home / '.ssh' / 'id_ed25519')], check=True)
    result = run('ssh', 'pair', 'true')
    assert result.code == 1
    assert 'None of your local SSH keys' in result.err and 'opens bid pair' in result.err


def test_no_wait_fails_at_once_on_a_bid_that_is_not_running(local_ssh_emulator, home,
                                                            run):
    local_ssh_emulator.control('POST', 'price', instance_type=TYPE, region=REGION,
                               price='$50.00')
    _two_nodes(run, 'parked')
    result = run('ssh', 'parked', '--no-wait', 'true')
    assert result.code == 1
    assert 'Bid parked is Open' in result.err and 'drop --no-wait' in result.err
