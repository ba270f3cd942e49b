"""One run of one interop script: the actions of the community harness, step by step.

:class:`ScriptRun` holds what a run knows — which client plays each actor, each member's state
id, each step's output and named artifacts, pending commits, PSKs, external signers — and turns
each step into ``MLSClient`` RPCs (``do_<action>``). Members are compared per state: each
member carries the step that produced its current epoch (``_Member.label``), and all members at
the same one must agree on the epoch authenticator (:meth:`ScriptRun.check_agreement`). The
runner (:mod:`mlspy.interop.runner`) drives runs over suites, modes and actor assignments.
"""

from __future__ import annotations

import base64
import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlspy.codec import Reader, decode_all
from mlspy.errors import MLSError

grpc: Any = importlib.import_module("grpc")


class StepError(Exception):
    """A step failed: an RPC error or a disagreement between clients."""


@dataclass
class _Member:
    client: int
    state_id: int
    label: int  # the step whose commit (or creation) made this member's current epoch
    # The epoch authenticator the client reported when it reached that epoch (stacks that
    # do not implement StateAuth are compared on it).
    auth: bytes = b""


@dataclass
class ScriptRun:
    """One execution of one script."""

    stubs: list[Any]
    pb2: Any
    suite: int
    encrypt: bool
    actors: dict[str, int]  # actor -> client index
    suites: list[int]
    members: dict[str, _Member] = field(default_factory=dict)
    outputs: dict[int, Any] = field(default_factory=dict)
    # A step's named products besides its output ("commit", "welcome", "ratchet_tree",
    # "group_info"), which later steps refer to by the step's index.
    artifacts: dict[int, dict[str, bytes]] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)  # actor -> its unmerged commit step
    index: int = 0  # the step being run
    allocated: set[tuple[int, int]] = field(default_factory=set)  # (client, id) to free
    transactions: dict[str, tuple[int, int]] = field(default_factory=dict)  # actor->(client,id)
    signers: dict[str, tuple[int, int, bytes]] = field(default_factory=dict)
    signer_index: dict[str, int] = field(default_factory=dict)
    signer_count: int = 0
    group_id: bytes = b""
    messages: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    psk_secrets: dict[bytes, bytes] = field(default_factory=dict)
    # Passive-client vector of the first member that joins by Welcome (FORMAT.md), recorded
    # while that member only follows the group.
    key_material: dict[str, dict[str, str]] = field(default_factory=dict)
    recording: dict[str, Any] | None = None
    recorded_actor: str = ""

    # --- plumbing -----------------------------------------------------------------------

    def call(self, client: int, rpc: str, request: Any) -> Any:
        try:
            resp = getattr(self.stubs[client], rpc)(request)
        except grpc.RpcError as exc:
            raise StepError(
                f"{rpc} on client {client}: {exc.code().name}: {exc.details()}"
            ) from None
        for name in _HANDLES:  # every state the client created, to free at the end
            value = getattr(resp, name, 0)
            if value:
                self.allocated.add((client, int(value)))
        return resp

    def free_all(self) -> None:
        """``Free`` every state, transaction, reinit and signer the run made (a stack without
        ``Free`` is let be)."""
        for client, handle in sorted(self.allocated):
            try:
                self.stubs[client].Free(self.pb2.FreeRequest(state_id=handle))
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise StepError(
                        f"Free on client {client}: {exc.code().name}: {exc.details()}"
                    ) from None
        self.allocated.clear()

    def client_of(self, actor: str) -> int:
        if actor not in self.actors:
            raise StepError(f"actor {actor!r} has no client")
        return self.actors[actor]

    def member(self, actor: str) -> _Member:
        if actor not in self.members:
            raise StepError(f"{actor!r} is not a member")
        return self.members[actor]

    # Calls after which a member is still a passive follower of the group.
    _READS = frozenset({"StateAuth", "Export", "GroupInfo", "Protect", "Unprotect", "HandleCommit"})

    def rpc(self, actor: str, name: str, **fields: Any) -> Any:
        if name not in self._READS:
            self.stop_recording(actor)
        m = self.member(actor)
        req = getattr(self.pb2, _request_type(name))(state_id=m.state_id, **fields)
        return self.call(m.client, name, req)

    def identity(self, actor: str) -> bytes:
        return actor.encode()

    def extensions(self, items: Sequence[dict[str, Any]] | dict[str, str]) -> list[Any]:
        """Extensions as a list of ``{"extension_type", "extension_data"}`` or, as some
        community configs write them, an object mapping type to base64 data."""
        if isinstance(items, dict):
            items = [{"extension_type": k, "extension_data": v} for k, v in items.items()]
        return [
            self.pb2.Extension(
                extension_type=int(e["extension_type"]),
                extension_data=base64.b64decode(e.get("extension_data", "")),
            )
            for e in items
        ]

    def artifact(self, index: int, key: str) -> bytes:
        value = self.artifacts.get(index, {}).get(key)
        if value is None:
            raise StepError(f"step {index} produced no {key}")
        return value

    def keep(self, **named: bytes) -> None:
        self.artifacts.setdefault(self.index, {}).update(named)

    def output(self, index: int) -> Any:
        if index not in self.outputs:
            raise StepError(f"step {index} produced no output")
        return self.outputs[index]

    def description(self, d: dict[str, Any]) -> Any:
        kind = d["proposalType"]
        desc = self.pb2.ProposalDescription(proposal_type=kind.encode())
        if kind == "add":
            desc.key_package = self.output(d["keyPackage"])
        elif kind == "remove":
            desc.removed_id = self.identity(d["removed"])
        elif kind == "externalPSK":
            desc.psk_id = self.output(d["pskID"])
        elif kind == "resumptionPSK":
            desc.epoch_id = int(d["epochID"])
        elif kind == "groupContextExtensions":
            desc.extensions.extend(self.extensions(d.get("extensions", [])))
        elif kind == "reinit":
            gid, suite, exts = self.reinit_params(d)
            desc.group_id, desc.cipher_suite = gid, suite
            desc.extensions.extend(exts)
        else:
            raise StepError(f"unknown proposalType {kind!r}")
        return desc

    def reinit_params(self, d: dict[str, Any]) -> tuple[bytes, int, list[Any]]:
        gid = os.urandom(16) if d.get("changeGroupID") else self.group_id
        suite = self.suite
        if d.get("changeCipherSuite") or d.get("changeCiphersuite"):
            others = [s for s in self.suites if s != self.suite]
            suite = others[0] if others else self.suite
        return gid, suite, self.extensions(d.get("extensions", []))

    # --- checks -------------------------------------------------------------------------

    def check_agreement(self) -> None:
        """Members in the same epoch (made by the same step) agree on its authenticator:
        ``StateAuth``'s, or where a stack answers it empty, the one it last reported."""
        by_label: dict[int, dict[str, bytes]] = {}
        for actor, m in self.members.items():
            value = bytes(self.rpc(actor, "StateAuth").state_auth_secret) or m.auth
            if value:
                by_label.setdefault(m.label, {})[actor] = value
        for values in by_label.values():
            if len(set(values.values())) > 1:
                summary = ", ".join(f"{a}={v.hex()[:12]}" for a, v in values.items())
                raise StepError(f"members disagree on the epoch authenticator: {summary}")

    # --- membership helpers -------------------------------------------------------------

    def key_package(self, actor: str) -> bytes:
        client = self.client_of(actor)
        resp = self.call(
            client,
            "CreateKeyPackage",
            self.pb2.CreateKeyPackageRequest(
                cipher_suite=self.suite, identity=self.identity(actor)
            ),
        )
        self.transactions[actor] = (client, resp.transaction_id)
        self.key_material[actor] = {
            "key_package": bytes(resp.key_package).hex(),
            "init_priv": _raw_private_key(bytes(resp.init_priv)).hex(),
            "encryption_priv": _raw_private_key(bytes(resp.encryption_priv)).hex(),
            "signature_priv": bytes(resp.signature_priv).hex(),
        }
        return bytes(resp.key_package)

    def join(self, actor: str, welcome: bytes, tree: bytes, label: int) -> None:
        if actor not in self.transactions:
            raise StepError(f"{actor!r} has no KeyPackage to join with")
        client, tid = self.transactions.pop(actor)
        resp = self.call(
            client,
            "JoinGroup",
            self.pb2.JoinGroupRequest(
                transaction_id=tid,
                welcome=welcome,
                encrypt_handshake=self.encrypt,
                identity=self.identity(actor),
                ratchet_tree=tree,
            ),
        )
        self.members[actor] = _Member(client, resp.state_id, label, bytes(resp.epoch_authenticator))
        material = self.key_material.pop(actor, None)
        if self.recording is None and material is not None:
            self.recorded_actor = actor
            self.recording = {
                "cipher_suite": self.suite,
                "external_psks": [
                    {"psk_id": k.hex(), "psk": v.hex()} for k, v in self.psk_secrets.items()
                ],
                **material,
                "welcome": welcome.hex(),
                "ratchet_tree": tree.hex() if tree else None,
                "initial_epoch_authenticator": bytes(resp.epoch_authenticator).hex(),
                "epochs": [],
            }

    def stop_recording(self, actor: str) -> None:
        """The recorded member acted itself: a passive client never does, so stop there."""
        if actor == self.recorded_actor and self.recording is not None:
            self.recorded_actor = ""

    def handle(
        self, actors: Sequence[str], proposals: Sequence[bytes], commit: bytes, label: int
    ) -> None:
        for actor in actors:
            resp = self.rpc(actor, "HandleCommit", proposal=list(proposals), commit=commit)
            self.advance(actor, resp, label)
            self.pending.pop(actor, None)  # a member that lost a race drops its own commit
            if actor == self.recorded_actor and self.recording is not None:
                self.recording["epochs"].append(
                    {
                        "proposals": [p.hex() for p in proposals],
                        "commit": commit.hex(),
                        "epoch_authenticator": bytes(resp.epoch_authenticator).hex(),
                    }
                )

    def advance(self, actor: str, resp: Any, label: int) -> None:
        """``actor`` reached the epoch made by step ``label``; some stacks answer with a new
        state id for it."""
        m = self.members[actor]
        m.state_id, m.auth, m.label = resp.state_id, bytes(resp.epoch_authenticator), label

    def commit(
        self,
        actor: str,
        by_ref: Sequence[bytes],
        by_value: Sequence[Any],
        *,
        force_path: bool,
        external_tree: bool,
        rpc: str = "Commit",
    ) -> Any:
        return self.rpc(
            actor,
            rpc,
            by_reference=list(by_ref),
            by_value=list(by_value),
            force_path=force_path,
            external_tree=external_tree,
        )

    def keep_only(self, actors: Sequence[str]) -> None:
        self.members = {a: m for a, m in self.members.items() if a in actors}

    # --- actions ------------------------------------------------------------------------

    def step(self, index: int, s: dict[str, Any]) -> None:
        action = s["action"]
        handler = getattr(self, f"do_{action}", None)
        if handler is None:
            raise StepError(f"unknown action {action!r}")
        self.index = index
        result = handler(s)
        if result is not None:
            self.outputs[index] = result
        if action == "protect":
            self.messages[index] = (
                s.get("authenticatedData", "").encode(),
                s.get("plaintext", "").encode(),
            )

    def do_createGroup(self, s: dict[str, Any]) -> None:
        actor = s["actor"]
        self.group_id = os.urandom(16)
        client = self.client_of(actor)
        resp = self.call(
            client,
            "CreateGroup",
            self.pb2.CreateGroupRequest(
                group_id=self.group_id,
                cipher_suite=self.suite,
                encrypt_handshake=self.encrypt,
                identity=self.identity(actor),
            ),
        )
        self.members = {actor: _Member(client, resp.state_id, self.index)}
        joiners = list(s.get("members", []))
        if joiners:
            adds = [
                self.pb2.ProposalDescription(proposal_type=b"add", key_package=self.key_package(j))
                for j in joiners
            ]
            out = self.commit(actor, [], adds, force_path=False, external_tree=False)
            self.advance(actor, self.rpc(actor, "HandlePendingCommit"), self.index)
            for j in joiners:
                self.join(j, bytes(out.welcome), b"", self.index)

    def do_createKeyPackage(self, s: dict[str, Any]) -> bytes:
        return self.key_package(s["actor"])

    def do_externalJoin(self, s: dict[str, Any]) -> bytes:
        actor, joiner = s["actor"], s["joiner"]
        external_tree = bool(s.get("externalTree", s.get("external_tree", False)))
        info = self.rpc(actor, "GroupInfo", external_tree=external_tree)
        client = self.client_of(joiner)
        psks = [
            self.pb2.PreSharedKey(
                psk_id=self.output(i), psk_secret=self.psk_secrets[self.output(i)]
            )
            for i in s.get("psks", [])
        ]
        resp = self.call(
            client,
            "ExternalJoin",
            self.pb2.ExternalJoinRequest(
                group_info=info.group_info,
                ratchet_tree=info.ratchet_tree,
                encrypt_handshake=self.encrypt,
                identity=self.identity(joiner),
                remove_prior=bool(s.get("removePrior", False)),
                psks=psks,
            ),
        )
        others = [actor, *s.get("members", [])]
        self.keep(
            group_info=bytes(info.group_info),
            ratchet_tree=bytes(info.ratchet_tree),
            commit=bytes(resp.commit),
        )
        self.handle(others, [], bytes(resp.commit), self.index)
        self.members[joiner] = _Member(
            client, resp.state_id, self.index, bytes(resp.epoch_authenticator)
        )
        self.keep_only([*others, joiner])
        return bytes(resp.commit)

    def do_joinGroup(self, s: dict[str, Any]) -> None:
        welcome = int(s["welcome"])
        tree = self.artifacts.get(welcome, {}).get("ratchet_tree", b"")
        self.join(s["actor"], self.artifact(welcome, "welcome"), tree, welcome)

    def do_groupInfo(self, s: dict[str, Any]) -> bytes:
        external_tree = bool(s.get("externalTree", s.get("external_tree", False)))
        info = self.rpc(s["actor"], "GroupInfo", external_tree=external_tree)
        self.keep(group_info=bytes(info.group_info), ratchet_tree=bytes(info.ratchet_tree))
        return bytes(info.group_info)

    def do_installExternalPSK(self, s: dict[str, Any]) -> bytes:
        psk_id = os.urandom(16)
        secret = os.urandom(32)
        self.psk_secrets[psk_id] = secret
        for actor in s["clients"]:
            if actor in self.members:
                m = self.members[actor]
                target, sid = m.client, m.state_id
            elif actor in self.transactions:
                target, sid = self.transactions[actor]
            else:
                raise StepError(f"{actor!r} has neither a state nor a KeyPackage")
            self.call(
                target,
                "StorePSK",
                self.pb2.StorePSKRequest(
                    state_or_transaction_id=sid, psk_id=psk_id, psk_secret=secret
                ),
            )
        return psk_id

    def do_addProposal(self, s: dict[str, Any]) -> bytes:
        kp = self.output(s["keyPackage"])
        return bytes(self.rpc(s["actor"], "AddProposal", key_package=kp).proposal)

    def do_updateProposal(self, s: dict[str, Any]) -> bytes:
        return bytes(self.rpc(s["actor"], "UpdateProposal").proposal)

    def do_removeProposal(self, s: dict[str, Any]) -> bytes:
        removed = self.identity(s["removed"])
        return bytes(self.rpc(s["actor"], "RemoveProposal", removed_id=removed).proposal)

    def do_externalPSKProposal(self, s: dict[str, Any]) -> bytes:
        psk_id = self.output(int(s["pskID"] if "pskID" in s else s["psk"]))
        return bytes(self.rpc(s["actor"], "ExternalPSKProposal", psk_id=psk_id).proposal)

    do_preSharedKeyProposal = do_externalPSKProposal

    def do_resumptionPSKProposal(self, s: dict[str, Any]) -> bytes:
        epoch = int(s["epochID"])
        return bytes(self.rpc(s["actor"], "ResumptionPSKProposal", epoch_id=epoch).proposal)

    def do_groupContextExtensionsProposal(self, s: dict[str, Any]) -> bytes:
        exts = self.extensions(s.get("extensions", []))
        return bytes(
            self.rpc(s["actor"], "GroupContextExtensionsProposal", extensions=exts).proposal
        )

    def do_newMemberAddProposal(self, s: dict[str, Any]) -> bytes:
        info = self.rpc(s["actor"], "GroupInfo", external_tree=False)
        joiner = s["joiner"]
        client = self.client_of(joiner)
        resp = self.call(
            client,
            "NewMemberAddProposal",
            self.pb2.NewMemberAddProposalRequest(
                group_info=info.group_info, identity=self.identity(joiner)
            ),
        )
        self.transactions[joiner] = (client, resp.transaction_id)
        return bytes(resp.proposal)

    def do_addExternalSigner(self, s: dict[str, Any]) -> bytes:
        signer = s["signer"]
        client = self.client_of(signer)
        resp = self.call(
            client,
            "CreateExternalSigner",
            self.pb2.CreateExternalSignerRequest(
                cipher_suite=self.suite, identity=self.identity(signer)
            ),
        )
        self.signers[signer] = (client, resp.signer_id, bytes(resp.external_sender))
        self.signer_index[signer] = self.signer_count
        self.signer_count += 1
        return bytes(
            self.rpc(s["actor"], "AddExternalSigner", external_sender=resp.external_sender).proposal
        )

    def do_externalSignerProposal(self, s: dict[str, Any]) -> bytes:
        signer = s["actor"]
        if signer not in self.signers:
            raise StepError(f"{signer!r} is not an external signer")
        client, signer_id, _ = self.signers[signer]
        info = self.rpc(s["member"], "GroupInfo", external_tree=True)
        resp = self.call(
            client,
            "ExternalSignerProposal",
            self.pb2.ExternalSignerProposalRequest(
                signer_id=signer_id,
                signer_index=self.signer_index[signer],
                group_info=info.group_info,
                ratchet_tree=info.ratchet_tree,
                description=self.description(s["description"]),
            ),
        )
        return bytes(resp.proposal)

    def do_commit(self, s: dict[str, Any]) -> bytes:
        """Create a commit and leave it pending: nobody's epoch changes yet."""
        actor = s["actor"]
        by_ref = [self.output(i) for i in s.get("byReference", [])]
        by_value = [self.description(d) for d in s.get("byValue", [])]
        external_tree = bool(s.get("external_tree", s.get("externalTree", False)))
        out = self.commit(
            actor,
            by_ref,
            by_value,
            force_path=bool(s.get("force_path", s.get("forcePath", False))),
            external_tree=external_tree,
        )
        self.keep(
            commit=bytes(out.commit),
            welcome=bytes(out.welcome),
            ratchet_tree=bytes(out.ratchet_tree) if external_tree else b"",
        )
        self.pending[actor] = self.index
        return bytes(out.commit)

    def do_handlePendingCommit(self, s: dict[str, Any]) -> None:
        actor = s["actor"]
        if actor not in self.pending:
            raise StepError(f"{actor!r} has no pending commit")
        resp = self.rpc(actor, "HandlePendingCommit")
        self.advance(actor, resp, self.pending.pop(actor))

    def do_handleCommit(self, s: dict[str, Any]) -> None:
        commit = int(s["commit"])
        by_ref = [self.output(i) for i in s.get("byReference", [])]
        self.handle([s["actor"]], by_ref, self.artifact(commit, "commit"), commit)

    def do_fullCommit(self, s: dict[str, Any]) -> bytes:
        """``commit``, then ``handlePendingCommit`` at the committer, ``handleCommit`` at
        ``members`` and ``joinGroup`` for ``joiners``; everyone else leaves the script."""
        actor = s["actor"]
        commit = self.do_commit(s)
        self.do_handlePendingCommit(s)
        by_ref = [self.output(i) for i in s.get("byReference", [])]
        members = list(s.get("members", []))
        self.handle(members, by_ref, commit, self.index)
        joiners = list(s.get("joiners", []))
        for j in joiners:
            self.join(
                j,
                self.artifact(self.index, "welcome"),
                self.artifact(self.index, "ratchet_tree"),
                self.index,
            )
        self.keep_only([actor, *members, *joiners])
        return commit

    def do_protect(self, s: dict[str, Any]) -> bytes:
        resp = self.rpc(
            s["actor"],
            "Protect",
            authenticated_data=s.get("authenticatedData", "").encode(),
            plaintext=s.get("plaintext", "").encode(),
        )
        return bytes(resp.ciphertext)

    def do_unprotect(self, s: dict[str, Any]) -> None:
        index = int(s["ciphertext"])
        resp = self.rpc(s["actor"], "Unprotect", ciphertext=self.output(index))
        aad, pt = self.messages[index]
        if bytes(resp.plaintext) != pt or bytes(resp.authenticated_data) != aad:
            raise StepError(
                f"unprotect returned {bytes(resp.plaintext)!r}/{bytes(resp.authenticated_data)!r}"
                f", expected {pt!r}/{aad!r}"
            )

    def do_export(self, s: dict[str, Any]) -> None:
        label, ctx = s.get("label", "interop"), s.get("context", "").encode()
        length = int(s.get("length", 32))
        by_epoch: dict[int, set[bytes]] = {}
        for actor, m in self.members.items():
            secret = self.rpc(actor, "Export", label=label, context=ctx, key_length=length)
            if secret.exported_secret:  # empty: the stack does not implement Export
                by_epoch.setdefault(m.label, set()).add(bytes(secret.exported_secret))
        for values in by_epoch.values():  # members in the same epoch must agree
            if len(values) != 1 or len(next(iter(values))) != length:
                raise StepError("members disagree on an exported secret")

    def do_reinit(self, s: dict[str, Any]) -> None:
        self.recorded_actor = ""  # the recorded member moves to another group
        committer, welcomer = s["committer"], s["welcomer"]
        members = list(s.get("members", []))
        if "externalReinitProposal" in s:
            proposal = self.output(s["externalReinitProposal"])
        else:
            gid, suite, exts = self.reinit_params(s)
            proposal = bytes(
                self.rpc(
                    s["proposer"],
                    "ReInitProposal",
                    cipher_suite=suite,
                    group_id=gid,
                    extensions=exts,
                ).proposal
            )
        out = self.commit(
            committer,
            [proposal],
            [],
            force_path=bool(s.get("forcePath", False)),
            external_tree=False,
            rpc="ReInitCommit",
        )
        reinit: dict[str, tuple[int, int, bytes]] = {}
        for actor in self.members:
            if actor == committer:
                resp = self.rpc(actor, "HandlePendingReInitCommit")
            else:
                resp = self.rpc(
                    actor, "HandleReInitCommit", proposal=[proposal], commit=bytes(out.commit)
                )
            reinit[actor] = (self.members[actor].client, resp.reinit_id, bytes(resp.key_package))
        self.check_agreement()
        # The new group: the listed members, the committer and the proposer (as the
        # community runner builds it), created by the welcomer.
        invited = dict.fromkeys([*members, committer, s.get("proposer", "")])
        others = [a for a in invited if a and a != welcomer and a in reinit]
        external_tree = bool(s.get("externalTree", False))
        client, rid, _ = reinit[welcomer]
        welcome = self.call(
            client,
            "ReInitWelcome",
            self.pb2.ReInitWelcomeRequest(
                reinit_id=rid,
                key_package=[reinit[a][2] for a in others],
                force_path=bool(s.get("forcePath", False)),
                external_tree=external_tree,
            ),
        )
        new = {
            welcomer: _Member(
                client, welcome.state_id, self.index, bytes(welcome.epoch_authenticator)
            )
        }
        for a in others:
            c, r, _ = reinit[a]
            resp = self.call(
                c,
                "HandleReInitWelcome",
                self.pb2.HandleReInitWelcomeRequest(
                    reinit_id=r, welcome=welcome.welcome, ratchet_tree=welcome.ratchet_tree
                ),
            )
            new[a] = _Member(c, resp.state_id, self.index, bytes(resp.epoch_authenticator))
        self.members = new

    def do_branch(self, s: dict[str, Any]) -> None:
        self.recorded_actor = ""  # the recorded member moves to another group
        actor = s["actor"]
        members = [a for a in s.get("members", []) if a != actor]
        kps = {a: self.key_package(a) for a in members}
        external_tree = bool(s.get("externalTree", False))
        gid = os.urandom(16)
        resp = self.rpc(
            actor,
            "CreateBranch",
            group_id=gid,
            extensions=self.extensions(s.get("extensions", [])),
            key_packages=list(kps.values()),
            force_path=bool(s.get("forcePath", False)),
            external_tree=external_tree,
        )
        new = {
            actor: _Member(
                self.members[actor].client,
                resp.state_id,
                self.index,
                bytes(resp.epoch_authenticator),
            )
        }
        for a in members:
            client, tid = self.transactions.pop(a)
            old = self.member(a)
            joined = self.call(
                client,
                "HandleBranch",
                self.pb2.HandleBranchRequest(
                    state_id=old.state_id,
                    transaction_id=tid,
                    welcome=resp.welcome,
                    ratchet_tree=resp.ratchet_tree,
                ),
            )
            new[a] = _Member(client, joined.state_id, self.index, bytes(joined.epoch_authenticator))
        self.members = new
        self.group_id = gid


