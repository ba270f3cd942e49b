"""``mlspy demo`` runs a real conversation to exit 0; ``mlspy tree`` draws trees."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mlspy.cli import main
from mlspy.group import Group, SigningIdentity, create_key_package
from mlspy.messages import Add, Proposal, Remove
from mlspy.storage import GroupStore, SQLiteStore


def test_demo_transcript() -> None:
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert "all members agree" in result.output
    assert "dave joins by external commit" in result.output


def test_demo_json() -> None:
    result = CliRunner().invoke(main, ["demo", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    summary = doc["transcript"][-1]
    assert summary["step"] == "summary" and summary["all agree"] is True
    assert set(summary["members"]) == {"alice", "bob", "carol", "dave"}


def _sixteen(tmp: Path) -> tuple[Path, Path, Group]:
    """A 16-leaf tree with blanks (removals) and unmerged leaves (adds after a commit)."""
    creator = Group.create(SigningIdentity.generate(b"m0"))
    bundles = [create_key_package(SigningIdentity.generate(b"m%d" % i)) for i in range(1, 12)]
    creator.commit([Proposal(Add(b.key_package)) for b in bundles])
    creator.merge_pending_commit()
    creator.commit([Proposal(Remove(3)), Proposal(Remove(6))], force_path=True)
    creator.merge_pending_commit()
    late = [create_key_package(SigningIdentity.generate(b"late%d" % i)) for i in range(5)]
    creator.commit([Proposal(Add(b.key_package)) for b in late])
    creator.merge_pending_commit()
    assert creator.tree.n_leaves == 16
    tree_file = tmp / "tree.bin"
    tree_file.write_bytes(creator.export_ratchet_tree())
    store = tmp / "state.db"
    GroupStore(SQLiteStore(store)).adopt(creator)
    return tree_file, store, creator


def test_tree_text_png_svg(tmp_path: Path) -> None:
    tree_file, store, creator = _sixteen(tmp_path)
    png, svg = tmp_path / "tree.png", tmp_path / "tree.svg"
    result = CliRunner().invoke(
        main, ["tree", str(tree_file), "--committer", "0", "--png", str(png), "--svg", str(svg)]
    )
    assert result.exit_code == 0, result.output
    assert "m0" in result.output and "late0" in result.output and "_" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert b"<svg" in svg.read_bytes()[:500]
    result = CliRunner().invoke(main, ["tree", "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    nodes = json.loads(result.output)["nodes"]
    assert any(n["held"] for n in nodes) and any(n["blank"] for n in nodes)
    assert creator.tree.n_leaves == 16


def test_tree_errors_are_one_line() -> None:
    result = CliRunner().invoke(main, ["tree"])
    assert result.exit_code == 2 and "RATCHET_TREE" in result.output
