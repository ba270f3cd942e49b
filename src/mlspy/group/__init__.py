"""The MLS group engine (RFC 9420 §10-§12): KeyPackages, proposals, commits, Welcome,
external joins, application messages, and the public (secret-free) view of a group that a
Delivery Service runs: the same rules members run."""

from mlspy.group.external import external_proposal, join_external, new_member_add_proposal
from mlspy.group.group import Group, MemberRef
from mlspy.group.identity import SigningIdentity, default_capabilities
from mlspy.group.key_package import (
    KeyPackageBundle,
    as_key_package,
    create_key_package,
    key_package_ref,
    validate_key_package,
)
from mlspy.group.member_state import Lifecycle
from mlspy.group.policy import Joins, MembershipPolicy, policy_in
from mlspy.group.proposals import QueuedProposal
from mlspy.group.public_group import (
    PublicGroup,
    PublicStagedCommit,
    deserialize_public_group,
    serialize_public_group,
)
from mlspy.group.reinit import branch, check_successor, reinit_successor
from mlspy.group.state import (
    ApplicationMessage,
    CommitOutput,
    GroupConfig,
    LeafChecks,
    Member,
    ProposalReceived,
    StagedCommit,
)

__all__ = [
    "Joins",
    "MembershipPolicy",
    "policy_in",
    "ApplicationMessage",
    "CommitOutput",
    "Group",
    "GroupConfig",
    "KeyPackageBundle",
    "LeafChecks",
    "Lifecycle",
    "Member",
    "MemberRef",
    "ProposalReceived",
    "PublicGroup",
    "PublicStagedCommit",
    "QueuedProposal",
    "SigningIdentity",
    "StagedCommit",
    "as_key_package",
    "branch",
    "check_successor",
    "create_key_package",
    "default_capabilities",
    "deserialize_public_group",
    "external_proposal",
    "join_external",
    "key_package_ref",
    "new_member_add_proposal",
    "reinit_successor",
    "serialize_public_group",
    "validate_key_package",
]