# Sizes of raw HPKE private keys (X25519, P-256: 32; P-384: 48; X448: 56; P-521: 66; 64 for
# robustness), and a TLS-encoded one unwrapped: OpenMLS returns init/encryption keys as
# opaque<V> where the other stacks (and the passive-client vector format) use the raw bytes.
_RAW_KEY_SIZES = frozenset({32, 48, 56, 64, 66})


def _raw_private_key(data: bytes) -> bytes:
    if len(data) in _RAW_KEY_SIZES:
        return data
    try:
        inner = decode_all(data, Reader.opaque, "private key")
    except MLSError:
        return data
    return inner if len(inner) in _RAW_KEY_SIZES else data


# Response fields that name something the client keeps until freed.
_HANDLES = ("state_id", "transaction_id", "reinit_id", "signer_id")

_REQUESTS = {
    "StateAuth": "StateAuthRequest",
    "GroupInfo": "GroupInfoRequest",
    "HandlePendingCommit": "HandlePendingCommitRequest",
    "HandlePendingReInitCommit": "HandlePendingCommitRequest",
    "HandleCommit": "HandleCommitRequest",
    "HandleReInitCommit": "HandleCommitRequest",
    "Commit": "CommitRequest",
    "ReInitCommit": "CommitRequest",
}


def _request_type(rpc: str) -> str:
    return _REQUESTS.get(rpc, f"{rpc}Request")
