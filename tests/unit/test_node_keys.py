"""A node key's name: found again by it, under Mithril's 60 characters."""

from sky_mithril.account import node_keys


def test_the_name_says_which_cluster_and_stays_under_60_characters():
    short = node_keys.key_name('proj_a', 'train-2ea4')
    assert short.startswith('sky-train-2ea4-') and len(short) == len('sky-train-2ea4-') + 8
    longest = 'x' * 45 + '-' + 'y' * 14  # SkyPilot's longest name on Mithril
    named = node_keys.key_name('proj_a', longest)
    # Cut to 46 characters, then the dangling '-' dropped.
    assert named == 'sky-' + 'x' * 45 + '-' + named[-8:]
    assert len(node_keys.key_name('proj_a', 'z' * 60)) == 59


def test_names_differ_by_project_and_past_the_cut():
    base = 'a' * 59
    assert len({node_keys.key_name('proj_a', base),
                node_keys.key_name('proj_b', base),
                node_keys.key_name('proj_a', base + 'b')}) == 3
