"""The ``mlspy`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from mlspy import __version__
from mlspy.errors import MLSError, StorageError
from mlspy.vectors import runner


def run() -> None:
    """The console entry point: the command, with an unexpected failure reported in one line
    (set MLSPY_DEBUG=1 for the traceback) instead of a traceback."""
    import os

    try:
        main(standalone_mode=True)
    except Exception as exc:
        if os.environ.get("MLSPY_DEBUG"):
            raise
        click.echo(f"mlspy: error: {_describe(exc)} (MLSPY_DEBUG=1 shows the traceback)", err=True)
        sys.exit(1)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlspy")
def main() -> None:
    """mlspy: Messaging Layer Security (RFC 9420) in Python."""


@main.group()
def vectors() -> None:
    """Check the official MLS test vectors."""


@vectors.command("verify")
@click.option("--kind", help="Vector kind for every FILE (default: from each file name).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify(kind: str | None, as_json: bool, files: tuple[Path, ...]) -> None:
    """Check official test-vector FILEs and report passed, failed and skipped entries.

    The kind of each file comes from its name (tree-math.json -> tree-math) or from --kind.
    Without FILEs, every file in $MLS_TEST_VECTORS (default ../shared/mls-test-vectors) is
    checked; files of unknown kinds are listed with their entries skipped.
    Exit status: 0 when nothing failed, 1 when an entry failed, 2 on a usage error.
    """
    try:
        if files:
            paths = list(files)
            results = [_run(p, kind, as_json) for p in paths]
        else:
            if kind:
                raise click.UsageError("--kind needs FILE arguments")
            directory = runner.default_vectors_dir()
            if not directory.is_dir():
                raise click.UsageError(
                    f"no test-vector directory at {directory}; pass FILEs or set "
                    "MLS_TEST_VECTORS to the folder holding the official vectors"
                )
            paths = sorted(directory.glob("*.json"))
            if not paths:
                raise click.UsageError(
                    f"no *.json test vectors in {directory}; point MLS_TEST_VECTORS at the "
                    "folder holding the official vectors"
                )
            supported = set(runner.supported_kinds())
            results = [
                _run(p, None, as_json) if runner.kind_of(p) in supported else runner.unknown_file(p)
                for p in paths
            ]
    except (MLSError, ValueError) as exc:  # e.g. a file that is not JSON
        raise click.UsageError(str(exc)) from None

    passed = sum(r.count("passed") for r in results)
    failed = sum(r.count("failed") for r in results)
    skipped = sum(r.count("skipped") for r in results)
    if as_json:
        doc = {
            "files": [r.as_json() for r in results],
            "total": {"passed": passed, "failed": failed, "skipped": skipped},
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        for r in results:
            line = (
                f"{r.path}: {r.count('passed')} passed, {r.count('failed')} failed, "
                f"{r.count('skipped')} skipped"
            )
            if r.note:
                line += f" ({r.note})"
            click.echo(line)
            for e in r.entries:
                if e.status == "failed":
                    detail = f" — {e.detail}" if e.detail else ""
                    click.echo(f"  FAILED {e.name}: {e.check}{detail}")
        click.echo(f"total: {passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed else 0)


def _run(path: Path, kind: str | None, quiet: bool) -> runner.FileResult:
    show = not quiet and sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if show:
            click.echo(f"\r{path.name}: {done}/{total}", nl=False, err=True)
            if done == total:
                click.echo("\r\x1b[K", nl=False, err=True)

    return runner.run_file(path, kind, progress)


@main.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Benchmark group operations by group size (see mlspy bench --help)."""
    from mlspy.bench.main import main as bench_main

    sys.exit(bench_main(ctx.args))


