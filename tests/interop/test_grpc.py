"""The community interop surface over real gRPC: two in-process mlspy ``MLSClient`` servers on
loopback ports, every RPC called through a channel, and the scenario runner over mlspy's own
configs for all seven cipher suites and both handshake modes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")

from mlspy.crypto.pq_suites import PQ_SUITES  # noqa: E402
from mlspy.group.public_group import PublicGroup  # noqa: E402
from mlspy.interop import runner  # noqa: E402
from mlspy.interop._proto import load  # noqa: E402
from mlspy.interop.script import ScriptRun  # noqa: E402
from mlspy.interop.server import add_to_server, make_server, rpc_names  # noqa: E402
from mlspy.messages import ExternalSender, ExternalSenders, MLSMessage  # noqa: E402

pb2, pb2_grpc = load()
SUITE = 1


@dataclass
class Clients:
    a: Any
    b: Any
    targets: list[str]


@pytest.fixture(scope="module")
def clients() -> Iterator[Clients]:
    servers = [make_server(0, "127.0.0.1") for _ in range(2)]
    targets = [f"127.0.0.1:{port}" for _, port in servers]
    channels = [grpc.insecure_channel(t) for t in targets]
    try:
        stubs = [pb2_grpc.MLSClientStub(c) for c in channels]
        yield Clients(stubs[0], stubs[1], targets)
    finally:
        for c in channels:
            c.close()
        for server, _ in servers:
            server.stop(grace=None)


def _group(stub: Any, identity: bytes, encrypt: bool = False) -> int:
    req = pb2.CreateGroupRequest(
        group_id=os.urandom(8), cipher_suite=SUITE, encrypt_handshake=encrypt, identity=identity
    )
    return int(stub.CreateGroup(req).state_id)


def _kp(stub: Any, identity: bytes, suite: int = SUITE) -> Any:
    return stub.CreateKeyPackage(pb2.CreateKeyPackageRequest(cipher_suite=suite, identity=identity))


def _auth(stub: Any, state_id: int) -> bytes:
    return bytes(stub.StateAuth(pb2.StateAuthRequest(state_id=state_id)).state_auth_secret)


def _pair(c: Clients, encrypt: bool = False) -> tuple[int, int]:
    """alice on A, bob on B, in one group (bob joined by Welcome)."""
    alice = _group(c.a, b"alice", encrypt)
    kp = _kp(c.b, b"bob")
    add = c.a.AddProposal(pb2.AddProposalRequest(state_id=alice, key_package=kp.key_package))
    out = c.a.Commit(pb2.CommitRequest(state_id=alice, by_reference=[add.proposal]))
    c.a.HandlePendingCommit(pb2.HandlePendingCommitRequest(state_id=alice))
    bob = c.b.JoinGroup(
        pb2.JoinGroupRequest(
            transaction_id=kp.transaction_id,
            welcome=out.welcome,
            encrypt_handshake=encrypt,
            identity=b"bob",
        )
    ).state_id
    assert _auth(c.a, alice) == _auth(c.b, bob)
    return alice, int(bob)


def _commit_both(c: Clients, alice: int, bob: int, proposals: list[bytes], **kw: Any) -> Any:
    out = c.a.Commit(pb2.CommitRequest(state_id=alice, by_reference=proposals, **kw))
    c.a.HandlePendingCommit(pb2.HandlePendingCommitRequest(state_id=alice))
    resp = c.b.HandleCommit(
        pb2.HandleCommitRequest(state_id=bob, proposal=proposals, commit=out.commit)
    )
    assert bytes(resp.epoch_authenticator) == _auth(c.a, alice)
    return out


# --- The service definition --------------------------------------------------------------------


def test_proto_matches_community_service() -> None:
    names = set(rpc_names())
    assert len(names) == 34
    assert {
        "Name",
        "CreateBranch",
        "ExternalSignerProposal",
        "HandleReInitWelcome",
        "Free",
    } <= names
    assert pb2.DESCRIPTOR.package == "mls_client"
    fields = {f.name: f.number for f in pb2.CommitRequest.DESCRIPTOR.fields}
    assert fields == {
        "state_id": 1,
        "by_reference": 2,
        "by_value": 3,
        "force_path": 4,
        "external_tree": 5,
    }


def test_no_rpc_is_unimplemented(clients: Clients) -> None:
    # An empty request reaches every handler: it may be invalid, never UNIMPLEMENTED.
    for name in rpc_names():
        method = pb2.DESCRIPTOR.services_by_name["MLSClient"].methods_by_name[name]
        request = getattr(pb2, method.input_type.name)()
        try:
            getattr(clients.a, name)(request)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, exc.details())


# --- One test per RPC group --------------------------------------------------------------------


def test_identification(clients: Clients) -> None:
    assert clients.a.Name(pb2.NameRequest()).name == "mlspy"
    suites = clients.b.SupportedCiphersuites(pb2.SupportedCiphersuitesRequest()).ciphersuites
    # The RFC's seven, then the post-quantum ones (ts-mls's, the draft's: ``pq_suites.py``).
    assert list(suites) == [1, 2, 3, 4, 5, 6, 7, *PQ_SUITES]


def test_membership_and_state(clients: Clients) -> None:
    c = clients
    alice, bob = _pair(c)
    kp = _kp(c.a, b"zed")
    assert MLSMessage.decode(bytes(kp.key_package)).key_package is not None
    assert kp.init_priv and kp.encryption_priv and kp.signature_priv
    # GroupInfo with the tree outside, then an external join by carol on B.
    info = c.a.GroupInfo(pb2.GroupInfoRequest(state_id=alice, external_tree=True))
    assert info.ratchet_tree
    join = c.b.ExternalJoin(
        pb2.ExternalJoinRequest(
            group_info=info.group_info, ratchet_tree=info.ratchet_tree, identity=b"carol"
        )
    )
    for stub, sid in ((c.a, alice), (c.b, bob)):
        stub.HandleCommit(pb2.HandleCommitRequest(state_id=sid, commit=join.commit))
    assert _auth(c.a, alice) == _auth(c.b, bob) == bytes(join.epoch_authenticator)
    exports = {
        bytes(
            stub.Export(
                pb2.ExportRequest(state_id=sid, label="x", context=b"c", key_length=20)
            ).exported_secret
        )
        for stub, sid in ((c.a, alice), (c.b, bob), (c.b, join.state_id))
    }
    assert len(exports) == 1 and len(next(iter(exports))) == 20


def test_protect_unprotect(clients: Clients) -> None:
    c = clients
    alice, bob = _pair(c, encrypt=True)
    ct = c.a.Protect(
        pb2.ProtectRequest(state_id=alice, authenticated_data=b"aad", plaintext=b"hi")
    ).ciphertext
    pt = c.b.Unprotect(pb2.UnprotectRequest(state_id=bob, ciphertext=ct))
    assert (bytes(pt.plaintext), bytes(pt.authenticated_data)) == (b"hi", b"aad")
    with pytest.raises(grpc.RpcError) as err:  # a replay is refused with the library's reason
        c.b.Unprotect(pb2.UnprotectRequest(state_id=bob, ciphertext=ct))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details()


@pytest.mark.parametrize("encrypt", [False, True], ids=["plaintext", "encrypted"])
def test_member_proposals_and_commits(clients: Clients, encrypt: bool) -> None:
    c = clients
    alice, bob = _pair(c, encrypt)
    psk_id = b"shared-psk"
    for stub, sid in ((c.a, alice), (c.b, bob)):
        stub.StorePSK(
            pb2.StorePSKRequest(state_or_transaction_id=sid, psk_id=psk_id, psk_secret=b"s" * 32)
        )
    _commit_both(c, alice, bob, [], force_path=True)  # epoch 2
    carol = _kp(c.b, b"carol")
    proposals = [
        c.b.UpdateProposal(pb2.UpdateProposalRequest(state_id=bob)).proposal,
        c.b.ExternalPSKProposal(
            pb2.ExternalPSKProposalRequest(state_id=bob, psk_id=psk_id)
        ).proposal,
        c.a.ResumptionPSKProposal(
            pb2.ResumptionPSKProposalRequest(state_id=alice, epoch_id=1)
        ).proposal,
        c.a.GroupContextExtensionsProposal(
            pb2.GroupContextExtensionsProposalRequest(
                state_id=alice,
                extensions=[pb2.Extension(extension_type=3, extension_data=b"\x00\x00\x00")],
            )
        ).proposal,
    ]
    out = _commit_both(c, alice, bob, proposals)
    by_value = [pb2.ProposalDescription(proposal_type=b"add", key_package=carol.key_package)]
    out = c.a.Commit(pb2.CommitRequest(state_id=alice, by_value=by_value, external_tree=True))
    assert out.ratchet_tree and out.welcome
    c.a.HandlePendingCommit(pb2.HandlePendingCommitRequest(state_id=alice))
    c.b.HandleCommit(pb2.HandleCommitRequest(state_id=bob, commit=out.commit))
    carol_state = c.b.JoinGroup(
        pb2.JoinGroupRequest(
            transaction_id=carol.transaction_id,
            welcome=out.welcome,
            ratchet_tree=out.ratchet_tree,
            encrypt_handshake=encrypt,
            identity=b"carol",
        )
    ).state_id
    assert _auth(c.b, carol_state) == _auth(c.a, alice)
    remove = c.a.RemoveProposal(pb2.RemoveProposalRequest(state_id=alice, removed_id=b"carol"))
    _commit_both(c, alice, bob, [remove.proposal])


def test_reinit(clients: Clients) -> None:
    c = clients
    alice, bob = _pair(c)
    proposal = c.b.ReInitProposal(
        pb2.ReInitProposalRequest(state_id=bob, cipher_suite=3, group_id=b"next-group")
    ).proposal
    out = c.a.ReInitCommit(pb2.CommitRequest(state_id=alice, by_reference=[proposal]))
    ra = c.a.HandlePendingReInitCommit(pb2.HandlePendingCommitRequest(state_id=alice))
    rb = c.b.HandleReInitCommit(
        pb2.HandleCommitRequest(state_id=bob, proposal=[proposal], commit=out.commit)
    )
    assert ra.epoch_authenticator == rb.epoch_authenticator
    kp = MLSMessage.decode(bytes(rb.key_package)).key_package
    assert kp is not None and kp.cipher_suite == 3
    new = c.a.ReInitWelcome(
        pb2.ReInitWelcomeRequest(reinit_id=ra.reinit_id, key_package=[rb.key_package])
    )
    joined = c.b.HandleReInitWelcome(
        pb2.HandleReInitWelcomeRequest(reinit_id=rb.reinit_id, welcome=new.welcome)
    )
    assert joined.epoch_authenticator == new.epoch_authenticator
    with pytest.raises(grpc.RpcError):  # the old group is closed
        c.a.Protect(pb2.ProtectRequest(state_id=alice, plaintext=b"x"))


def test_branch(clients: Clients) -> None:
    c = clients
    alice, bob = _pair(c)
    kp = _kp(c.b, b"bob")
    new = c.a.CreateBranch(
        pb2.CreateBranchRequest(
            state_id=alice,
            group_id=b"branch",
            key_packages=[kp.key_package],
            external_tree=True,
            force_path=True,
        )
    )
    assert new.ratchet_tree
    joined = c.b.HandleBranch(
        pb2.HandleBranchRequest(
            state_id=bob,
            transaction_id=kp.transaction_id,
            welcome=new.welcome,
            ratchet_tree=new.ratchet_tree,
        )
    )
    assert joined.epoch_authenticator == new.epoch_authenticator


def test_external_proposals(clients: Clients) -> None:
    c = clients
    alice, bob = _pair(c)
    signer = c.b.CreateExternalSigner(
        pb2.CreateExternalSignerRequest(cipher_suite=SUITE, identity=b"ds")
    )
    ExternalSender.decode(bytes(signer.external_sender))
    gce = c.a.AddExternalSigner(
        pb2.AddExternalSignerRequest(state_id=alice, external_sender=signer.external_sender)
    ).proposal
    _commit_both(c, alice, bob, [gce])
    info = c.a.GroupInfo(pb2.GroupInfoRequest(state_id=alice))
    gi = MLSMessage.decode(bytes(info.group_info)).group_info
    assert gi is not None and ExternalSenders.find_in(gi.group_context.extensions) is not None
    # A would-be member's own Add, and the external signer's Remove of bob, in one commit.
    joiner = c.b.NewMemberAddProposal(
        pb2.NewMemberAddProposalRequest(group_info=info.group_info, identity=b"dave")
    )
    remove = c.b.ExternalSignerProposal(
        pb2.ExternalSignerProposalRequest(
            signer_id=signer.signer_id,
            signer_index=0,
            group_info=info.group_info,
            description=pb2.ProposalDescription(proposal_type=b"remove", removed_id=b"bob"),
        )
    ).proposal
    out = c.a.Commit(pb2.CommitRequest(state_id=alice, by_reference=[joiner.proposal, remove]))
    c.a.HandlePendingCommit(pb2.HandlePendingCommitRequest(state_id=alice))
    dave = c.b.JoinGroup(
        pb2.JoinGroupRequest(
            transaction_id=joiner.transaction_id, welcome=out.welcome, identity=b"dave"
        )
    )
    assert bytes(dave.epoch_authenticator) == _auth(c.a, alice)


def test_external_signer_index_is_looked_up_from_the_key(clients: Clients) -> None:
    """The community runner always sends signer_index 0; the second of two external senders
    must still produce a proposal the group accepts (the index comes from its key)."""
    c = clients
    alice, bob = _pair(c)
    signers = [
        c.b.CreateExternalSigner(pb2.CreateExternalSignerRequest(cipher_suite=SUITE, identity=n))
        for n in (b"ds1", b"ds2")
    ]
    for signer in signers:
        gce = c.a.AddExternalSigner(
            pb2.AddExternalSignerRequest(state_id=alice, external_sender=signer.external_sender)
        ).proposal
        _commit_both(c, alice, bob, [gce])
    info = c.a.GroupInfo(pb2.GroupInfoRequest(state_id=alice))
    remove = c.b.ExternalSignerProposal(
        pb2.ExternalSignerProposalRequest(
            signer_id=signers[1].signer_id,
            signer_index=0,  # wrong on purpose: ds2 is external sender 1
            group_info=info.group_info,
            description=pb2.ProposalDescription(proposal_type=b"remove", removed_id=b"bob"),
        )
    ).proposal
    c.a.Commit(pb2.CommitRequest(state_id=alice, by_reference=[remove]))
    c.a.HandlePendingCommit(pb2.HandlePendingCommitRequest(state_id=alice))
    after = c.a.GroupInfo(pb2.GroupInfoRequest(state_id=alice)).group_info
    members = PublicGroup.from_group_info(bytes(after)).members()
    assert [m.credential.identity for m in members] == [b"alice"]


def test_free_forgets_a_state_and_is_idempotent(clients: Clients) -> None:
    state = _group(clients.a, b"alice")
    clients.a.Free(pb2.FreeRequest(state_id=state))
    with pytest.raises(grpc.RpcError) as info:
        clients.a.StateAuth(pb2.StateAuthRequest(state_id=state))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    clients.a.Free(pb2.FreeRequest(state_id=state))  # freeing twice is fine


def test_runner_frees_everything_it_made() -> None:
    servers, servicers = [], []
    for _ in range(2):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        servicers.append(add_to_server(server))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append((server, port))
    try:
        argv = [a for _, port in servers for a in ("--client", f"127.0.0.1:{port}")]
        configs = [str(runner.CONFIG_DIR / f"{n}.json") for n in ("commit_steps", "reinit")]
        assert runner.main([*argv, "--suite", "1", *configs]) == 0
        for servicer in servicers:
            tables = servicer.state
            assert not (tables.groups or tables.transactions or tables.reinits or tables.signers)
    finally:
        for server, _ in servers:
            server.stop(grace=None)


def test_errors_are_invalid_argument(clients: Clients) -> None:
    with pytest.raises(grpc.RpcError) as err:
        clients.a.StateAuth(pb2.StateAuthRequest(state_id=987654))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown state_id" in err.value.details()


# --- The scenario runner -----------------------------------------------------------------------


@pytest.mark.slow
def test_runner_all_configs_all_suites(
    clients: Clients, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [arg for t in clients.targets for arg in ("--client", t)]
    assert runner.main(argv) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    configs = {p.stem for p in runner.builtin_configs()}
    assert configs == {
        "application",
        "branch",
        "commit",
        "commit_steps",
        "external_join",
        "external_proposals",
        "reinit",
        "welcome_join",
    }
    # Every suite (the RFC's 7 and the post-quantum ones) x 2 handshake modes x 2 actor
    # rotations for every script.
    assert out.count("PASS") == sum(
        len(json.loads(p.read_text())["scripts"]) for p in runner.builtin_configs()
    )
    assert f"({(7 + len(PQ_SUITES)) * 4} runs)" in out


def test_runner_reports_failing_step(
    clients: Clients, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = {
        "scripts": {
            "unknown_member": [
                {"action": "createGroup", "actor": "anna"},
                {"action": "removeProposal", "actor": "anna", "removed": "nobody"},
            ]
        }
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    argv = [arg for t in clients.targets for arg in ("--client", t)]
    assert runner.main([*argv, "--suite", "1", "--mode", "plaintext", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL bad/unknown_member" in out and "step 1 (removeProposal)" in out


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        # The committer has nothing to merge.
        (
            [
                {"action": "createGroup", "actor": "anna"},
                {"action": "handlePendingCommit", "actor": "anna"},
            ],
            "step 1 (handlePendingCommit): 'anna' has no pending commit",
        ),
        # A KeyPackage step made no Welcome.
        (
            [
                {"action": "createGroup", "actor": "anna"},
                {"action": "createKeyPackage", "actor": "ben"},
                {"action": "joinGroup", "actor": "ben", "welcome": 1},
            ],
            "step 2 (joinGroup): step 1 produced no welcome",
        ),
        # A member that skips an epoch cannot process the next one's commit.
        (
            [
                {"action": "createGroup", "actor": "anna"},
                {"action": "externalJoin", "actor": "anna", "joiner": "ben"},
                {"action": "commit", "actor": "anna"},
                {"action": "handlePendingCommit", "actor": "anna"},
                {"action": "commit", "actor": "anna"},
                {"action": "handleCommit", "actor": "ben", "commit": 4},
            ],
            "step 5 (handleCommit): HandleCommit on client",
        ),
    ],
    ids=["nothing_pending", "no_welcome", "skipped_epoch"],
)
def test_runner_reports_misused_commit_steps(
    clients: Clients,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
    script: list[dict[str, Any]],
    expected: str,
) -> None:
    path = tmp_path / "steps.json"
    path.write_text(json.dumps({"scripts": {"s": script}}))
    argv = [arg for t in clients.targets for arg in ("--client", t)]
    assert runner.main([*argv, "--suite", "1", "--mode", "plaintext", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL steps/s" in out and expected in out, out


def test_runner_compares_members_per_epoch(
    clients: Clients, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a commit is applied member by member, those already in the new epoch are
    compared with each other, and those still in the old one with each other."""
    compared: list[set[str]] = []
    original = ScriptRun.check_agreement

    def spy(self: Any) -> None:
        groups: dict[int, set[str]] = {}
        for actor, m in self.members.items():
            groups.setdefault(m.label, set()).add(actor)
        compared.append({",".join(sorted(g)) for g in groups.values()})
        original(self)

    monkeypatch.setattr(ScriptRun, "check_agreement", spy)
    script = [
        {"action": "createGroup", "actor": "anna"},
        {"action": "externalJoin", "actor": "anna", "joiner": "ben"},
        {"action": "externalJoin", "actor": "anna", "joiner": "cleo", "members": ["ben"]},
        {"action": "commit", "actor": "anna"},
        {"action": "handleCommit", "actor": "ben", "commit": 3},
        {"action": "handlePendingCommit", "actor": "anna"},
        {"action": "handleCommit", "actor": "cleo", "commit": 3},
    ]
    path = tmp_path / "steps.json"
    path.write_text(json.dumps({"scripts": {"s": script}}))
    argv = [arg for t in clients.targets for arg in ("--client", t)]
    argv += ["--suite", "1", "--mode", "plaintext", "--rotations", "1", str(path)]
    assert runner.main(argv) == 0
    assert compared[3:] == [
        {"anna,ben,cleo"},  # the commit is only pending
        {"anna,cleo", "ben"},
        {"anna,ben", "cleo"},
        {"anna,ben,cleo"},
    ]


