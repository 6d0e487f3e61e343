"""The lab runner: finding labs, parsing key=value arguments, naming the right flag."""

import pytest

from cloud.labkit.runner import LabError, discover_labs, find_lab, parse_args


def test_unknown_lab_lists_the_available_ones():
    with pytest.raises(LabError) as error:
        find_lab("99")
    assert "no lab '99'" in str(error.value)
    assert "lab-00 (hello-stack)" in str(error.value)


def test_lab_number_forms_are_accepted():
    assert find_lab("0").number == "00"
    assert find_lab("lab-00").number == "00"
    assert "00" in discover_labs()


def test_arguments_are_typed_from_the_defaults():
    defaults = {"devices": 3, "duration": 60.0, "drift_at": 40, "tls": False, "name": "x"}

    values = parse_args(["devices=5", "duration=1.5", "drift-at=7", "tls=yes", "name=y"], defaults)

    assert values == {"devices": 5, "duration": 1.5, "drift_at": 7, "tls": True, "name": "y"}


def test_a_misspelt_argument_names_the_right_one():
    with pytest.raises(LabError) as error:
        parse_args(["devics=5"], {"devices": 3, "seed": 0})
    assert "did you mean devices=" in str(error.value)


def test_a_wrongly_typed_value_shows_an_example():
    with pytest.raises(LabError) as error:
        parse_args(["devices=many"], {"devices": 3})
    assert "expected int like devices=3" in str(error.value)


def test_an_argument_without_equals_is_refused():
    with pytest.raises(LabError, match="not key=value"):
        parse_args(["devices"], {"devices": 3})
