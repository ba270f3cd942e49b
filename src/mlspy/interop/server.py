"""A gRPC ``MLSClient`` server (the MLS community interop interface) backed by mlspy.

Theory of operation. The harness names everything by small integers that this server hands
out from one counter: ``state_id`` (a :class:`Group`), ``transaction_id`` (a KeyPackage
waiting for its Welcome, possibly with PSKs stored for it), ``reinit_id`` (a group closed by
a ReInit plus the KeyPackage for its successor) and ``signer_id`` (an external sender's
key). Because ids never collide, ``StorePSK`` can take a state or a transaction id, and
``Free`` can forget any of them. A group keeps its ``state_id`` across epochs: handling a
commit merges it in place. ``ExternalSignerProposal`` finds the signer's index in the group's
external senders by its key, as other stacks do (runners send 0).

Messages produced by any client are opaque bytes here: proposals named in a Commit or
HandleCommit request are processed (our own come back as echoes the group recognises) before
the commit, as RFC 9420 §12.4 requires. Every library error becomes ``INVALID_ARGUMENT``
carrying its message.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from mlspy.crypto import CipherSuite
from mlspy.errors import MLSError
from mlspy.group import (
    ApplicationMessage,
    Group,
    GroupConfig,
    KeyPackageBundle,
    SigningIdentity,
    StagedCommit,
    check_successor,
    create_key_package,
    external_proposal,
    join_external,
    new_member_add_proposal,
)
from mlspy.interop._proto import load
from mlspy.messages import (
    Add,
    Extension,
    ExternalSender,
    ExternalSenders,
    GroupContextExtensions,
    GroupInfo,
    KeyPackage,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProtocolVersion,
    ReInit,
    Remove,
    ResumptionPSKUsage,
    WireFormat,
    decode_ratchet_tree,
)
from mlspy.messages import RatchetTree as RatchetTreeExtension

# grpcio ships no type information: typed as Any, like the generated stubs.
grpc: Any = importlib.import_module("grpc")

NAME = "mlspy"
SUITES = tuple(int(s) for s in CipherSuite)


class InteropError(Exception):
    """A request the server cannot serve (unknown id, bad description, ...)."""


# --- Decoding helpers ------------------------------------------------------------------------


def _message(data: bytes) -> MLSMessage:
    return MLSMessage.decode(data)


def _key_package(data: bytes) -> KeyPackage:
    kp = _message(data).key_package
    if kp is None:
        raise InteropError("not a KeyPackage message")
    return kp


def _group_info(data: bytes) -> GroupInfo:
    gi = _message(data).group_info
    if gi is None:
        raise InteropError("not a GroupInfo message")
    return gi


def _extensions(items: Iterable[Any]) -> tuple[Extension, ...]:
    return tuple(Extension(int(e.extension_type), bytes(e.extension_data)) for e in items)


# The community's stacks issue leaves valid from 0 to 2^64-1 (RFC 9420 §7.2 leaves the maximum
# to the application), so by default the interop server sets no maximum total lifetime.
INTEROP_MAX_LEAF_LIFETIME: int | None = None


def _leaf_identities_from_info(gi: GroupInfo, ratchet_tree: bytes) -> dict[bytes, int]:
    """Basic-credential identity -> leaf index, from the GroupInfo's tree or the given one."""
    ext = RatchetTreeExtension.find_in(gi.extensions)
    if ext is not None:
        nodes = ext.ratchet_tree
    elif ratchet_tree:
        nodes = decode_ratchet_tree(ratchet_tree)
    else:
        raise InteropError("no ratchet tree to find members in")
    found: dict[bytes, int] = {}
    for i, node in enumerate(nodes):
        if node is not None and node.leaf_node is not None:
            ident = node.leaf_node.credential.identity
            if ident is not None:
                found[ident] = i // 2
    return found


