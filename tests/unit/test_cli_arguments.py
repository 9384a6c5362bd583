"""The CLI refuses arguments that can't be meant, with argparse's own usage error (exit 2),
before anything runs: `replay --batch 0` looped forever, `--batch -1` crashed midway."""

from __future__ import annotations

import pytest

from beeoclock.cli import build_parser

NUMERIC = [
    ("dev", "--port"),
    ("api", "--port"),
    ("api", "--workers"),
    ("write-api", "--port"),
    ("write-api", "--workers"),
    ("read-api", "--port"),
    ("read-api", "--workers"),
    ("token", "--ttl"),
    ("replay", "--batch"),
    ("replay", "--workers"),
]
REQUIRED = {"token": ["--tenant", "t1"]}


def parse(*argv: str) -> object:
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize(("command", "option"), NUMERIC)
@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_a_numeric_option_must_be_a_positive_whole_number(
    command: str, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse(command, *REQUIRED.get(command, []), option, value)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "usage:" in error
    assert option in error


@pytest.mark.parametrize(("command", "option"), NUMERIC)
def test_a_positive_number_is_taken(command: str, option: str) -> None:
    args = parse(command, *REQUIRED.get(command, []), option, "7")
    assert getattr(args, option.removeprefix("--")) == 7


@pytest.mark.parametrize("command", ["dev", "api", "write-api", "read-api"])
def test_a_port_is_at_most_65535(command: str) -> None:
    assert parse(command, "--port", "65535").port == 65535  # type: ignore[attr-defined]
    with pytest.raises(SystemExit) as stopped:
        parse(command, "--port", "65536")
    assert stopped.value.code == 2