@main.command(
    "bench-ds",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def bench_ds(ctx: click.Context) -> None:
    """Load-test the Delivery Service, open loop (see mlspy bench-ds --help)."""
    from mlspy.bench.ds_load import main as bench_ds_main

    sys.exit(bench_ds_main(ctx.args))


SERVE_EPILOG = """\b
Settings come from defaults < --config FILE (TOML) < MLSPY_* environment variables <
these options. Every setting, with its variable and default, is in docs/deploy.md and in
`mlspy serve --print-config`; e.g. MLSPY_DATABASE, MLSPY_LOG_LEVEL, MLSPY_METRICS,
MLSPY_RETENTION (seconds), MLSPY_LIMITS_HTTP_IDLE_TIMEOUT, MLSPY_QUOTAS_BYTES.
\b
Exposes on HOST:PORT: the HTTP API and WebSocket (/v1/...), /healthz, /readyz, /metrics
(turn off with metrics = false) and /openapi.json. Listens on 127.0.0.1 unless --host says
otherwise; serve other machines with TLS (--tls-cert/--tls-key) or behind a TLS proxy.
Exit status: 0 after a clean stop, 1 on a runtime error, 2 on a bad setting."""


@main.command("serve", epilog=SERVE_EPILOG)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="MLSPY_CONFIG",
    help="TOML configuration file (also $MLSPY_CONFIG); see deploy/mlspy.toml.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 or :: for all).",
)
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
)
@click.option(
    "--database",
    help="SQLite file path (default: ~/.local/share/mlspy/ds.sqlite) or postgresql://… URL.",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="TLS certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="TLS private key.")
@click.option(
    "--registration",
    type=click.Choice(["invite", "open", "x509"]),
    default="invite",
    show_default=True,
    help=(
        "Who may register a new name: 'invite' — with a single-use invite code (the first "
        "is printed at start; `mlspy admin invite` makes more; users make codes for friends); "
        "'open' — anyone, first come first bound (a local test server only); 'x509' — an "
        "X.509 certificate from the --ca."
    ),
)
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM file of CA certificates: X.509 credentials they issue are accepted.",
)
@click.option(
    "--cipher-suites",
    help="Cipher suites devices, KeyPackages and groups may use: comma-separated numbers or "
    "names (`mlspy suites`), or post-quantum (every post-quantum one). Default: all.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error", "critical"]),
    default="info",
    show_default=True,
    help="Least severe log lines written (stderr).",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    default="json",
    show_default=True,
    help="Log lines as JSON objects (for collectors) or text.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Server processes sharing the port and the database (one per core).",
)
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the effective configuration (TOML, secrets masked) and exit.",
)
def serve_command(
    config_file: str | None,
    host: str | None,
    port: int | None,
    database: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    registration: str | None,
    ca: str | None,
    cipher_suites: str | None,
    log_level: str | None,
    log_format: str | None,
    workers: int | None,
    print_config: bool,
) -> None:
    """Run the Delivery Service and Authentication Service (HTTP + WebSocket)."""
    from mlspy.ds.config import to_toml
    from mlspy.ds.server import serve_settings

    # An option left at its default does not override the file or the environment.
    ctx = click.get_current_context()
    given = {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    }
    options: dict[str, object] = {
        "host": host,
        "port": port,
        "database": database,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "registration": registration,
        "ca": ca,
        "cipher_suites": cipher_suites,
        "log.level": log_level,
        "log.format": log_format,
        "workers": workers,
    }
    settings = _load_settings(
        config_file,
        {k: v for k, v in options.items() if k.replace(".", "_") in given},
    )
    if print_config:
        click.echo(to_toml(settings), nl=False)
        return
    _check_port_free(settings.host, settings.port)
    try:
        serve_settings(settings)
    except StorageError as exc:  # e.g. PostgreSQL unreachable; the URL in it is masked
        raise click.ClickException(
            f"{' '.join(str(exc).split())} (check the database setting and that the "
            "database server runs)"
        ) from None


