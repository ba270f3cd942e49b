"""The MLS group engine (RFC 9420 §10-§12): KeyPackages, proposals, commits, Welcome,
external joins, application messages, and a public (secret-free) view of a group."""

from mlspy.group.external import external_proposal, join_external, new_member_add_proposal
from mlspy.group.group import Group
from mlspy.group.identity import SigningIdentity, default_capabilities
from mlspy.group.key_package import (
    KeyPackageBundle,
    create_key_package,
    key_package_ref,
    validate_key_package,
)
from mlspy.group.reinit import branch, check_successor, reinit_successor
from mlspy.group.state import (
    ApplicationMessage,
    CommitOutput,
    GroupConfig,
    Member,
    ProposalReceived,
    StagedCommit,
)

__all__ = [
    "ApplicationMessage",
    "CommitOutput",
    "Group",
    "GroupConfig",
    "KeyPackageBundle",
    "Member",
    "ProposalReceived",
    "SigningIdentity",
    "branch",
    "check_successor",
    "reinit_successor",
    "StagedCommit",
    "create_key_package",
    "default_capabilities",
    "external_proposal",
    "join_external",
    "key_package_ref",
    "new_member_add_proposal",
    "validate_key_package",
]
