"""Pictures of a ratchet tree: text for the terminal, PNG or SVG (matplotlib) for documents.

Shown: leaves with their members' identities, blank nodes, parent nodes with their unmerged
leaves, the nodes a member holds private keys for (``*``), and the path of the last commit
(``!``: the committer's leaf and its direct path).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from mlspy.tree.math import LeafIndex, NodeIndex, level, node_width, root
from mlspy.tree.ratchet_tree import RatchetTree


def _label(tree: RatchetTree, x: int) -> str:
    if x & 1 == 0:
        leaf = tree.leaf(LeafIndex(x >> 1))
        if leaf is None:
            return "_"
        return (leaf.credential.identity or b"?").decode(errors="replace")
    parent = tree.parent(NodeIndex(x))
    if parent is None:
        return "_"
    label = parent.encryption_key[:2].hex()
    if parent.unmerged_leaves:
        label += "[" + ",".join(map(str, parent.unmerged_leaves)) + "]"
    return label


def render_text(
    tree: RatchetTree, *, held: Collection[int] = (), path: Collection[int] = ()
) -> str:
    """The tree, root on top, one line per level; ``*`` marks held keys, ``!`` the path."""
    n = tree.n_leaves
    width = node_width(n)
    labels = []
    for x in range(width):
        text = _label(tree, x) + ("*" if x in held else "") + ("!" if x in path else "")
        labels.append(text)
    cell = max(len(t) for t in labels) + 1
    lines = []
    for lvl in range(level(root(n)), -1, -1):
        row = [" " * cell] * width
        for x in range(width):
            if level(NodeIndex(x)) == lvl:
                row[x] = labels[x].center(cell)
        lines.append("".join(row).rstrip())
    lines.append("".join(str(i).center(cell * 2) for i in range(n)).rstrip() + "   (leaf indices)")
    return "\n".join(lines)


def render_image(
    tree: RatchetTree,
    out: Path,
    *,
    held: Collection[int] = (),
    path: Collection[int] = (),
    title: str = "",
) -> None:
    """Draw the tree to ``out`` (PNG or SVG by its suffix); needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("drawing needs matplotlib: pip install matplotlib") from None
    n = tree.n_leaves
    width = node_width(n)
    fig, ax = plt.subplots(figsize=(max(6.0, width * 0.55), 1.4 + 0.9 * level(root(n))))
    for x in range(width):
        lvl = level(NodeIndex(x))
        if lvl > 0:
            half = 1 << (lvl - 1)
            for child in (x - half, x + half):
                on_path = x in path and child in path
                ax.plot(
                    [x, child],
                    [lvl, lvl - 1],
                    color="tab:red" if on_path else "0.6",
                    linewidth=2.2 if on_path else 1,
                    zorder=1,
                )
    for x in range(width):
        lvl = level(NodeIndex(x))
        blank = tree.is_blank(NodeIndex(x))
        color = "0.85" if blank else ("tab:blue" if x & 1 == 0 else "tab:green")
        ax.scatter(
            [x],
            [lvl],
            s=420,
            color=color,
            edgecolors="black" if x in held else color,
            linewidths=2.5 if x in held else 1,
            zorder=2,
        )
        ax.annotate(
            _label(tree, x),
            (x, lvl),
            textcoords="offset points",
            xytext=(0, -20 if x & 1 == 0 else 14),
            ha="center",
            fontsize=8,
        )
    ax.set_xlim(-1, width)
    ax.set_ylim(-0.8, level(root(n)) + 0.7)
    ax.axis("off")
    ax.set_title(
        title
        or "ratchet tree: blue leaves, green parents, grey blank; "
        "[..] unmerged leaves; black ring: held key; red: last commit path",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def commit_path(tree: RatchetTree, committer: int) -> set[int]:
    """The committer's leaf and its direct path, as node indices."""
    return {2 * committer, *tree.direct_path(LeafIndex(committer))}