def _load_settings(config_file: str | None, overrides: dict[str, object]) -> Any:
    """The effective settings, or a usage error (exit 2) that names the setting."""
    from mlspy.ds.config import ConfigError, load

    try:
        settings, warnings = load(config_file, overrides=overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    for warning in warnings:
        click.echo(f"mlspy: warning: {warning}", err=True)
    return settings


@main.command("invite")
@click.option(
    "--database",
    help="The server's database (as for `mlspy serve`; default ~/.local/share/mlspy/ds.sqlite).",
)
@click.option(
    "--count", default=1, show_default=True, type=click.IntRange(1, 100), help="How many codes."
)
def invite_command(database: str | None, count: int) -> None:
    """Print new single-use invite codes of the operator (for `mlspy serve --registration
    invite`): each admits one new name, for 7 days."""
    from mlspy.ds.admin import create_invites
    from mlspy.ds.db import open_database
    from mlspy.ds.server import default_database

    db = open_database(database or default_database())
    try:
        for code in create_invites(db, count):
            click.echo(code)
    finally:
        db.close()


def _check_port_free(host: str, port: int) -> None:
    """Say plainly that the port is taken, before the server starts and logs its way out."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host.strip("[]"), port), family=family, reuse_port=False):
            pass
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another server "
            "using it? Choose another --port."
        ) from None


@main.command("demo")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable transcript.")
@click.option(
    "--suite",
    default="1",
    show_default=True,
    help="Cipher suite, by number (0x53 or 83) or name (e.g. "
    "MLS_256_XWING_AES256GCM_SHA512_Ed25519); `mlspy suites` lists them.",
)
def demo_command(as_json: bool, suite: str) -> None:
    """Run a narrated MLS conversation over an embedded Delivery Service."""
    from mlspy.tools.demo import run

    sys.exit(run(as_json, parse_suite(suite)))


def parse_suite(text: str) -> int:
    """A cipher suite given by number (decimal or 0x hex) or by name; a usage error (exit 2)
    naming ``mlspy suites`` otherwise."""
    from mlspy.crypto.suite import parse_suite as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--suite") from None


@main.command("suites")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def suites_command(as_json: bool) -> None:
    """List the supported cipher suites (the post-quantum ones are experimental)."""
    from mlspy.crypto import CipherSuite, suite
    from mlspy.crypto.pq_suites import PQ_SUITES, TS_MLS_SUITES

    rows = []
    for cs in CipherSuite:
        p = suite(cs)
        family = (
            "RFC 9420"
            if cs not in PQ_SUITES
            else (
                "ts-mls 1.6 (experimental)"
                if cs in TS_MLS_SUITES
                else "draft-ietf-mls-pq-ciphersuites-06 (experimental)"
            )
        )
        rows.append(
            {
                "value": int(cs),
                "name": cs.name,
                "kem": p.hpke.kem_id.name,
                "signature": p.signer.scheme.name,
                "family": family,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"0x{r['value']:04x}  {r['name']:<58} {r['family']}")


@main.command("tree")
@click.argument("ratchet_tree", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--suite", default=1, show_default=True, help="Cipher suite of the tree file.")
@click.option("--store", type=click.Path(exists=True, dir_okay=False), help="A state database.")
@click.option("--group", "group_hex", help="Group id (hex) in --store.")
@click.option("--committer", type=int, help="Leaf whose commit path to mark.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG.")
@click.option("--svg", type=click.Path(dir_okay=False, path_type=Path), help="Write an SVG.")
@click.option("--json", "as_json", is_flag=True, help="Print the nodes as JSON.")
def tree_command(
    ratchet_tree: str | None,
    suite: int,
    store: str | None,
    group_hex: str | None,
    committer: int | None,
    png: Path | None,
    svg: Path | None,
    as_json: bool,
) -> None:
    """Draw a ratchet tree: from a file of ratchet_tree bytes, or a group in a state store."""
    from mlspy.crypto import suite as get_suite
    from mlspy.messages import decode_ratchet_tree
    from mlspy.tools.tree_picture import commit_path, render_image, render_text
    from mlspy.tree.ratchet_tree import RatchetTree

    held: set[int] = set()
    try:
        if store:
            from mlspy.storage import GroupStore, SQLiteStore

            _require_state_store(store)
            groups = GroupStore(SQLiteStore(store))
            ids = groups.group_ids()
            if group_hex is None and len(ids) != 1:
                raise click.UsageError(f"--group is needed: the store holds {len(ids)} groups")
            try:
                gid = bytes.fromhex(group_hex) if group_hex else ids[0]
            except ValueError:
                raise click.BadParameter("a group id in hex", param_hint="--group") from None
            group = groups.load(gid).group
            tree = group.tree
            held = group.held_node_indices()
        elif ratchet_tree:
            data = Path(ratchet_tree).read_bytes()
            tree = RatchetTree.from_nodes(get_suite(suite), decode_ratchet_tree(data))
        else:
            raise click.UsageError("give a RATCHET_TREE file or --store")
    except MLSError as exc:
        raise click.ClickException(f"cannot read the tree: {exc}") from None
    if committer is not None and not 0 <= committer < tree.n_leaves:
        raise click.BadParameter(
            f"leaf {committer} is not in a tree of {tree.n_leaves} leaves (0..{tree.n_leaves - 1})",
            param_hint="--committer",
        )
    path = commit_path(tree, committer) if committer is not None else set()
    if as_json:
        nodes = [
            {"node": x, "blank": tree.is_blank(x), "held": x in held}  # type: ignore[arg-type]
            for x in range(2 * tree.n_leaves - 1)
        ]
        click.echo(json.dumps({"n_leaves": tree.n_leaves, "nodes": nodes}, indent=2))
    else:
        click.echo(render_text(tree, held=held, path=path))
    for out in (png, svg):
        if out is not None:
            try:
                render_image(tree, out, held=held, path=path)
            except RuntimeError as exc:
                raise click.ClickException(str(exc)) from None
            click.echo(f"wrote {out}", err=True)


def _require_state_store(path: str) -> None:
    """A viewer must not turn an arbitrary file into a store: look before opening it."""
    import sqlite3
    from urllib.parse import quote

    try:
        conn = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=ro", uri=True)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'blobs'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        found = None
    if not found:
        raise click.ClickException(
            f"{path} is not an mlspy state store (one made by `mlspy chat --state FILE` or "
            "GroupStore(SQLiteStore(FILE)))"
        )


@main.command("chat")
@click.option("--server", required=True, help="Delivery Service URL, e.g. http://127.0.0.1:8080")
@click.option("--user", required=True, help="Your user name (your identity at the AS).")
@click.option(
    "--device",
    default="",
    help="This device's name among your user's devices (e.g. laptop); a further device of "
    "an existing user also needs --pair. Default: your first device, the bare user name.",
)
@click.option(
    "--pair",
    "pairing_code",
    help="Pairing code from /link on one of your devices: enrol this one (with --device).",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False),
    help="SQLite file for your state; the chat's history goes to FILE.history.",
)
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False),
    help="CA certificate (PEM) to trust for an https server with a self-signed certificate.",
)
@click.option("--invite", "invite_code", help="Invite code for registering a new name.")
@click.option(
    "--recover",
    "recovery_secret",
    help="Your name's recovery secret: take the name over on this device (every old one lost).",
)
@click.option(
    "--suite",
    default="1",
    show_default=True,
    help="Cipher suite of a new device (number or name; `mlspy suites`); your groups' "
    "members need it too. A device with --state keeps the suite it was made with.",
)
def chat_command(
    server: str,
    user: str,
    device: str,
    pairing_code: str | None,
    state: str | None,
    ca: str | None,
    invite_code: str | None,
    recovery_secret: str | None,
    suite: str,
) -> None:
    """An interactive end-to-end encrypted terminal chat."""
    import ssl

    import httpx

    from mlspy.errors import UsageError
    from mlspy.tools.chat import connect_problem, run, untrusted_certificate
    from mlspy.users import check_device, check_user

    if not server.startswith(("http://", "https://")):
        raise click.BadParameter("give an http:// or https:// URL", param_hint="--server")
    try:
        check_user(user)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--user") from None
    try:
        if device:
            check_device(device)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None
    if pairing_code and not device:
        raise click.UsageError("--pair enrols a further device: name it with --device")
    try:
        verify: bool | ssl.SSLContext = ssl.create_default_context(cafile=ca) if ca else True
    except ssl.SSLError as exc:
        raise click.BadParameter(f"not a PEM certificate: {exc}", param_hint="--ca") from None
    try:  # fail here, with one line, rather than inside the full-screen chat
        httpx.get(server.rstrip("/") + "/healthz", timeout=5, verify=verify).raise_for_status()
    except httpx.HTTPError as exc:
        problem = connect_problem(exc)
        if not untrusted_certificate(exc):
            problem += "; is `mlspy serve` running?"
        raise click.ClickException(
            f"cannot reach a Delivery Service at {server}: {problem}"
        ) from None
    run(
        server,
        user,
        state,
        invite_code=invite_code,
        recovery_secret=recovery_secret,
        device=device,
        pairing_code=pairing_code,
        ca=ca,
        cipher_suite=parse_suite(suite),
    )


@main.command("interop-server")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. The interop interface hands out private keys by design: "
    "listen on loopback unless the test network is yours alone.",
)
@click.option(
    "--port", default=50051, show_default=True, type=click.IntRange(0, 65535), help="gRPC port."
)
@click.option(
    "--max-leaf-lifetime",
    default="none",
    show_default=True,
    metavar="SECONDS|none|default",
    help=(
        "Maximum total LeafNode lifetime its groups accept (RFC 9420 §7.2). 'none' accepts "
        "what the community's stacks issue (valid from 0 to 2^64-1); 'default' restores the "
        "library's five-year cap."
    ),
)
def interop_server_command(host: str, port: int, max_leaf_lifetime: str) -> None:
    """Serve the MLS community's interop gRPC interface (mls_client.proto), unauthenticated
    and without TLS: any caller can read every group's secrets and keys through it."""
    from mlspy.ds.config import is_loopback
    from mlspy.interop.server import make_server
    from mlspy.tree.validation import MAX_LEAF_LIFETIME

    limit: int | None
    if max_leaf_lifetime == "none":
        limit = None
    elif max_leaf_lifetime == "default":
        limit = MAX_LEAF_LIFETIME
    elif max_leaf_lifetime.isdigit():
        limit = int(max_leaf_lifetime)
    else:
        raise click.BadParameter(
            "a number of seconds, 'none' or 'default'", param_hint="--max-leaf-lifetime"
        )
    _check_port_free(host, port)
    if not is_loopback(host):
        click.echo(
            f"mlspy interop-server: warning: listening on {host}: anyone who reaches this port "
            "can read private keys and group secrets (the interop interface exports them).",
            err=True,
        )
    server, bound = make_server(port, f"[{host}]" if ":" in host else host, max_leaf_lifetime=limit)
    click.echo(f"mlspy interop server listening on {host}:{bound}")
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=1.0)


