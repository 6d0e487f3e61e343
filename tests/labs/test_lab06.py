"""Lab 06 in quick mode: the numbers its README promises."""

from cloud.labkit.runner import run_lab


def test_lab06_shows_keys_groups_guarantees_and_dead_letters(run_settings):
    metrics, _ = run_lab("06", quick=True, settings=run_settings)

    assert metrics["keyed_single_partition"] and metrics["in_order"]
    assert sorted(metrics["split"]["A"] + metrics["split"]["B"]) == [0, 1, 2]
    assert metrics["takeover_s"] < 15
    assert metrics["guarantees"]["at-least-once"]["lost"] == 0
    assert metrics["guarantees"]["at-least-once"]["duplicates"] > 0
    assert metrics["guarantees"]["at-most-once"]["lost"] > 0
    assert metrics["guarantees"]["at-most-once"]["duplicates"] == 0
    assert metrics["dead_letters"] == 3 and metrics["good_after_bad"] == 1
    assert set(metrics["two_groups"].values()) == {300}
