"""Python stubs for ``mls_client.proto``, generated on first use.

The stubs are produced with ``grpc_tools.protoc`` into a per-user cache directory outside the
source tree (keyed by a hash of the .proto and the grpcio-tools version), so nothing generated
is ever committed. Both modules are typed ``Any``: mypy needs no stubs for them.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

PROTO = Path(__file__).with_name("mls_client.proto")
_lock = threading.Lock()
_modules: tuple[Any, Any] | None = None


def _cache_dir() -> Path:
    grpc_tools: Any = importlib.import_module("grpc_tools")
    version = getattr(grpc_tools, "__version__", "") or _tools_version()
    digest = hashlib.sha256(PROTO.read_bytes() + version.encode()).hexdigest()[:16]
    root = os.environ.get("MLSPY_PROTO_CACHE") or os.path.join(
        tempfile.gettempdir(), f"mlspy-proto-{os.getuid() if hasattr(os, 'getuid') else 0}"
    )
    return Path(root) / digest


def _tools_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grpcio-tools")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _generate(target: Path) -> None:
    protoc: Any = importlib.import_module("grpc_tools.protoc")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="gen-", dir=target.parent))
    try:
        shutil.copy(PROTO, scratch / PROTO.name)
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{scratch}",
                f"--python_out={scratch}",
                f"--grpc_python_out={scratch}",
                str(scratch / PROTO.name),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with status {code}")
        try:
            os.rename(scratch, target)  # atomic publish; another process may have won
        except OSError:
            if not (target / "mls_client_pb2_grpc.py").exists():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def load() -> tuple[Any, Any]:
    """``(mls_client_pb2, mls_client_pb2_grpc)``, generating them if needed."""
    global _modules
    with _lock:
        if _modules is None:
            target = _cache_dir()
            if not (target / "mls_client_pb2_grpc.py").exists():
                _generate(target)
            if str(target) not in sys.path:
                sys.path.insert(0, str(target))
            pb2 = importlib.import_module("mls_client_pb2")
            pb2_grpc = importlib.import_module("mls_client_pb2_grpc")
            _modules = (pb2, pb2_grpc)
        return _modules