@main.command(
    "interop-run",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def interop_run_command(ctx: click.Context) -> None:
    """Run interop scenarios against gRPC clients (see mlspy interop-run --help)."""
    from mlspy.interop.runner import main as run_main

    sys.exit(run_main(list(ctx.args)))


# --- mlspy admin ---------------------------------------------------------------------------


@main.group("admin")
def admin() -> None:
    """Operator actions on a Delivery Service's database (beside a running server).

    Each command takes the database as `mlspy serve` does: --database URL, or --config FILE
    (or $MLSPY_CONFIG / $MLSPY_DATABASE). Exit status: 0 done, 1 not found or failed,
    2 usage error.
    """


def _database_options(fn: Any) -> Any:
    fn = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        envvar="MLSPY_CONFIG",
        help="The server's TOML configuration file: its database is used.",
    )(fn)
    return click.option(
        "--database", help="SQLite file or postgresql://… URL (as for `mlspy serve`)."
    )(fn)


def _admin_database_url(config_file: str | None, database: str | None) -> str:
    settings = _load_settings(config_file, {"database": database})
    return str(settings.database)


def _admin_run(config_file: str | None, database: str | None, action: Any) -> Any:
    """``action(db)`` on the configured database; AdminError -> one line and status 1."""
    from mlspy.ds.admin import AdminError, open_existing

    url = _admin_database_url(config_file, database)
    try:
        db = open_existing(url)
        try:
            return action(db)
        finally:
            db.close()
    except AdminError as exc:
        click.echo(f"mlspy admin: {' '.join(str(exc).split())}", err=True)
        sys.exit(1)