def _leaf_of(group: Group, identity: bytes) -> int:
    for member in group.members():
        if member.credential.identity == identity:
            return int(member.leaf_index)
    raise InteropError(f"no member with identity {identity!r}")


# --- State kept between calls ----------------------------------------------------------------


@dataclass
class _Transaction:
    bundle: KeyPackageBundle
    identity: SigningIdentity
    psks: dict[bytes, bytes] = field(default_factory=dict)


@dataclass
class _ReInit:
    old: Group
    transaction: _Transaction
    encrypt_handshake: bool


class InteropState:
    """The server's tables; all access is under one lock (gRPC uses a thread pool)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._next = 1
        self.groups: dict[int, Group] = {}
        self.transactions: dict[int, _Transaction] = {}
        self.reinits: dict[int, _ReInit] = {}
        self.signers: dict[int, SigningIdentity] = {}

    def new_id(self) -> int:
        value = self._next
        self._next += 1
        return value

    def group(self, state_id: int) -> Group:
        try:
            return self.groups[state_id]
        except KeyError:
            raise InteropError(f"unknown state_id {state_id}") from None

    def transaction(self, transaction_id: int) -> _Transaction:
        try:
            return self.transactions[transaction_id]
        except KeyError:
            raise InteropError(f"unknown transaction_id {transaction_id}") from None

    def reinit(self, reinit_id: int) -> _ReInit:
        try:
            return self.reinits[reinit_id]
        except KeyError:
            raise InteropError(f"unknown reinit_id {reinit_id}") from None

    def signer(self, signer_id: int) -> SigningIdentity:
        try:
            return self.signers[signer_id]
        except KeyError:
            raise InteropError(f"unknown signer_id {signer_id}") from None


# --- Proposal building -----------------------------------------------------------------------


def _describe(
    desc: Any,
    cipher_suite: int,
    group_id: bytes,
    leaf_of: Callable[[bytes], int],
) -> Proposal:
    """A ``ProposalDescription`` as a Proposal for a group of ``cipher_suite``."""
    kind = bytes(desc.proposal_type).decode("ascii", "replace")
    nonce = os.urandom(_hash_len(cipher_suite))
    if kind == "add":
        return Proposal(Add(_key_package(bytes(desc.key_package))))
    if kind == "remove":
        return Proposal(Remove(leaf_of(bytes(desc.removed_id))))
    if kind == "externalPSK":
        return Proposal(PreSharedKey(PreSharedKeyID.external(bytes(desc.psk_id), nonce)))
    if kind == "resumptionPSK":
        pid = PreSharedKeyID.resumption(
            ResumptionPSKUsage.application, group_id, int(desc.epoch_id), nonce
        )
        return Proposal(PreSharedKey(pid))
    if kind == "groupContextExtensions":
        return Proposal(GroupContextExtensions(_extensions(desc.extensions)))
    if kind == "reinit":
        return Proposal(
            ReInit(
                bytes(desc.group_id),
                ProtocolVersion.mls10,
                int(desc.cipher_suite),
                _extensions(desc.extensions),
            )
        )
    raise InteropError(f"unknown proposal_type {kind!r}")


def _hash_len(cipher_suite: int) -> int:
    from mlspy.crypto import suite

    return suite(cipher_suite).nh


# --- Successor groups (reinit and branch) ----------------------------------------------------


def _successor(
    old: Group,
    identity: SigningIdentity,
    group_id: bytes,
    extensions: tuple[Extension, ...],
    key_packages: Sequence[bytes],
    usage: ResumptionPSKUsage,
    config: GroupConfig,
    *,
    force_path: bool,
    external_tree: bool,
) -> tuple[Group, bytes | None, bytes]:
    """The first commit of a reinit or branch successor (§11.2, §11.3): Add every KeyPackage
    and inject the old group's current resumption PSK. Returns the group, Welcome, tree."""
    psk = old.resumption_psk()
    if psk is None:  # pragma: no cover - the current epoch's PSK is always retained
        raise InteropError("no resumption PSK for the old group's epoch")
    new = Group.create(identity, group_id=group_id, extensions=extensions, config=config)
    new.add_resumption_psk(old.group_id, old.epoch, psk)
    psk_id = PreSharedKeyID.resumption(
        usage, old.group_id, old.epoch, os.urandom(new.cipher_suite.nh)
    )
    proposals = [Proposal(Add(_key_package(kp))) for kp in key_packages]
    proposals.append(Proposal(PreSharedKey(psk_id)))
    out = new.commit(
        proposals,
        force_path=force_path,
        resumption_usage=usage,
        ratchet_tree_in_welcome=not external_tree,
    )
    new.merge_pending_commit()
    return new, out.welcome, out.ratchet_tree


