"""The cloud command's parser: wrong commands and flags name the right ones."""

import pytest

from cloud.cli import build_parser, parse


def test_a_misspelt_command_suggests_the_right_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["stauts"])
    assert exit_info.value.code == 2
    assert "did you mean status?" in capsys.readouterr().err


def test_a_misspelt_flag_suggests_the_right_one(capsys):
    with pytest.raises(SystemExit):
        parse(["lab", "00", "--quik"])
    assert "did you mean --quick?" in capsys.readouterr().err


def test_lab_arguments_pass_through():
    args = parse(["lab", "07", "--quick", "devices=5", "duration=120"])
    assert (args.number, args.quick, args.args) == ("07", True, ["devices=5", "duration=120"])