def _emit(doc: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(doc, indent=2) if as_json else text)


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


@admin.command("revoke-tokens")
@click.argument("who")
@_database_options
@_json_option
def admin_revoke_tokens(
    who: str, database: str | None, config_file: str | None, as_json: bool
) -> None:
    """End now every bearer token of WHO: a client id, an identity (user/device) or a user
    (all its devices). The device can log in again with its key; to end the device, revoke
    it from another device of the user or delete the user."""
    from mlspy.ds.admin import revoke_tokens

    devices, ended = _admin_run(config_file, database, lambda db: revoke_tokens(db, who))
    doc = {"devices": [d.identity for d in devices], "tokens_ended": ended}
    _emit(doc, as_json, f"ended {ended} token(s) of {', '.join(doc['devices'])}")


@admin.command("delete-user")
@click.argument("user")
@_database_options
@_json_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def admin_delete_user(
    user: str, database: str | None, config_file: str | None, as_json: bool, yes: bool
) -> None:
    """Delete USER: the account, its devices, their tokens, KeyPackages, queued messages and
    places on delivery lists. The user's leaves stay in its groups until a member removes
    them (the DS cannot edit a group's tree); a group left with nobody to deliver to is
    deleted."""
    from mlspy.ds.admin import delete_user

    if not yes and not click.confirm(f"delete the user {user!r} and all its devices?"):
        sys.exit(1)
    doc = _admin_run(config_file, database, lambda db: delete_user(db, user))
    _emit(
        doc,
        as_json,
        f"deleted {user}: {len(doc['devices'])} device(s), "
        f"{doc['queued_messages_dropped']} queued message(s); still in {doc['groups_left']} "
        f"group(s) until removed there; {len(doc['groups_deleted'])} empty group(s) deleted",
    )


