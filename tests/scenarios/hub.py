"""An in-memory multi-party hub for scenario tests.

The hub plays the Delivery Service of RFC 9750 for a handful of named clients. Each client has
a :class:`SigningIdentity`, the :class:`KeyPackageBundle` s it has published, and at most one
:class:`Group`. Handshakes fan out to every member, the sender included: the sender's
``process`` of its own pending commit merges it; every other member gets a
:class:`StagedCommit` and merges it. Welcomes go to the clients whose KeyPackages were added.
With PublicMessage handshakes the hub also follows the group with a :class:`PublicGroup`, as a
real Delivery Service would.

After every step :meth:`Hub.check` asserts that all members agree on the epoch, the epoch
authenticator, an exported secret, the tree hash, the GroupContext and the member list, that
the hub's idea of who is a member matches the tree, and that the public view (if any) agrees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from mlspy.group import (
    ApplicationMessage,
    CommitOutput,
    Group,
    GroupConfig,
    KeyPackageBundle,
    ProposalReceived,
    SigningIdentity,
    StagedCommit,
    create_key_package,
    join_external,
    key_package_ref,
)
from mlspy.group.public_group import PublicGroup, PublicProposal, PublicStagedCommit
from mlspy.messages import (
    Add,
    Credential,
    Extension,
    ExternalSender,
    ExternalSenders,
    KeyPackage,
    Proposal,
    WireFormat,
)

EXPORT_LABEL = b"hub"


@dataclass
class Client:
    name: str
    identity: SigningIdentity
    bundles: dict[bytes, KeyPackageBundle] = field(default_factory=dict)
    group: Group | None = None

    def key_package(self) -> KeyPackage:
        """Publish a fresh KeyPackage (its bundle is kept for joining)."""
        bundle = create_key_package(self.identity)
        self.bundles[bundle.ref()] = bundle
        return bundle.key_package


@dataclass(frozen=True)
class Sent:
    """An application message and who could decrypt it when it was sent."""

    message: bytes
    sender: str
    sender_leaf: int
    data: bytes
    authenticated_data: bytes
    epoch: int
    recipients: tuple[tuple[str, Group], ...]


class Hub:
    """Named clients in one group, connected by an in-memory Delivery Service."""

    def __init__(
        self,
        cipher_suite: int,
        wire_format: WireFormat = WireFormat.mls_public_message,
        *,
        ratchet_tree_extension: bool = True,
        padding_block: int = 0,
        public_view: bool | None = None,
        reload: bool = False,
    ) -> None:
        self.cipher_suite = cipher_suite
        self.config = GroupConfig(
            handshake_wire_format=wire_format,
            ratchet_tree_extension=ratchet_tree_extension,
            padding_block=padding_block,
        )
        self.clients: dict[str, Client] = {}
        self.external_psks: dict[bytes, bytes] = {}
        # The Delivery Service's view follows PublicMessage handshakes only.
        self.track_public = (
            wire_format == WireFormat.mls_public_message if public_view is None else public_view
        )
        self.public: PublicGroup | None = None
        ds = SigningIdentity.generate(b"ds", cipher_suite)
        self.ds_signature_private_key = ds.signature_private_key
        self.ds_signature_key = ds.signature_key
        self.steps = 0
        # Save and reload every member's state after every step (state-at-rest round trip).
        self.reload = reload

    # --- Clients ----------------------------------------------------------------------------

    def client(self, name: str, identity: SigningIdentity | None = None) -> Client:
        """The client called ``name``, created on first use."""
        if name not in self.clients:
            ident = identity or SigningIdentity.generate(name.encode(), self.cipher_suite)
            self.clients[name] = Client(name, ident)
        return self.clients[name]

    def key_package(self, name: str) -> KeyPackage:
        return self.client(name).key_package()

    def group(self, name: str) -> Group:
        g = self.clients[name].group
        assert g is not None, f"{name} is not in the group"
        return g

    def members(self) -> list[str]:
        """Names of clients holding a group (closed by ReInit included, removed excluded)."""
        return [n for n, c in self.clients.items() if c.group is not None]

    def leaf(self, name: str) -> int:
        return int(self.group(name).own_leaf_index)

    def external_senders(self) -> Extension:
        """The ``external_senders`` extension naming this hub's Delivery Service key."""
        return ExternalSenders(
            (ExternalSender(self.ds_signature_key, Credential.basic(b"ds")),)
        ).to_extension()

    def share_psk(self, psk_id: bytes, psk: bytes) -> None:
        """Give every member, and every later joiner, an external PSK."""
        self.external_psks[psk_id] = psk
        for name in self.members():
            self.group(name).add_external_psk(psk_id, psk)

    # --- Group lifecycle --------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        group_id: bytes = b"hub group",
        extensions: tuple[Extension, ...] = (),
    ) -> Group:
        c = self.client(name)
        c.group = Group.create(
            c.identity, group_id=group_id, extensions=extensions, config=self.config
        )
        for psk_id, psk in self.external_psks.items():
            c.group.add_external_psk(psk_id, psk)
        self.adopt_public_view(name)
        self.check()
        return c.group

    def adopt(self, name: str, group: Group, identity: SigningIdentity | None = None) -> None:
        """Install a group that was created outside the hub (e.g. a successor group)."""
        self.client(name, identity).group = group

    def adopt_public_view(self, name: str) -> None:
        """Start the Delivery Service's public view from ``name``'s GroupInfo."""
        if self.track_public:
            self.public = PublicGroup.from_group_info(self.group(name).group_info())

    # --- Handshakes -------------------------------------------------------------------------

    def _public_process(self, message: bytes) -> None:
        if self.public is None:
            return
        event = self.public.process(message)
        if isinstance(event, PublicStagedCommit):
            self.public.merge(event)
        else:
            assert isinstance(event, PublicProposal)

    def propose(self, name: str, make: Callable[[Group], bytes]) -> bytes:
        """``name`` sends the proposal ``make(group)``; every other member caches it."""
        message = make(self.group(name))
        self.deliver_proposal(message, exclude=(name,))
        return message

    def deliver_proposal(self, message: bytes, exclude: Iterable[str] = ()) -> None:
        """Fan a proposal (from a member or an external sender) out to the members."""
        skip = set(exclude)
        self._public_process(message)
        for name in self.members():
            if name in skip:
                continue
            event = self.group(name).process(message)
            assert isinstance(event, ProposalReceived), event
        self.check()

    def commit(
        self,
        name: str,
        proposals: Sequence[Proposal] = (),
        *,
        tree_out_of_band: bool = False,
        **kwargs: object,
    ) -> CommitOutput:
        """``name`` commits the cached proposals plus ``proposals``; the hub delivers it."""
        g = self.group(name)
        if tree_out_of_band:
            kwargs.setdefault("ratchet_tree_in_welcome", False)
        out = g.commit(proposals, **kwargs)  # type: ignore[arg-type]
        self.deliver_commit(name, out, tree_out_of_band=tree_out_of_band)
        return out

    def add(self, name: str, joiners: Sequence[str], **kwargs: object) -> CommitOutput:
        """``name`` commits Adds for fresh KeyPackages of ``joiners``."""
        proposals = [Proposal(Add(self.key_package(j))) for j in joiners]
        return self.commit(name, proposals, **kwargs)  # type: ignore[arg-type]

    def deliver_commit(
        self, sender: str, out: CommitOutput, *, tree_out_of_band: bool = False
    ) -> StagedCommit:
        """Deliver ``sender``'s commit to every member (echo included) and its Welcome."""
        own = self.group(sender).pending_commit
        assert own is not None
        self._public_process(out.commit)
        for name in self.members():
            g = self.group(name)
            staged = g.process(out.commit)
            assert isinstance(staged, StagedCommit), staged
            if name == sender:
                assert staged.own and staged is own
                g.merge_staged_commit(staged)
                continue
            assert not staged.own
            assert staged.added == own.added
            assert staged.removed == own.removed
            assert staged.updated == own.updated
            assert staged.committer == own.committer
            assert staged.psks == own.psks
            g.merge_staged_commit(staged)
            if staged.self_removed:
                assert not g.active
                self.clients[name].group = None
        if own.added:
            assert out.welcome is not None
            self._welcome(own, out, tree_out_of_band)
        else:
            assert out.welcome is None
        self.check()
        return own

    def _welcome(self, staged: StagedCommit, out: CommitOutput, tree_out_of_band: bool) -> None:
        for member, kp in zip(staged.added, staged.key_packages, strict=True):
            leaf = member.leaf_index
            ref = key_package_ref(kp)
            owner = next((c for c in self.clients.values() if ref in c.bundles), None)
            if owner is None:
                continue  # a KeyPackage of somebody the hub does not know
            assert owner.group is None, f"{owner.name} is already a member"
            owner.group = Group.join(
                out.welcome,  # type: ignore[arg-type]
                owner.bundles.pop(ref),
                ratchet_tree=out.ratchet_tree if tree_out_of_band else None,
                external_psks=dict(self.external_psks),
                config=self.config,
            )
            assert owner.group.own_leaf_index == leaf

    def external_join(
        self,
        name: str,
        *,
        via: str | None = None,
        tree_out_of_band: bool = False,
        resync: bool = False,
        psk_ids: Sequence[bytes] = (),
    ) -> bytes:
        """``name`` joins by external commit from ``via``'s GroupInfo; with ``resync`` it is
        a member already and removes its old leaf."""
        c = self.client(name)
        via = via or next(n for n in self.members() if n != name)
        helper = self.group(via)
        group_info = helper.group_info(with_ratchet_tree=not tree_out_of_band)
        tree = helper.export_ratchet_tree() if tree_out_of_band else None
        old = c.group
        if resync:
            assert old is not None
        else:
            assert old is None, f"{name} is a member already"
        new, commit = join_external(
            group_info,
            c.identity,
            ratchet_tree=tree,
            remove_prior=int(old.own_leaf_index) if old is not None else None,
            external_psks=dict(self.external_psks),
            psk_ids=psk_ids,
            config=self.config,
        )
        self._public_process(commit)
        for other in self.members():
            g = self.group(other)
            staged = g.process(commit)
            assert isinstance(staged, StagedCommit), staged
            assert staged.added == ()
            if other == name:
                # Our old appearance learns that it was removed.
                assert staged.self_removed
            g.merge_staged_commit(staged)
        assert new.epoch == self.group(via).epoch - 1  # not merged before the DS accepts
        new.merge_pending_commit()
        c.group = new
        self.check()
        return commit

    # --- Application messages ---------------------------------------------------------------

    def send(self, name: str, data: bytes, authenticated_data: bytes = b"") -> Sent:
        g = self.group(name)
        message = g.encrypt_application(data, authenticated_data)
        recipients = tuple((n, self.group(n)) for n in self.members() if n != name)
        return Sent(
            message, name, int(g.own_leaf_index), data, authenticated_data, g.epoch, recipients
        )

    def deliver(self, sent: Sent, only: Iterable[str] | None = None) -> int:
        """Deliver ``sent`` to its recipients still holding the same group; return how many."""
        wanted = set(only) if only is not None else None
        count = 0
        for name, g in sent.recipients:
            if wanted is not None and name not in wanted:
                continue
            if self.clients[name].group is not g:
                continue
            event = g.process(sent.message)
            assert isinstance(event, ApplicationMessage), event
            assert event.data == sent.data
            assert event.authenticated_data == sent.authenticated_data
            assert event.sender.leaf_index == sent.sender_leaf
            assert event.epoch == sent.epoch
            count += 1
        return count

    # --- Agreement --------------------------------------------------------------------------

    def check(self) -> None:
        """Every member agrees with every other, and with the public view."""
        self.steps += 1
        if self.reload:
            for client in self.clients.values():
                if client.group is not None:
                    saved = client.group.to_bytes()
                    client.group = Group.from_bytes(saved)
                    assert client.group.to_bytes() == saved, "reloading changed the state"
        names = self.members()
        assert names, "the group is empty"
        groups = [self.group(n) for n in names]
        first = groups[0]
        expected = (
            first.epoch,
            first.epoch_authenticator,
            first.export_secret(EXPORT_LABEL, b"", 32),
            first.tree.tree_hash(),
            first.context,
            first.members(),
        )
        for name, g in zip(names, groups, strict=True):
            got = (
                g.epoch,
                g.epoch_authenticator,
                g.export_secret(EXPORT_LABEL, b"", 32),
                g.tree.tree_hash(),
                g.context,
                g.members(),
            )
            for label, a, b in zip(
                ("epoch", "epoch_authenticator", "exporter", "tree_hash", "context", "members"),
                got,
                expected,
                strict=True,
            ):
                assert a == b, f"{name} disagrees with {names[0]} on {label}"
            assert g.context.tree_hash == g.tree.tree_hash()
        # The tree's members are exactly the hub's members, each at its own leaf.
        by_leaf = {int(m.leaf_index): m for m in first.members()}
        assert len(by_leaf) == len(names)
        for name, g in zip(names, groups, strict=True):
            m = by_leaf.get(int(g.own_leaf_index))
            assert m is not None, f"{name}'s leaf is blank"
            ident = self.clients[name].identity
            assert (m.credential, m.signature_key) == (ident.credential, ident.signature_key)
        if self.public is not None:
            assert self.public.context == first.context, "the public view disagrees"
            assert self.public.members() == first.members()
            assert self.public.tree.tree_hash() == first.tree.tree_hash()


WIRE_FORMATS = {
    "public": WireFormat.mls_public_message,
    "private": WireFormat.mls_private_message,
}


def hub_with(names: Sequence[str], wire: WireFormat, cs: int = 1) -> Hub:
    """A hub where ``names[0]`` created the group and added the others in one commit (so
    ``names[i]`` sits at leaf ``i`` and every parent node is blank)."""
    hub = Hub(cs, wire, padding_block=32 if wire == WireFormat.mls_private_message else 0)
    hub.create(names[0])
    if len(names) > 1:
        hub.add(names[0], list(names[1:]))
    return hub
