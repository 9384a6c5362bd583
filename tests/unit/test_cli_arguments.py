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


ID_OPTIONS = [
    ("--tenant", ["replay"]),
    ("--tenant", ["audit", "export"]),
    ("--entity", ["audit", "export", "--tenant", "t1"]),
    ("--tenant", ["gdpr", "export", "--customer", "c1"]),
    ("--customer", ["gdpr", "export", "--tenant", "t1"]),
    ("--tenant", ["gdpr", "erase", "--customer", "c1", "--reason", "r"]),
    ("--customer", ["gdpr", "erase", "--tenant", "t1", "--reason", "r"]),
    ("--tenant", ["gdpr", "seal-legacy"]),
    ("--tenant", ["token"]),
]


@pytest.mark.parametrize(("option", "command"), ID_OPTIONS)
@pytest.mark.parametrize("value", ["", " ", "a b", "evil\n", "t:1", "../x", "%", "x" * 65, "ü"])
def test_a_malformed_tenant_or_entity_id_is_a_usage_error(
    option: str, command: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`replay --tenant ""` meant every tenant; `audit export --tenant "t:1"` a prefix."""
    with pytest.raises(SystemExit) as stopped:
        parse(*command, option, value)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "usage:" in error
    assert option in error


@pytest.mark.parametrize(("option", "command"), ID_OPTIONS)
@pytest.mark.parametrize("value", ["dev-tenant", "67bd8f7452117c3de1196e27", "A_b-9", "x" * 64])
def test_a_well_formed_id_is_taken(option: str, command: list[str], value: str) -> None:
    args = parse(*command, option, value)
    given = getattr(args, option.removeprefix("--"))
    assert given == ([value] if option == "--tenant" and command == ["token"] else value)
