"""``mlspy serve``'s configuration: defaults < TOML file < MLSPY_* environment < options;
unknown or wrongly typed settings are usage errors naming the key; --print-config masks
secrets."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlspy.cli import main
from mlspy.ds.config import (
    ConfigError,
    Settings,
    load,
    mask_url,
    read_file,
    settings_table,
    to_toml,
)
from mlspy.ds.limits import Limits

ROOT = Path(__file__).resolve().parents[2]


def serve(*args: str, env: dict[str, Any] | None = None) -> Any:
    # Environment variables of the developer's shell must not leak into these checks.
    clean = {row[1]: None for row in settings_table()} | {"MLSPY_CONFIG": None}
    return CliRunner().invoke(main, ["serve", *args], env={**clean, **(env or {})})


def test_options_win_over_environment_over_file_over_defaults(tmp_path: Path) -> None:
    config = tmp_path / "mlspy.toml"
    config.write_text(
        'port = 9001\nhost = "127.0.0.2"\nregistration = "open"\n'
        "[limits]\nws_idle_timeout = 60\nrequest_burst = 7\n"
        '[log]\nlevel = "debug"\n'
    )
    settings, warnings = load(
        config,
        environ={"MLSPY_PORT": "9002", "MLSPY_LIMITS_REQUEST_BURST": "8"},
        overrides={"port": 9003, "host": None},
    )
    assert warnings == []
    assert settings.port == 9003  # option
    assert settings.limits.request_burst == 8  # environment
    assert settings.host == "127.0.0.2" and settings.limits.ws_idle_timeout == 60.0  # file
    assert settings.log.level == "debug" and settings.registration == "open"
    assert settings.limits.http_idle_timeout == Limits().http_idle_timeout  # default
    result = serve(
        "--config", str(config), "--port", "9004", "--print-config", env={"MLSPY_PORT": "1"}
    )
    assert result.exit_code == 0, result.output
    shown = read_file_text(tmp_path, result.output)
    assert shown.port == 9004 and shown.limits.request_burst == 7


def read_file_text(tmp_path: Path, text: str) -> Settings:
    out = tmp_path / "shown.toml"
    out.write_text(text)
    settings, _ = load(out, environ={})
    return settings


def test_every_limit_is_a_setting_with_an_environment_variable() -> None:
    env = {}
    for f in dataclasses.fields(Limits):
        value = getattr(Limits(), f.name)
        env[f"MLSPY_LIMITS_{f.name.upper()}"] = str(value * 2)
    settings, _ = load(environ=env)
    for f in dataclasses.fields(Limits):
        assert getattr(settings.limits, f.name) == getattr(Limits(), f.name) * 2, f.name


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("prot = 8080\n", {}, "prot: unknown setting"),
        ("[limits]\nws_idel_timeout = 3\n", {}, "limits.ws_idel_timeout: unknown setting"),
        ("[limitz]\n", {}, "limitz: unknown setting"),
        ('port = "8080"\n', {}, "port: expected integer, got '8080'"),
        ("metrics = 1\n", {}, "metrics: expected boolean, got 1"),
        ("[limits]\nrequest_burst = 1.5\n", {}, "limits.request_burst: expected integer"),
        (
            "[limits]\nrequest_timeout = -1\n",
            {},
            "limits.request_timeout: expected a number above 0",
        ),
        ("limits = 3\n", {}, "limits: expected a table"),
        ("port = 70000\n", {}, "port: expected 0..65535"),
        ('[log]\nformat = "xml"\n', {}, "log.format: expected one of json, text"),
        ("port = \n", {}, "not valid TOML"),
        ("", {"MLSPY_PORT": "eighty"}, "MLSPY_PORT: expected integer, got 'eighty'"),
        ("", {"MLSPY_METRICS": "maybe"}, "MLSPY_METRICS: expected boolean"),
        ('registration = "x509"\n', {}, "registration 'x509' needs ca"),
        ('tls_cert = "/etc/hostname"\n', {}, "tls_cert and tls_key go together"),
    ],
)
def test_bad_settings_are_usage_errors_that_name_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    config = tmp_path / "mlspy.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load(config, environ=env)
    result = serve("--config", str(config), env=env)
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_missing_config_file_and_unknown_variables() -> None:
    result = serve("--config", "/nonexistent/mlspy.toml")
    assert result.exit_code == 2 and "cannot read the configuration file" in result.output
    result = serve("--print-config", env={"MLSPY_PROT": "1"})
    assert result.exit_code == 0
    assert "MLSPY_PROT is not a setting of mlspy serve" in result.stderr


def test_print_config_masks_the_database_password() -> None:
    url = "postgresql://mlspy:hunter2@db:5432/mlspy?sslpassword=also&application_name=ds"
    result = serve("--print-config", env={"MLSPY_DATABASE": url})
    assert result.exit_code == 0
    assert "hunter2" not in result.output and "also" not in result.output
    assert 'database = "postgresql://mlspy:***@db:5432/mlspy?sslpassword=***&' in result.output
    assert mask_url("/var/lib/mlspy/ds.sqlite") == "/var/lib/mlspy/ds.sqlite"
    assert mask_url("postgresql://db/mlspy") == "postgresql://db/mlspy"


def test_print_config_reads_back_as_the_same_settings(tmp_path: Path) -> None:
    settings, _ = load(environ={"MLSPY_DATABASE": str(tmp_path / "x.sqlite")})
    path = tmp_path / "again.toml"
    path.write_text(to_toml(settings))
    assert load(path, environ={})[0] == settings
    assert read_file(path)["log"]["format"] == "json"


def test_every_setting_is_documented() -> None:
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    example = (ROOT / "deploy" / "mlspy.toml").read_text()
    for key, env, _, _ in settings_table():
        assert f"`{env}`" in deploy, env
        name = key.split(".")[-1]
        assert f"{name} =" in example, key
    # The example is a valid configuration file: known keys, right types.
    assert set(read_file(ROOT / "deploy" / "mlspy.toml")) >= {"log", "limits", "quotas"}
