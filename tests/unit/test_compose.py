"""The deployment files agree with the code: compose.yaml runs real CLI subcommands with
accepted flags, passes only settings that exist, orders start-up on health checks that
exist, and the Dockerfile's entry point is the CLI.

Each check is a function returning the problems it finds, so the tests below also prove
that the checks catch a broken file (a check that can never fail protects nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from beeoclock.cli import build_parser
from beeoclock.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())  # the safe loader resolves `<<: *anchor` merges
    assert isinstance(data, dict)
    assert isinstance(data.get("services"), dict), "compose.yaml has no services"
    return data


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the repository's own image (the ones with a `build`)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: p[1] if len(p) > 1 else "" for p in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the CLI has no subcommands")


def command_problems(compose: dict[str, Any]) -> list[str]:
    known = subcommands()
    problems = []
    for name, service in app_services(compose).items():
        argv = command_of(service)
        if not argv:
            problems.append(f"{name}: no command (the image would only print --help)")
            continue
        if argv[0] not in known:
            problems.append(f"{name}: {argv[0]!r} is not a subcommand of {sorted(known)}")
            continue
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                build_parser().parse_args(argv)
        except SystemExit:
            problems.append(
                f"{name}: `beeoclock {shlex.join(argv)}` is rejected: {stderr.getvalue().strip()}"
            )
    return problems


def setting_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{field}".upper() for field in Settings.model_fields}


def environment_problems(compose: dict[str, Any]) -> list[str]:
    known = setting_names()
    return [
        f"{name}: {var} is not a setting (known: {sorted(known)})"
        for name, service in compose["services"].items()
        for var in environment_of(service)
        if var.startswith("BEEOCLOCK_") and var not in known
    ]


def dependency_problems(compose: dict[str, Any]) -> list[str]:
    services = compose["services"]
    problems = []
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            problems.append(f"{name}: depends_on {depends_on} has no conditions (short syntax)")
            continue
        for dependency, spec in depends_on.items():
            condition = (spec or {}).get("condition")
            if dependency not in services:
                problems.append(f"{name}: depends on {dependency!r}, which is not a service")
            elif condition not in CONDITIONS:
                problems.append(f"{name}: depends on {dependency!r} with condition {condition!r}")
            elif condition == "service_healthy":
                check = services[dependency].get("healthcheck") or {}
                if not check.get("test") or check.get("disable"):
                    problems.append(
                        f"{name}: waits for {dependency!r} to be healthy, but it has no healthcheck"
                    )
            elif condition == "service_completed_successfully":
                restart = str(services[dependency].get("restart", "no"))
                if restart != "no":
                    problems.append(
                        f"{name}: waits for {dependency!r} to complete, but it "
                        f"restarts ({restart}) instead of exiting"
                    )
    return problems


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`, against `env`."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op in {":-", "-"}:
            return arg
        if op in {":?", "?"}:
            raise KeyError(f"{name}: {arg}")
        return ""

    return _INTERPOLATION.sub(one, value)


def settings_problems(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    problems = []
    for name, service in app_services(compose).items():
        values = {
            var.removeprefix("BEEOCLOCK_").lower(): interpolate(value, env)
            for var, value in environment_of(service).items()
            if var.startswith("BEEOCLOCK_")
        }
        try:
            Settings(**values)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            problems.append(f"{name}: {exc}")
    return problems


def final_stage(dockerfile: str) -> list[tuple[str, str]]:
    """The (INSTRUCTION, arguments) of the last stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    lines = [line.strip() for line in joined.splitlines()]
    instructions = [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in lines if line and not line.startswith("#"))
    ]
    starts = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    return instructions[starts[-1] :] if starts else instructions


def entrypoint_problems(dockerfile: str) -> list[str]:
    entrypoints = [arg for op, arg in final_stage(dockerfile) if op == "ENTRYPOINT"]
    if not entrypoints:
        return ["the image has no ENTRYPOINT"]
    try:
        argv = json.loads(entrypoints[-1])
    except json.JSONDecodeError:
        return [f"ENTRYPOINT {entrypoints[-1]} is in shell form (signals miss the process)"]
    return [] if argv == ["beeoclock"] else [f"ENTRYPOINT is {argv}, not ['beeoclock']"]


