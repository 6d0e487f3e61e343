"""Benchmarks take key=value arguments like labs: typed, and a misspelt key names the right one."""

import pytest

from cloud.bench.stream import parse
from cloud.labkit.runner import LabError


def test_bench_arguments_are_typed_from_the_defaults():
    assert parse(("events=5", "lab=0"))["events"] == 5


def test_a_misspelt_bench_argument_names_the_right_one():
    with pytest.raises(LabError, match="did you mean events="):
        parse(("evnts=5",))
