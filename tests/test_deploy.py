"""The deployment files (Docker is not needed to check them): compose.yaml runs two DS nodes on
its PostgreSQL with health checks and passes only real settings; the Dockerfile builds a
non-root image serving on every interface with a health check; the systemd unit's ExecStart
is a valid `mlspy serve` command line and the unit is hardened."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from click.testing import CliRunner

from mlspy.cli import main
from mlspy.ds.config import load, metrics_token, settings_table

ROOT = Path(__file__).resolve().parents[1]


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with every variable unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_runs_two_ds_nodes_on_its_postgres(tmp_path: Path) -> None:
    services = _compose()["services"]
    assert set(services) >= {"postgres", "ds1", "ds2"}
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    pg_env = {k: _interpolate(str(v)) for k, v in postgres["environment"].items()}
    published = set()
    for name in ("ds1", "ds2"):
        node = services[name]
        assert node["build"] == "." and node["image"].startswith("mlspy-ds")
        assert node["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(node["healthcheck"]["test"])
        env = {k: _interpolate(str(v)) for k, v in node["environment"].items()}
        # Every variable is a setting of the config loader, and loads.
        known = {row[1] for row in settings_table()}
        assert set(env) <= known, set(env) - known
        # The metrics token comes from the compose secret, mounted where secrets go.
        assert node["secrets"] == ["metrics_token"]
        assert env["MLSPY_METRICS_TOKEN_FILE"] == "/run/secrets/metrics_token"
        env["MLSPY_METRICS_TOKEN_FILE"] = str(tmp_path / "token")
        (tmp_path / "token").write_text("s3cret\n")
        settings, warnings = load(environ=env)
        assert warnings == []
        url = urlsplit(settings.database)
        assert url.scheme == "postgresql" and url.hostname == "postgres"
        assert url.username == pg_env["POSTGRES_USER"]
        assert url.password == pg_env["POSTGRES_PASSWORD"]
        assert url.path == "/" + pg_env["POSTGRES_DB"]
        assert settings.metrics and not settings.metrics_public
        assert metrics_token(settings) == "s3cret"
        # Published on loopback of the host only, to the container's port 8080.
        (port,) = node["ports"]
        host_ip, host_port, container = port.split(":")
        assert host_ip == "127.0.0.1" and container == str(settings.port) == "8080"
        published.add(host_port)
    assert len(published) == 2


def test_compose_prometheus_scrapes_both_nodes_with_the_metrics_token() -> None:
    compose = _compose()
    prometheus = compose["services"]["prometheus"]
    (mount,) = prometheus["volumes"]
    source = mount.split(":")[0]
    config = yaml.safe_load((ROOT / source).read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    # Prometheus is another container, so not a loopback client: without the token the
    # nodes would answer 403. It reads the same secret the nodes read.
    assert prometheus["secrets"] == ["metrics_token"]
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert compose["secrets"]["metrics_token"] == {"environment": "METRICS_TOKEN"}
    assert sorted(job["static_configs"][0]["targets"]) == ["ds1:8080", "ds2:8080"]


def _dockerfile() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_dockerfile_essentials() -> None:
    lines = _dockerfile()
    assert lines[0] == "FROM python:3.12-slim"
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("USER root", "USER 0")
    assert any(line.startswith("HEALTHCHECK") and "/healthz" in line for line in lines)
    entry = next(line for line in lines if line.startswith("ENTRYPOINT"))
    cmd = next(line for line in lines if line.startswith("CMD"))
    import json

    argv = json.loads(entry.split(" ", 1)[1]) + json.loads(cmd.split(" ", 1)[1])
    assert argv == ["mlspy", "serve", "--host", "0.0.0.0"]
    env_lines = " ".join(line for line in lines if line.startswith("ENV "))
    variables = set(re.findall(r"(MLSPY_[A-Z_]+)=", env_lines))
    assert variables and variables <= {row[1] for row in settings_table()}
    assert any("pip install" in line and "postgres" in line for line in lines)


def test_systemd_unit_runs_a_valid_serve_command_and_is_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((ROOT / "deploy" / "mlspy-ds.service").read_text())
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/mlspy") and argv[1] == "serve"
    # The command line parses with our CLI (--print-config stops before serving).
    example = ROOT / "deploy" / "mlspy.toml"
    args = [a if a != "/etc/mlspy/mlspy.toml" else str(example) for a in argv[1:]]
    result = CliRunner().invoke(main, [*args, "--print-config"], env={"MLSPY_DATABASE": None})
    assert result.exit_code == 0, result.output
    assert 'database = "/var/lib/mlspy/ds.sqlite"' in result.output
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "StateDirectory": "mlspy",
        "DynamicUser": "yes",
        "PrivateTmp": "yes",
    }.items():
        assert service[key] == value, key