# --- The deep random scenario ------------------------------------------------------------------

DEEP = runner.CONFIG_DIR / "deep" / "deep_random.json"


def test_deep_random_config_is_the_generators_output() -> None:
    # The shipped file can be regenerated (and so replayed) from its seed.
    from mlspy.interop.deep_random import generate

    assert json.loads(DEEP.read_text()) == generate(1, 100, 90, 200)


def test_deep_random_config_shape() -> None:
    steps = json.loads(DEEP.read_text())["scripts"]["deep_random"]
    commits = [s for s in steps if s["action"] == "fullCommit"]
    assert len(commits) == 90
    sizes = [1 + len(c["members"]) + len(c["joiners"]) for c in commits]
    assert min(sizes) >= 100 and max(sizes) <= 200
    assert any(c["byReference"] and c["byValue"] for c in commits)
    assert sum(len(c["joiners"]) for c in commits) > 0
    assert any(p.get("proposalType") == "remove" for c in commits for p in c["byValue"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["encrypted", "plaintext"])
def test_deep_random_scenario(
    clients: Clients, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """100-138 members, 90 random commits over two servers; every member's epoch
    authenticator is compared after every one of the 651 steps."""
    argv = [arg for t in clients.targets for arg in ("--client", t)]
    argv += ["--suite", "1", "--mode", mode, "--rotations", "1", str(DEEP)]
    assert runner.main(argv) == 0
    out = capsys.readouterr().out
    assert "PASS deep_random/deep_random (1 runs)" in out


def test_tls_encoded_private_keys_are_unwrapped_for_vectors() -> None:
    """OpenMLS answers CreateKeyPackage with opaque<V>-encoded init/encryption keys; the
    passive-client vectors the runner records need the raw keys, like the other stacks give."""
    from mlspy.interop.script import _raw_private_key

    for size, prefix in ((32, b"\x20"), (48, b"\x30"), (56, b"\x38"), (66, b"\x40\x42")):
        raw = bytes(range(size))
        assert _raw_private_key(raw) == raw
        assert _raw_private_key(prefix + raw) == raw
    assert _raw_private_key(b"\x05short") == b"\x05short"  # not a key: left alone


def _forever_key_package(identity: bytes) -> bytes:
    """A KeyPackage valid from 0 to 2^64-1, as other stacks issue them (MLSMessage bytes)."""
    from mlspy.group import SigningIdentity, create_key_package
    from mlspy.group.key_package import CLOCK_SKEW
    from mlspy.messages import MLSMessage

    ident = SigningIdentity.generate(identity, SUITE)
    bundle = create_key_package(ident, now=CLOCK_SKEW, lifetime=2**64 - 1 - CLOCK_SKEW)
    lifetime = bundle.key_package.leaf_node.lifetime
    assert lifetime is not None and (lifetime.not_before, lifetime.not_after) == (0, 2**64 - 1)
    return MLSMessage.wrap(bundle.key_package).encode()


@pytest.mark.parametrize("cap", [None, "default"])
def test_interop_server_accepts_leaves_other_stacks_issue(cap: str | None) -> None:
    """RFC 9420 §7.2 leaves the maximum LeafNode lifetime to the application; the community's
    stacks issue leaves valid from 0 to 2^64-1. The interop server accepts them by default and
    refuses them with the library's cap restored (``--max-leaf-lifetime default``)."""
    from mlspy.tree.validation import MAX_LEAF_LIFETIME

    limit = MAX_LEAF_LIFETIME if cap == "default" else None
    server, port = make_server(0, "127.0.0.1", max_leaf_lifetime=limit)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = pb2_grpc.MLSClientStub(channel)
        alice = _group(stub, b"alice")
        request = pb2.AddProposalRequest(state_id=alice, key_package=_forever_key_package(b"x"))
        if limit is None:
            proposal = stub.AddProposal(request).proposal
            out = stub.Commit(pb2.CommitRequest(state_id=alice, by_reference=[proposal]))
            assert out.welcome
        else:
            with pytest.raises(grpc.RpcError) as info:
                stub.AddProposal(request)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "exceeds the maximum" in (info.value.details() or "")
    finally:
        channel.close()
        server.stop(grace=None)
