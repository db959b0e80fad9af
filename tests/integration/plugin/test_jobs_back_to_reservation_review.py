"""Review findings on back_to_reservation, each a failing test."""

import types

from sky_mithril.account import connection
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import reservation_claims
from sky_mithril.recovery import policy
from sky_mithril.recovery import runtime

from tests.integration.plugin.test_jobs_back_to_reservation import (  # noqa: F401 (on_spot: fixture)
    MINUTE, NAMES_IT, RECOVER_NOW, REGION, TYPE, give_back, hooks_run,
    on_spot, status, told)
from tests.integration.plugin.test_jobs_reservation_end import (
    LocalRunner, config, while_the_clock_moves)


def _handle(name: str, runner) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        cluster_name=name, cluster_name_on_cloud=name, cluster_yaml=None,
        get_command_runners=lambda: [runner],
        launched_resources=types.SimpleNamespace(
            cloud=types.SimpleNamespace(canonical_name=lambda: 'mithril'),
            instance_type=TYPE, region=REGION, max_hourly_cost=None,
            cluster_config_overrides={'mithril': NAMES_IT}))


def test_one_free_instance_starts_the_move_of_one_job_only(on_spot, tmp_path):
    """Two jobs on spot wait for the same 1-instance reservation: when the
    instance frees, both are told and both restart; one of them can land on
    it, the other pays a teardown and a relaunch on spot for nothing."""
    server, reservation, runner = on_spot
    try:
        while_the_clock_moves(server, lambda: provisioner.run_instances(
            REGION, 'job2', 'job2', config(reservation.name, 600)))
        give_back(server, 'other')
        runner2 = LocalRunner(tmp_path / 'job2')
        rt = runtime.MithrilJobRuntime()
        assert rt.get_job_status(_handle('job', runner), 'job') is None
        assert rt.get_job_status(_handle('job2', runner2), 'job2') is None
        assert told(tmp_path)
        # The single free instance is already promised to `job`.
        assert not told(tmp_path / 'job2')
    finally:
        reservation_claims.release(reservation_claims.of_cluster('job2'))
        cluster_bid.cancel_all(connection.connect(), 'job2')


def test_a_move_the_strategy_never_took_does_not_recover_again_unhooked(
        on_spot, tmp_path):
    """A move whose recovery did not tear the node down (a pool job, whose
    strategy skips plan_recovery, or plan_recovery raising): the job runs on
    on the same spot node, whose hooks-done file is left from the first move.
    An hour later the next move recovers at once, without running the
    task's preemption hooks (the watcher runs them once per node)."""
    server, _, runner = on_spot
    give_back(server, 'other')
    assert status(NAMES_IT, runner) is None
    hooks_run(tmp_path)
    assert status(NAMES_IT, runner) == RECOVER_NOW
    runtime.MithrilJobRuntime().on_before_recovery(
        _handle('job', runner), None, 1, None, None, 7)
    # Pool: SkyPilot resubmits the job on the same worker; nothing torn down.
    server.control('POST', 'advance', seconds=(
        policy.BACK_TO_RESERVATION_INTERVAL + 2 * MINUTE).total_seconds())
    assert status(NAMES_IT, runner) is None  # told again
    # The second move must not recover before the hooks ran again.
    assert status(NAMES_IT, runner) is None
