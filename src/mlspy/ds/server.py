"""Running the Delivery Service: ``mlspy serve`` and an in-process server for tests."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from mlspy.ds.app import create_app
from mlspy.ds.db import open_database
from mlspy.ds.service import DeliveryService


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def default_database() -> str:
    return str(Path.home() / ".local" / "share" / "mlspy" / "ds.sqlite")


def service_for(
    database: str, registration: str = "invite", ca: str | None = None
) -> DeliveryService:
    """The DS of ``mlspy serve``: names are bound as ``registration`` says ("invite" by
    default); ``ca`` is a PEM file of trust anchors for X.509 credentials."""
    x509 = None
    if ca is not None:
        from cryptography import x509 as certs

        from mlspy.credentials import X509Validator

        x509 = X509Validator(certs.load_pem_x509_certificates(Path(ca).read_bytes()))
    return DeliveryService(open_database(database), registration=registration, x509=x509)


def build(database: str, registration: str = "invite", ca: str | None = None) -> Any:
    return create_app(service_for(database, registration, ca))


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    database: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    registration: str = "invite",
    ca: str | None = None,
) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    service = service_for(database or default_database(), registration, ca)
    if registration == "invite" and not service.has_accounts():
        # A new server: the first user needs a code. Printed to the console, never logged.
        code, _ = service.create_invite()
        print(
            f"registration needs an invite code; the first user's (single use, "
            f"{service.invite_ttl / 86400:g} days): {code}"
            "\n(more: `mlspy invite --database ...`; users create codes for friends)",
            flush=True,
        )
    app = create_app(service)
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        log_config=None,
        ws="websockets-sansio",
    )


class InProcessServer:
    """A real uvicorn server on a free loopback port, in a background thread."""

    def __init__(
        self,
        app: Any,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        log_level: str = "warning",
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        scheme = "https" if tls_cert else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.ws_url = f"{'wss' if tls_cert else 'ws'}://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            log_level=log_level,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
            ws="websockets-sansio",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("the Delivery Service did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
