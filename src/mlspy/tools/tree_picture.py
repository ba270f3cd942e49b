"""Pictures of a ratchet tree: text for the terminal, PNG or SVG (matplotlib) for documents.

Shown: leaves with their members' identities, blank nodes, parent nodes with their unmerged
leaves, the nodes a member holds private keys for (``*``), the path of the last commit
(``!``: the committer's leaf and its direct path) and the leaf indices. The image has a legend
below the tree; matplotlib is a dependency of mlspy, so ``pip install -e .`` can draw.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from mlspy.tree.math import LeafIndex, NodeIndex, level, node_width, root
from mlspy.tree.ratchet_tree import RatchetTree

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


# The legend, one entry per mark: (kind, colour, label); drawn below the tree.
_LEGEND = (
    ("node", "tab:blue", "leaf (member), index below"),
    ("node", "tab:green", "parent node"),
    ("node", "0.85", "blank node"),
    ("ring", "black", "private key held here"),
    ("line", "tab:red", "last commit path"),
    ("text", "", "[i,j]: unmerged leaves"),
)


def draw_figure(
    tree: RatchetTree,
    *,
    held: Collection[int] = (),
    path: Collection[int] = (),
    title: str = "",
) -> Figure:
    """The picture as a matplotlib figure, laid out so everything on it is inside it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError:
        raise RuntimeError(
            "drawing PNG/SVG needs matplotlib, which this Python lacks: "
            f"{sys.executable} -m pip install matplotlib"
        ) from None
    n = tree.n_leaves
    width = node_width(n)
    depth = level(root(n))
    fig = Figure(figsize=(max(6.0, width * 0.55), 2.2 + 0.9 * depth), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
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
        if x & 1 == 0:
            ax.annotate(
                f"leaf {x >> 1}",
                (x, lvl),
                textcoords="offset points",
                xytext=(0, -31),
                ha="center",
                fontsize=7,
                color="0.35",
            )
    ax.set_xlim(-1, width)
    ax.set_ylim(-0.9, depth + 0.7)
    ax.axis("off")
    ax.set_title(title or f"ratchet tree, {n} leaf" + ("s" if n != 1 else ""), fontsize=9)
    handles = []
    for kind, color, label in _LEGEND:
        if kind == "line":
            handle = Line2D([], [], color=color, linewidth=2.2, label=label)
        else:
            handle = Line2D(
                [],
                [],
                linestyle="none",
                marker="o" if kind != "text" else "",
                markersize=10,
                markerfacecolor="white" if kind == "ring" else color,
                markeredgecolor=color,
                markeredgewidth=2.5 if kind == "ring" else 1,
                label=label,
            )
        handles.append(handle)
    # As many columns as fit the figure's width: a legend wider than the figure is clipped.
    for ncol in (len(handles), 3, 2, 1):
        legend = fig.legend(
            handles=handles, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False
        )
        fig.canvas.draw()
        if legend.get_window_extent().width <= fig.bbox.width * 0.98 or ncol == 1:
            break
        legend.remove()
    return fig


def render_image(
    tree: RatchetTree,
    out: Path,
    *,
    held: Collection[int] = (),
    path: Collection[int] = (),
    title: str = "",
) -> None:
    """Draw the tree to ``out`` (PNG or SVG by its suffix); needs matplotlib."""
    fig = draw_figure(tree, held=held, path=path, title=title)
    # "tight" keeps whatever the layout could not fit (a very long identity) in the file.
    fig.savefig(out, dpi=110, bbox_inches="tight", pad_inches=0.15)


def commit_path(tree: RatchetTree, committer: int) -> set[int]:
    """The committer's leaf and its direct path, as node indices."""
    return {2 * committer, *tree.direct_path(LeafIndex(committer))}