@admin.command("queue-depth")
@click.option("--group", "group_hex", help="Only this group (id in hex).")
@click.option("--client", "who", help="Only this client id, identity or user.")
@_database_options
@_json_option
def admin_queue_depth(
    group_hex: str | None,
    who: str | None,
    database: str | None,
    config_file: str | None,
    as_json: bool,
) -> None:
    """Messages waiting to be fetched and acknowledged, per client."""
    from mlspy.ds.admin import queue_depth

    try:
        group = bytes.fromhex(group_hex) if group_hex is not None else None
    except ValueError:
        raise click.BadParameter("a group id in hex", param_hint="--group") from None
    doc = _admin_run(config_file, database, lambda db: queue_depth(db, group=group, who=who))
    lines = [f"{doc['waiting']} message(s) waiting"]
    lines += [f"  {c['waiting']:>8}  {c['identity'] or c['client_id']}" for c in doc["clients"]]
    _emit(doc, as_json, "\n".join(lines))


@admin.command("users")
@_database_options
@_json_option
def admin_users(database: str | None, config_file: str | None, as_json: bool) -> None:
    """List the users and their devices."""
    from mlspy.ds.admin import users

    doc = _admin_run(config_file, database, users)
    lines = []
    for u in doc:
        devices = ", ".join(d["device"] or "(first)" for d in u["devices"]) or "no device"
        lines.append(f"{u['user']}: {devices}")
    _emit(doc, as_json, "\n".join(lines) if lines else "no users")


@admin.command("invite")
@click.option(
    "--count", default=1, show_default=True, type=click.IntRange(1, 100), help="How many codes."
)
@_database_options
@_json_option
def admin_invite(count: int, database: str | None, config_file: str | None, as_json: bool) -> None:
    """Print new single-use invite codes (registration = invite): each admits one new name,
    for 7 days. Only their hashes are stored."""
    from mlspy.ds.admin import create_invites

    codes = _admin_run(config_file, database, lambda db: create_invites(db, count))
    _emit({"codes": codes}, as_json, "\n".join(codes))


@admin.command("backup")
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The backup file (must not exist).",
)
@_database_options
def admin_backup(to: Path, database: str | None, config_file: str | None) -> None:
    """Back the database up while servers run: SQLite with its online backup API (one
    consistent snapshot), PostgreSQL with pg_dump --format=custom."""
    from mlspy.ds.admin import AdminError, backup

    url = _admin_database_url(config_file, database)
    try:
        click.echo(backup(url, to))
    except AdminError as exc:
        click.echo(f"mlspy admin: {exc}", err=True)
        sys.exit(1)


@admin.command("restore")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file made by `mlspy admin backup`.",
)
@click.option("--force", is_flag=True, help="Replace an existing SQLite file (servers stopped).")
@_database_options
def admin_restore(source: Path, force: bool, database: str | None, config_file: str | None) -> None:
    """Restore a backup into the database (stop the servers first): a new SQLite file, or a
    PostgreSQL database (pg_restore --clean)."""
    from mlspy.ds.admin import AdminError, restore

    url = _admin_database_url(config_file, database)
    try:
        click.echo(restore(source, url, force=force))
    except AdminError as exc:
        click.echo(f"mlspy admin: {exc}", err=True)
        sys.exit(1)