def user_problems(dockerfile: str) -> list[str]:
    users = [arg.strip() for op, arg in final_stage(dockerfile) if op == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        return ["the image runs as root"]
    return []


# --- compose.yaml ---------------------------------------------------------------------------


def test_every_app_service_runs_an_existing_subcommand_with_accepted_flags() -> None:
    compose = load_compose()
    assert {"migrate", "write-api", "read-api", "relay", "projector"} <= set(app_services(compose))
    assert command_problems(compose) == []


def test_every_beeoclock_variable_passed_to_a_service_is_a_setting() -> None:
    compose = load_compose()
    passed = {var for svc in compose["services"].values() for var in environment_of(svc)}
    assert {
        "BEEOCLOCK_DATABASE_URL",
        "BEEOCLOCK_KAFKA_BOOTSTRAP_SERVERS",
        "BEEOCLOCK_REDIS_URL",
        "BEEOCLOCK_JWT_SECRET",
    } <= passed
    assert environment_problems(compose) == []


#: What the operator must provide (compose.yaml's header says how to make them).
OPERATOR = {
    "BEEOCLOCK_JWT_SECRET": "x" * 40,
    "BEEOCLOCK_MASTER_KEY": "kwUozBhF62bhj9vv8WAzL+h7uXUuJeYlRmnN49IaUSk=",
}


def test_app_environment_passes_settings_validation() -> None:
    assert settings_problems(load_compose(), OPERATOR) == []


@pytest.mark.parametrize("secret", sorted(OPERATOR))
def test_secrets_are_required_from_the_operator(secret: str) -> None:
    compose = load_compose()
    for name, service in app_services(compose).items():
        value = environment_of(service)[secret]
        with pytest.raises(KeyError, match=secret):
            interpolate(value, {})
        assert interpolate(value, OPERATOR) == OPERATOR[secret], name


def test_every_dependency_has_a_condition_on_an_existing_service_that_can_meet_it() -> None:
    assert dependency_problems(load_compose()) == []


def test_app_processes_wait_for_healthy_servers_and_a_finished_migration() -> None:
    compose = load_compose()
    for name, service in app_services(compose).items():
        conditions = {dep: spec["condition"] for dep, spec in service["depends_on"].items()}
        assert conditions.get("postgres") == "service_healthy", name
        if name != "migrate":
            assert conditions == {
                "postgres": "service_healthy",
                "kafka": "service_healthy",
                "redis": "service_healthy",
                "migrate": "service_completed_successfully",
            }, name


def test_api_health_checks_and_published_ports_target_the_port_the_api_listens_on() -> None:
    compose = load_compose()
    for name in ("write-api", "read-api"):
        service = compose["services"][name]
        args = build_parser().parse_args(command_of(service))
        test = " ".join(service["healthcheck"]["test"])
        assert f":{args.port}/healthz" in test, name
        assert all(str(p).endswith(f":{args.port}") for p in service["ports"]), name


# --- Dockerfile -----------------------------------------------------------------------------


def test_image_entrypoint_is_the_beeoclock_cli() -> None:
    assert entrypoint_problems(DOCKERFILE.read_text()) == []


def test_image_runs_as_a_non_root_user_without_the_embedded_servers() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert user_problems(dockerfile) == []
    assert "embedded" not in "".join(arg for op, arg in final_stage(dockerfile) if op == "RUN")
    assert "[embedded" not in dockerfile


# --- the checks catch broken files ----------------------------------------------------------


def _broken(edit: str) -> dict[str, Any]:
    compose = copy.deepcopy(load_compose())
    services = compose["services"]
    if edit == "unknown subcommand":
        services["relay"]["command"] = ["relais"]
    elif edit == "unknown flag":
        services["read-api"]["command"] = "read-api --listen 0.0.0.0"
    elif edit == "bad flag value":
        services["write-api"]["command"] = ["write-api", "--port", "eighty"]
    elif edit == "no command":
        del services["projector"]["command"]
    return compose


@pytest.mark.parametrize(
    "edit", ["unknown subcommand", "unknown flag", "bad flag value", "no command"]
)
def test_command_check_catches_a_command_the_cli_rejects(edit: str) -> None:
    before = command_problems(load_compose())
    assert len(command_problems(_broken(edit))) == len(before) + 1


def test_environment_check_catches_a_misspelled_setting() -> None:
    compose = copy.deepcopy(load_compose())
    compose["services"]["relay"]["environment"] = {"BEEOCLOCK_KAFKA_BOOTSTRAP": "kafka:9092"}
    compose["services"]["projector"]["environment"] = ["BEEOCLOCK_REDIS=redis://redis"]
    assert len(environment_problems(compose)) >= 2


def test_settings_check_catches_an_invalid_value() -> None:
    compose = copy.deepcopy(load_compose())
    relay = compose["services"]["relay"]
    relay["environment"] = {**relay["environment"], "BEEOCLOCK_REDIS_URL": "http://redis:6379"}
    assert settings_problems(compose, OPERATOR) != []
    assert settings_problems(load_compose(), OPERATOR | {"BEEOCLOCK_JWT_SECRET": "short"}) != []


def test_dependency_check_catches_missing_conditions_services_and_healthchecks() -> None:
    compose = copy.deepcopy(load_compose())
    services = compose["services"]
    services["relay"]["depends_on"] = ["postgres"]
    services["projector"]["depends_on"] = {"zookeeper": {"condition": "service_started"}}
    services["write-api"]["depends_on"] = {"redis": {}}
    del services["redis"]["healthcheck"]
    services["migrate"]["restart"] = "unless-stopped"
    problems = dependency_problems(compose)
    assert any("relay" in p and "short syntax" in p for p in problems)
    assert any("projector" in p and "zookeeper" in p for p in problems)
    assert any("write-api" in p and "condition None" in p for p in problems)
    assert any("read-api" in p and "no healthcheck" in p for p in problems)
    assert any("read-api" in p and "restarts" in p for p in problems)


@pytest.mark.parametrize(
    "dockerfile",
    [
        'FROM python:3.11-slim\nENTRYPOINT ["python", "-m", "beeoclock.cli"]\n',
        "FROM python:3.11-slim\nENTRYPOINT beeoclock\n",
        'FROM python:3.11-slim AS build\nENTRYPOINT ["beeoclock"]\nFROM python:3.11-slim\n',
        "FROM python:3.11-slim\nCMD beeoclock\n",
    ],
)
def test_entrypoint_check_catches_another_entrypoint(dockerfile: str) -> None:
    assert entrypoint_problems(dockerfile) != []


@pytest.mark.parametrize("user", ["", "USER root\n", "USER 0:0\n"])
def test_user_check_catches_an_image_running_as_root(user: str) -> None:
    assert user_problems(f'FROM python:3.11-slim\n{user}ENTRYPOINT ["beeoclock"]\n') != []