# --- The servicer ----------------------------------------------------------------------------


class MLSClientServicer:
    """Every RPC of ``mls_client.MLSClient``; see the module docstring."""

    def __init__(self, *, max_leaf_lifetime: int | None = INTEROP_MAX_LEAF_LIFETIME) -> None:
        self.state = InteropState()
        self.pb2, _ = load()
        self.max_leaf_lifetime = max_leaf_lifetime

    def _config(self, encrypt_handshake: bool) -> GroupConfig:
        wire = (
            WireFormat.mls_private_message if encrypt_handshake else WireFormat.mls_public_message
        )
        return GroupConfig(handshake_wire_format=wire, max_leaf_lifetime=self.max_leaf_lifetime)

    # Identification -------------------------------------------------------------------------

    def Name(self, request: Any, context: Any) -> Any:
        return self.pb2.NameResponse(name=NAME)

    def SupportedCiphersuites(self, request: Any, context: Any) -> Any:
        return self.pb2.SupportedCiphersuitesResponse(ciphersuites=list(SUITES))

    # Becoming a member ----------------------------------------------------------------------

    def CreateGroup(self, request: Any, context: Any) -> Any:
        ident = SigningIdentity.generate(bytes(request.identity), int(request.cipher_suite))
        group = Group.create(
            ident,
            group_id=bytes(request.group_id),
            config=self._config(request.encrypt_handshake),
        )
        state_id = self.state.new_id()
        self.state.groups[state_id] = group
        return self.pb2.CreateGroupResponse(state_id=state_id)

    def _new_transaction(self, identity: bytes, cipher_suite: int) -> tuple[int, _Transaction]:
        ident = SigningIdentity.generate(identity, cipher_suite)
        txn = _Transaction(create_key_package(ident), ident)
        tid = self.state.new_id()
        self.state.transactions[tid] = txn
        return tid, txn

    def CreateKeyPackage(self, request: Any, context: Any) -> Any:
        tid, txn = self._new_transaction(bytes(request.identity), int(request.cipher_suite))
        b = txn.bundle
        return self.pb2.CreateKeyPackageResponse(
            transaction_id=tid,
            key_package=MLSMessage.wrap(b.key_package).encode(),
            init_priv=b.init_private_key,
            encryption_priv=b.encryption_private_key,
            signature_priv=b.signature_private_key,
        )

    def JoinGroup(self, request: Any, context: Any) -> Any:
        txn = self.state.transaction(int(request.transaction_id))
        group = Group.join(
            bytes(request.welcome),
            txn.bundle,
            identity=txn.identity,
            ratchet_tree=bytes(request.ratchet_tree) or None,
            external_psks=txn.psks,
            config=self._config(request.encrypt_handshake),
        )
        state_id = self.state.new_id()
        self.state.groups[state_id] = group
        return self.pb2.JoinGroupResponse(
            state_id=state_id, epoch_authenticator=group.epoch_authenticator
        )

    def ExternalJoin(self, request: Any, context: Any) -> Any:
        gi = _group_info(bytes(request.group_info))
        ident = SigningIdentity.generate(bytes(request.identity), gi.group_context.cipher_suite)
        remove_prior: int | None = None
        if request.remove_prior:
            leaves = _leaf_identities_from_info(gi, bytes(request.ratchet_tree))
            if bytes(request.identity) not in leaves:
                raise InteropError("remove_prior: no prior member with this identity")
            remove_prior = leaves[bytes(request.identity)]
        psks = {bytes(p.psk_id): bytes(p.psk_secret) for p in request.psks}
        group, commit = join_external(
            bytes(request.group_info),
            ident,
            ratchet_tree=bytes(request.ratchet_tree) or None,
            remove_prior=remove_prior,
            external_psks=psks,
            psk_ids=list(psks),
            config=self._config(request.encrypt_handshake),
        )
        # The test runner delivers the commit itself and expects the joiner in the new epoch.
        group.merge_pending_commit()
        state_id = self.state.new_id()
        self.state.groups[state_id] = group
        return self.pb2.ExternalJoinResponse(
            state_id=state_id, commit=commit, epoch_authenticator=group.epoch_authenticator
        )

    # Using a group state --------------------------------------------------------------------

    def GroupInfo(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        external = bool(request.external_tree)
        return self.pb2.GroupInfoResponse(
            group_info=group.group_info(with_ratchet_tree=not external, external_pub=True),
            ratchet_tree=group.export_ratchet_tree() if external else b"",
        )

    def StateAuth(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        return self.pb2.StateAuthResponse(state_auth_secret=group.epoch_authenticator)

    def Export(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        secret = group.export_secret(
            str(request.label), bytes(request.context), int(request.key_length)
        )
        return self.pb2.ExportResponse(exported_secret=secret)

    def Protect(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        ct = group.encrypt_application(bytes(request.plaintext), bytes(request.authenticated_data))
        return self.pb2.ProtectResponse(ciphertext=ct)

    def Unprotect(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        event = group.process(bytes(request.ciphertext))
        if not isinstance(event, ApplicationMessage):
            raise InteropError("the message is not an application message")
        return self.pb2.UnprotectResponse(
            authenticated_data=event.authenticated_data, plaintext=event.data
        )

    def StorePSK(self, request: Any, context: Any) -> Any:
        sid = int(request.state_or_transaction_id)
        psk_id, secret = bytes(request.psk_id), bytes(request.psk_secret)
        if sid in self.state.groups:
            self.state.groups[sid].add_external_psk(psk_id, secret)
        elif sid in self.state.transactions:
            self.state.transactions[sid].psks[psk_id] = secret
        elif sid in self.state.reinits:
            self.state.reinits[sid].transaction.psks[psk_id] = secret
        else:
            raise InteropError(f"unknown state or transaction id {sid}")
        return self.pb2.StorePSKResponse()

    # Proposals from members -----------------------------------------------------------------

    def _proposal(self, data: bytes) -> Any:
        return self.pb2.ProposalResponse(proposal=data)

    def AddProposal(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        return self._proposal(group.propose_add(bytes(request.key_package)))

    def UpdateProposal(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        return self._proposal(group.propose_update())

    def RemoveProposal(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        return self._proposal(group.propose_remove(_leaf_of(group, bytes(request.removed_id))))

    def ExternalPSKProposal(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        return self._proposal(group.propose_external_psk(bytes(request.psk_id)))

    def ResumptionPSKProposal(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        return self._proposal(group.propose_resumption_psk(int(request.epoch_id)))

    def GroupContextExtensionsProposal(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        exts = _extensions(request.extensions)
        return self._proposal(group.propose_group_context_extensions(exts))

    # Commits --------------------------------------------------------------------------------

    def _commit(self, request: Any) -> Any:
        group = self.state.group(int(request.state_id))
        for message in request.by_reference:
            group.process(bytes(message))

        def leaf_of(identity: bytes) -> int:
            return _leaf_of(group, identity)

        by_value = [
            _describe(d, group.context.cipher_suite, group.group_id, leaf_of)
            for d in request.by_value
        ]
        external = bool(request.external_tree)
        out = group.commit(
            by_value,
            force_path=bool(request.force_path),
            ratchet_tree_in_welcome=not external,
        )
        return self.pb2.CommitResponse(
            commit=out.commit,
            welcome=out.welcome or b"",
            ratchet_tree=out.ratchet_tree if external else b"",
        )

    def Commit(self, request: Any, context: Any) -> Any:
        return self._commit(request)

    def _handle_commit(self, request: Any) -> Group:
        group = self.state.group(int(request.state_id))
        for message in request.proposal:
            group.process(bytes(message))
        event = group.process(bytes(request.commit))
        if not isinstance(event, StagedCommit):
            raise InteropError("the message is not a commit")
        group.merge_staged_commit(event)
        return group

    def HandleCommit(self, request: Any, context: Any) -> Any:
        group = self._handle_commit(request)
        return self.pb2.HandleCommitResponse(
            state_id=int(request.state_id), epoch_authenticator=group.epoch_authenticator
        )

    def HandlePendingCommit(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        group.merge_pending_commit()
        return self.pb2.HandleCommitResponse(
            state_id=int(request.state_id), epoch_authenticator=group.epoch_authenticator
        )

    # Reinitialization -----------------------------------------------------------------------

    def ReInitProposal(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        return self._proposal(
            group.propose_reinit(
                group_id=bytes(request.group_id),
                cipher_suite=int(request.cipher_suite),
                extensions=_extensions(request.extensions),
            )
        )

    def ReInitCommit(self, request: Any, context: Any) -> Any:
        return self._commit(request)

    def _reinit_response(self, state_id: int) -> Any:
        group = self.state.group(state_id)
        reinit = group.reinit
        if reinit is None:
            raise InteropError("the commit did not reinitialize the group")
        ident_bytes = group.identity.credential.identity or b""
        if reinit.cipher_suite == group.identity.cipher_suite:
            ident = group.identity
        else:
            ident = SigningIdentity.generate(ident_bytes, reinit.cipher_suite)
        txn = _Transaction(create_key_package(ident), ident)
        encrypt = group.config.handshake_wire_format == WireFormat.mls_private_message
        rid = self.state.new_id()
        self.state.reinits[rid] = _ReInit(group, txn, encrypt)
        return self.pb2.HandleReInitCommitResponse(
            reinit_id=rid,
            key_package=MLSMessage.wrap(txn.bundle.key_package).encode(),
            epoch_authenticator=group.epoch_authenticator,
        )

    def HandlePendingReInitCommit(self, request: Any, context: Any) -> Any:
        self.state.group(int(request.state_id)).merge_pending_commit()
        return self._reinit_response(int(request.state_id))

    def HandleReInitCommit(self, request: Any, context: Any) -> Any:
        self._handle_commit(request)
        return self._reinit_response(int(request.state_id))

    def _store_new_group(self, group: Group) -> int:
        state_id = self.state.new_id()
        self.state.groups[state_id] = group
        return state_id

    def ReInitWelcome(self, request: Any, context: Any) -> Any:
        record = self.state.reinit(int(request.reinit_id))
        reinit = record.old.reinit
        if reinit is None:  # pragma: no cover - checked when the record was made
            raise InteropError("the group was not reinitialized")
        external = bool(request.external_tree)
        new, welcome, tree = _successor(
            record.old,
            record.transaction.identity,
            reinit.group_id,
            reinit.extensions,
            [bytes(kp) for kp in request.key_package],
            ResumptionPSKUsage.reinit,
            self._config(record.encrypt_handshake),
            force_path=bool(request.force_path),
            external_tree=external,
        )
        return self.pb2.CreateSubgroupResponse(
            state_id=self._store_new_group(new),
            welcome=welcome or b"",
            ratchet_tree=tree if external else b"",
            epoch_authenticator=new.epoch_authenticator,
        )

    def HandleReInitWelcome(self, request: Any, context: Any) -> Any:
        record = self.state.reinit(int(request.reinit_id))
        new = Group.join(
            bytes(request.welcome),
            record.transaction.bundle,
            identity=record.transaction.identity,
            ratchet_tree=bytes(request.ratchet_tree) or None,
            external_psks=record.transaction.psks,
            resumption_psks=record.old.resumption_psks(),
            config=self._config(record.encrypt_handshake),
        )
        check_successor(new, record.old)
        return self.pb2.JoinGroupResponse(
            state_id=self._store_new_group(new), epoch_authenticator=new.epoch_authenticator
        )

    # Branching ------------------------------------------------------------------------------

    def CreateBranch(self, request: Any, context: Any) -> Any:
        old = self.state.group(int(request.state_id))
        if not old.active:
            raise InteropError("cannot branch from a group we no longer belong to")
        external = bool(request.external_tree)
        new, welcome, tree = _successor(
            old,
            old.identity,
            bytes(request.group_id) or os.urandom(old.cipher_suite.nh),
            _extensions(request.extensions),
            [bytes(kp) for kp in request.key_packages],
            ResumptionPSKUsage.branch,
            old.config,
            force_path=bool(request.force_path),
            external_tree=external,
        )
        return self.pb2.CreateSubgroupResponse(
            state_id=self._store_new_group(new),
            welcome=welcome or b"",
            ratchet_tree=tree if external else b"",
            epoch_authenticator=new.epoch_authenticator,
        )

    def HandleBranch(self, request: Any, context: Any) -> Any:
        old = self.state.group(int(request.state_id))
        txn = self.state.transaction(int(request.transaction_id))
        new = Group.join(
            bytes(request.welcome),
            txn.bundle,
            identity=txn.identity,
            ratchet_tree=bytes(request.ratchet_tree) or None,
            external_psks=txn.psks,
            resumption_psks=old.resumption_psks(),
            config=old.config,
        )
        check_successor(new, old)
        return self.pb2.HandleBranchResponse(
            state_id=self._store_new_group(new), epoch_authenticator=new.epoch_authenticator
        )

    # External proposals ---------------------------------------------------------------------

    def NewMemberAddProposal(self, request: Any, context: Any) -> Any:
        gi = _group_info(bytes(request.group_info))
        ctx = gi.group_context
        tid, txn = self._new_transaction(bytes(request.identity), ctx.cipher_suite)
        b = txn.bundle
        proposal = new_member_add_proposal(
            ctx.group_id, ctx.epoch, b.key_package, b.signature_private_key
        )
        return self.pb2.NewMemberAddProposalResponse(
            transaction_id=tid,
            proposal=proposal,
            init_priv=b.init_private_key,
            encryption_priv=b.encryption_private_key,
            signature_priv=b.signature_private_key,
        )

    def CreateExternalSigner(self, request: Any, context: Any) -> Any:
        ident = SigningIdentity.generate(bytes(request.identity), int(request.cipher_suite))
        signer_id = self.state.new_id()
        self.state.signers[signer_id] = ident
        sender = ExternalSender(ident.signature_key, ident.credential)
        return self.pb2.CreateExternalSignerResponse(
            signer_id=signer_id, external_sender=sender.encode()
        )

    def AddExternalSigner(self, request: Any, context: Any) -> Any:
        group = self.state.group(int(request.state_id))
        sender = ExternalSender.decode(bytes(request.external_sender))
        current = ExternalSenders.find_in(group.extensions)
        senders = (current.external_senders if current else ()) + (sender,)
        new_ext = ExternalSenders(senders).to_extension()
        exts = tuple(e for e in group.extensions if e.extension_type != new_ext.extension_type)
        return self._proposal(group.propose_group_context_extensions((*exts, new_ext)))

    def ExternalSignerProposal(self, request: Any, context: Any) -> Any:
        signer = self.state.signer(int(request.signer_id))
        gi = _group_info(bytes(request.group_info))
        ctx = gi.group_context

        def leaf_of(identity: bytes) -> int:
            leaves = _leaf_identities_from_info(gi, bytes(request.ratchet_tree))
            if identity not in leaves:
                raise InteropError(f"no member with identity {identity!r}")
            return leaves[identity]

        proposal = _describe(request.description, ctx.cipher_suite, ctx.group_id, leaf_of)
        # The sender index is where the signer's key sits in the group's external_senders
        # (§12.1.8.1), looked up as other stacks do: runners need not know it (the community
        # runner always sends 0), so ``signer_index`` is only a fallback for duplicate keys.
        senders = ExternalSenders.find_in(ctx.extensions)
        indices = [
            i
            for i, s in enumerate(senders.external_senders if senders else ())
            if s.signature_key == signer.signature_key
        ]
        if not indices:
            raise InteropError("the signer is not among the group's external senders")
        index = int(request.signer_index) if int(request.signer_index) in indices else indices[0]
        message = external_proposal(
            bytes(request.group_info), proposal, signer.signature_private_key, index
        )
        return self._proposal(message)

    # Cleanup --------------------------------------------------------------------------------

    def Free(self, request: Any, context: Any) -> Any:
        """Forget a state (group, transaction, reinit or signer) the runner is done with.
        Idempotent: freeing an unknown or already freed id is not an error."""
        sid = int(request.state_id)
        self.state.groups.pop(sid, None)
        self.state.transactions.pop(sid, None)
        self.state.reinits.pop(sid, None)
        self.state.signers.pop(sid, None)
        return self.pb2.FreeResponse()


# --- Serving ---------------------------------------------------------------------------------


def _guarded(method: Callable[[Any, Any], Any], lock: threading.Lock) -> Callable[[Any, Any], Any]:
    def call(request: Any, context: Any) -> Any:
        try:
            with lock:
                return method(request, context)
        except (MLSError, InteropError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{type(exc).__name__}: {exc}")

    return call


def _unbound(call: Callable[[Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    def method(self: Any, request: Any, context: Any) -> Any:
        return call(request, context)

    return method


def rpc_names() -> list[str]:
    """Every RPC of the service, read from the generated descriptor."""
    pb2, _ = load()
    return [m.name for m in pb2.DESCRIPTOR.services_by_name["MLSClient"].methods]


def add_to_server(
    server: Any, *, max_leaf_lifetime: int | None = INTEROP_MAX_LEAF_LIFETIME
) -> MLSClientServicer:
    """Register a fresh mlspy servicer on ``server`` and return it."""
    _, pb2_grpc = load()
    impl = MLSClientServicer(max_leaf_lifetime=max_leaf_lifetime)
    base = pb2_grpc.MLSClientServicer
    namespace = {
        name: _unbound(_guarded(getattr(impl, name), impl.state.lock)) for name in rpc_names()
    }
    servicer = type("MlspyServicer", (base,), namespace)()
    pb2_grpc.add_MLSClientServicer_to_server(servicer, server)
    return impl


def make_server(
    port: int,
    host: str = "[::]",
    workers: int = 8,
    *,
    max_leaf_lifetime: int | None = INTEROP_MAX_LEAF_LIFETIME,
) -> tuple[Any, int]:
    """A started server on ``host:port`` (port 0 picks one); returns it and the bound port.
    ``max_leaf_lifetime`` is the maximum total LeafNode lifetime its groups accept (§7.2)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    add_to_server(server, max_leaf_lifetime=max_leaf_lifetime)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    server.start()
    return server, bound


def serve(port: int, *, max_leaf_lifetime: int | None = INTEROP_MAX_LEAF_LIFETIME) -> None:
    """Serve the interop interface on ``port`` until interrupted."""
    server, bound = make_server(port, max_leaf_lifetime=max_leaf_lifetime)
    print(f"mlspy interop server listening on port {bound}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=1.0)
