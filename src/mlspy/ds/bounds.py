"""Bounds on what the Delivery Service takes from the wire (issue 18): numbers it can store,
and ratchet trees whose cost stays in proportion to what they hold."""

from __future__ import annotations

from collections.abc import Sequence

from mlspy.ds.errors import BadRequest
from mlspy.messages import Node

# Wire integers are unsigned 64-bit (epochs, §6; lifetimes, §7.2), the databases' integers
# signed: the DS keeps what fits, and refuses the rest with a 400 rather than overflowing.
MAX_STORED = (1 << 63) - 1


# A DS policy on ratchet trees. Validating a tree hashes every node, blank or not (a blank
# leaf's tree hash covers its index, §7.8), so a tree of 2^18 leaves costs seconds of CPU
# however little it holds, and a GroupInfo of 512 KiB can carry one (a blank node is one
# byte). Truncation (§7.7) keeps a real group's width below twice its largest leaf index,
# and a group that shrank keeps its width; the DS accepts any width up to ``SPARSE_FLOOR``
# leaves, and beyond it trees with at least one member leaf in ``SPARSE_FACTOR``. The cost
# of a tree it takes is then in proportion to its members (each some hundred bytes).
SPARSE_FLOOR = 4096
SPARSE_FACTOR = 8


def check_tree_shape(nodes: Sequence[Node | None]) -> None:
    """Refuse (400) a tree, in its ``ratchet_tree`` form, that is too wide for its members."""
    width = 1
    while 2 * width - 1 < len(nodes):
        width *= 2
    members = sum(1 for node in nodes[0::2] if node is not None)
    if width > max(SPARSE_FLOOR, SPARSE_FACTOR * members):
        raise BadRequest(
            f"the ratchet tree has {width} leaves for {members} members: this Delivery "
            f"Service takes trees of more than {SPARSE_FLOOR} leaves only when at least one "
            f"leaf in {SPARSE_FACTOR} is a member (truncate the tree, RFC 9420 §7.7)"
        )


def check_u16(value: int, name: str) -> None:
    """Refuse (400) a number that is not a uint16 (cipher suites)."""
    if isinstance(value, bool) or not 0 <= value <= 0xFFFF:
        raise BadRequest(f"{name} must be a uint16 (RFC 9420 §17.1)")


def storable(value: int) -> bool:
    """Whether a number reaches the database as it is (a signed 64-bit integer); smaller
    ones than any sequence number simply match nothing."""
    return -MAX_STORED - 1 <= value <= MAX_STORED
