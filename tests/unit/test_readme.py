"""The README tells the truth about settings and commands."""

from __future__ import annotations

import re
from pathlib import Path

from beeoclock.cli import EXIT_STATUS, build_parser
from beeoclock.settings import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table_and_nothing_else() -> None:
    documented = set(re.findall(r"^\| `(BEEOCLOCK_[A-Z_]+)` \|", README, re.MULTILINE))
    actual = {f"BEEOCLOCK_{name.upper()}" for name in Settings.model_fields}
    assert documented == actual


def test_every_cli_command_is_documented() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for command in subparsers.choices:  # type: ignore[union-attr]
        assert f"beeoclock {command}" in README or f"| {command}" in README, command


def test_the_quick_start_names_the_make_targets() -> None:
    assert "make run" in README
    assert "make test" in README


def test_the_exit_statuses_are_in_the_help_and_the_readme() -> None:
    help_text = build_parser().format_help()
    listed = re.findall(r"^  (\d+) +\S", EXIT_STATUS, re.MULTILINE)
    assert listed == ["0", "1", "2", "3", "4", "130", "141"]
    assert EXIT_STATUS in help_text
    documented = re.findall(r"^\| (\d+) \| ", README, re.MULTILINE)
    assert documented == listed
