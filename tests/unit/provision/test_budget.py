"""The spend budget's arithmetic and words: the worst case counts what can
bill, a change that lifts it past the budget is refused naming the bids and
the excess, one that lifts nothing always passes."""

import datetime
from decimal import Decimal

from sky_mithril.api import models
from sky_mithril.provision import budget as budget_lib
from sky_mithril.task import settings

BUDGET = settings.SpendBudget(Decimal('30.00'),
                              'max_hourly_spend in config.mithril')


def bid(fid: str, name: str, status: str, limit: str,
        quantity: int = 1) -> models.Bid:
    return models.Bid(fid=fid, name=name, project='proj', created_by='u',
                      created_at=datetime.datetime(2026, 1, 1,
                                                   tzinfo=datetime.timezone.utc),
                      limit_price=limit, instance_quantity=quantity,
                      instance_type='it_1', status=status)


BIDS = [bid('bid_1', 'train-2ea4', 'Allocated', '$8.00', 2),
        bid('bid_2', 'dev', 'Preempting', '$4.00'),
        bid('bid_3', 'waiting', 'Open', '$3.00')]


def test_the_worst_case_counts_what_can_bill():
    assert budget_lib.worst_case(BIDS[0]) == Decimal('16.00')
    assert budget_lib.worst_case(bid('b', 'n', 'Paused', '$9.00')) == 0
    assert budget_lib.worst_case(bid('b', 'n', 'Terminated', '$9.00')) == 0


def test_a_new_bid_within_the_budget_fits_and_the_note_says_so():
    standing = budget_lib.standing(BUDGET, BIDS,
                                   budget_lib.new_bid('x', 2, Decimal('3.50')))
    assert (standing.now, standing.after) == (Decimal('23.00'),
                                              Decimal('30.00'))
    assert standing.fits
    assert standing.note() == (
        "Mithril spend: worst case now $23.00/h of your $30.00/h "
        "(max_hourly_spend in config.mithril); $30.00/h with the new bid "
        "'x' (2× $3.50/h).")


def test_a_refusal_names_the_bids_their_clusters_and_the_excess():
    standing = budget_lib.standing(BUDGET, BIDS,
                                   budget_lib.new_bid('x', 1, Decimal('9.00')))
    assert not standing.fits
    message = str(standing.refusal({'train-2ea4': 'train'}))
    assert ("the new bid 'x' (1× $9.00/h) would lift the project's worst case "
            'from $23.00/h to $32.00/h, $2.00/h above $30.00/h '
            '(max_hourly_spend in config.mithril)') in message
    assert ('cluster train (bid_1, Allocated, 2× $8.00/h = $16.00/h); '
            'bid dev (bid_2, Preempting, 1× $4.00/h = $4.00/h); '
            'bid waiting (bid_3, Open, 1× $3.00/h = $3.00/h)') in message
    assert 'sky down' in message and 'raise max_hourly_spend' in message


def test_a_change_that_lifts_nothing_passes_even_over_the_budget():
    tight = settings.SpendBudget(Decimal('10.00'), 'the test')
    same = budget_lib.Change('this launch', Decimal('16.00'),
                             frozenset({'bid_1'}))
    assert budget_lib.standing(tight, BIDS, same).fits
    raised = budget_lib.Change('this launch', Decimal('16.01'),
                               frozenset({'bid_1'}))
    assert not budget_lib.standing(tight, BIDS, raised).fits
