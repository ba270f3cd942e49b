"""mlspy: Messaging Layer Security (RFC 9420) in Python.

The main types are importable from here (``from mlspy import Group, KeyPackage``); they are
loaded on first use, so ``import mlspy.codec`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "ApplicationMessage": "mlspy.group",
    "CommitOutput": "mlspy.group",
    "Group": "mlspy.group",
    "GroupConfig": "mlspy.group",
    "KeyPackageBundle": "mlspy.group",
    "Lifecycle": "mlspy.group",
    "Member": "mlspy.group",
    "ProposalReceived": "mlspy.group",
    "PublicGroup": "mlspy.group",
    "SigningIdentity": "mlspy.group",
    "StagedCommit": "mlspy.group",
    "create_key_package": "mlspy.group",
    "join_external": "mlspy.group",
    "CipherSuite": "mlspy.crypto",
    "Credential": "mlspy.messages",
    "KeyPackage": "mlspy.messages",
    "MLSMessage": "mlspy.messages",
    "WireFormat": "mlspy.messages",
    "MLSError": "mlspy.errors",
    "ValidationError": "mlspy.errors",
}

if TYPE_CHECKING:
    from mlspy.crypto import CipherSuite
    from mlspy.errors import MLSError, ValidationError
    from mlspy.group import (
        ApplicationMessage,
        CommitOutput,
        Group,
        GroupConfig,
        KeyPackageBundle,
        Lifecycle,
        Member,
        ProposalReceived,
        PublicGroup,
        SigningIdentity,
        StagedCommit,
        create_key_package,
        join_external,
    )
    from mlspy.messages import Credential, KeyPackage, MLSMessage, WireFormat


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlspy' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "__version__",
    "ApplicationMessage",
    "CommitOutput",
    "Group",
    "GroupConfig",
    "KeyPackageBundle",
    "Lifecycle",
    "Member",
    "ProposalReceived",
    "PublicGroup",
    "SigningIdentity",
    "StagedCommit",
    "create_key_package",
    "join_external",
    "CipherSuite",
    "Credential",
    "KeyPackage",
    "MLSMessage",
    "WireFormat",
    "MLSError",
    "ValidationError",
]
