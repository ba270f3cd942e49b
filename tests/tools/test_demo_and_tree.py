"""``mlspy demo`` runs a real conversation to exit 0; ``mlspy tree`` draws trees."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import matplotlib.image
from click.testing import CliRunner
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from mlspy.cli import main
from mlspy.group import Group, SigningIdentity, create_key_package
from mlspy.messages import Add, Proposal, Remove
from mlspy.storage import GroupStore, SQLiteStore
from mlspy.tools.tree_picture import commit_path, draw_figure
from mlspy.tree.ratchet_tree import RatchetTree


def test_demo_transcript() -> None:
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "all members agree" in out
    # Every message is shown at every recipient, as from its sender (and device): carol's
    # too, which the demo once replaced by the oldest queued message (bob's).
    assert re.search(r"alice \(phone\): +decrypted  carol: hello bob!", out)
    assert re.search(r"alice \(phone\): +decrypted  alice \(laptop\): hi both", out)
    assert re.search(r"carol: +decrypted  dave: great to be here", out)
    assert re.search(r"bob: +alice added alice's device 'tablet'", out)
    assert re.search(r"carol: +alice removed alice's device 'tablet'", out)
    assert re.search(r"carol: +alice removed you from the group", out)
    assert "dave asks to join; alice approves" in out


# Every message the demo sends: its sender, the sender's device, and the devices that must
# decrypt it (every other device in the group at the time).
_EXPECTED = {
    "hi everyone, bob here": ("bob", "", {"alice (phone)", "alice (laptop)", "carol"}),
    "hello bob!": ("carol", "", {"bob", "alice (phone)", "alice (laptop)"}),
    "hi both, I'm on my laptop": ("alice", "laptop", {"bob", "alice (phone)", "carol"}),
    "and now from my tablet": (
        "alice",
        "tablet",
        {"bob", "alice (phone)", "alice (laptop)", "carol"},
    ),
    "my tablet is gone, I'm on my phone": ("alice", "phone", {"bob", "alice (laptop)", "carol"}),
    "great to be here": ("dave", "", {"bob", "alice (phone)", "alice (laptop)", "carol"}),
}


def _step(transcript: list[dict[str, Any]], words: str) -> dict[str, Any]:
    (step,) = [s for s in transcript if words in s["step"]]
    return step


def test_demo_json_every_message_decrypted_by_every_recipient() -> None:
    result = CliRunner().invoke(main, ["demo", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and "error" not in doc
    assert doc["seconds"] < 30
    transcript = doc["transcript"]

    messages = {m["text"]: m for m in doc["messages"]}
    assert len(messages) == len(doc["messages"]) == len(_EXPECTED)
    for text, (sender, device, recipients) in _EXPECTED.items():
        m = messages[text]
        assert (m["sender"], m["device"]) == (sender, device)
        assert set(m["recipients"]) == recipients
        assert set(m["decrypted"]) == recipients, text
        for seen in m["decrypted"].values():
            assert seen == {"sender": sender, "device": device, "text": text}
    # The narration shows the same.
    step = _step(transcript, '-> group: "hi both, I\'m on my laptop"')
    assert step["decrypted"]["alice (phone)"]["device"] == "laptop"

    # alice has two devices, both in the group.
    assert transcript[0]["alice's devices"] == ["phone", "laptop"]
    invited = _step(transcript, "bob invites alice")
    assert invited["devices"] == ["bob", "alice (phone)", "alice (laptop)", "carol"]
    assert "you added alice (2 devices)" in invited["told"]["bob"]

    # A third device joins: enrolled mid-demo, added by alice's phone.
    joined = _step(transcript, "enrols a tablet")
    assert "alice (tablet)" in joined["devices"]
    assert joined["told"]["bob"] == ["alice added alice's device 'tablet'"]
    assert joined["told"]["carol"] == ["alice added alice's device 'tablet'"]
    assert joined["told"]["alice (phone)"] == ["you added your device 'tablet'"]
    assert joined["told"]["alice (tablet)"][0].startswith("you joined the group")

    # ... and is revoked: removed from the group, the others see it go.
    revoked = _step(transcript, "revokes it")
    assert revoked["epoch"] == joined["epoch"] + 1
    assert "alice (tablet)" not in revoked["devices"]
    assert revoked["alice's devices"] == ["phone", "laptop"]
    assert revoked["the tablet logs in"] == "refused (401)"
    for device in ("bob", "carol"):
        assert revoked["told"][device] == ["alice removed alice's device 'tablet'"]

    removed = _step(transcript, "alice removes carol")
    assert removed["told"]["carol"] == ["alice removed you from the group"]

    summary = transcript[-1]
    assert summary["step"] == "summary" and summary["all agree"] is True
    assert set(summary["members"]) == {"alice", "bob", "carol", "dave"}
    devices = {"bob", "alice (phone)", "alice (laptop)", "carol", "dave"}
    assert set(summary["devices"]) == set(summary["epoch_authenticators"]) == devices
    assert len(set(summary["epoch_authenticators"].values())) == 1
    assert summary["messages checked"] == len(_EXPECTED)


def test_demo_fails_loudly_when_a_message_is_not_decrypted(monkeypatch: Any) -> None:
    """A recipient that never sees a message the demo sent: exit 1 and one line saying
    which device missed which message (in --json mode too, with the transcript so far)."""
    from mlspy.client import Client
    from mlspy.tools import demo

    send = Client.send

    async def garbled(self: Client, group_id: bytes, text: str) -> None:
        await send(self, group_id, "hello bob?" if text == "hello bob!" else text)

    monkeypatch.setattr(Client, "send", garbled)
    monkeypatch.setattr(demo, "WAIT", 0.5)
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 1, result.output
    assert "did not see the message 'hello bob!' within 0.5s" in result.stderr
    assert result.stderr.startswith("mlspy demo: check failed: ")
    assert len(result.stderr.splitlines()) == 1

    result = CliRunner().invoke(main, ["demo", "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and "hello bob!" in doc["error"]
    assert [m["text"] for m in doc["messages"]] == ["hi everyone, bob here"]


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
    pixels = matplotlib.image.imread(png)  # decodes: a real image, not only a header
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 1000
    assert b"<svg" in svg.read_bytes()[:500]
    result = CliRunner().invoke(main, ["tree", "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    nodes = json.loads(result.output)["nodes"]
    assert any(n["held"] for n in nodes) and any(n["blank"] for n in nodes)
    assert creator.tree.n_leaves == 16


def _one_leaf() -> RatchetTree:
    return Group.create(SigningIdentity.generate(b"alone")).tree


def _inside(box: Bbox, fig: Figure) -> bool:
    return bool(box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1)


def test_tree_picture_legend_and_leaf_indices_are_inside_the_figure(tmp_path: Path) -> None:
    _, _, creator = _sixteen(tmp_path)
    held, path = creator.held_node_indices(), commit_path(creator.tree, 0)
    # The widest tree here and the narrowest (a one-leaf tree: the legend must wrap to fit).
    for tree, marks in ((creator.tree, (held, path)), (_one_leaf(), ((), {0}))):
        fig = draw_figure(tree, held=marks[0], path=marks[1])
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        (legend,) = fig.legends
        assert _inside(legend.get_window_extent(renderer), fig), "the legend is clipped"
        labels = {t.get_text() for t in legend.get_texts()}
        assert {"blank node", "private key held here", "last commit path"} <= labels
        (ax,) = fig.axes
        texts = {t.get_text(): t for t in ax.texts}
        for i in range(tree.n_leaves):
            assert f"leaf {i}" in texts, f"leaf {i} has no index"
        for text in [*ax.texts, ax.title]:
            box = text.get_window_extent(renderer)
            assert _inside(box, fig), f"{text.get_text()!r} is clipped"
        assert texts["leaf 0"].get_window_extent(renderer).y0 > legend.get_window_extent().y1


def test_tree_picture_without_matplotlib_says_how_to_get_it(
    tmp_path: Path, monkeypatch: Any
) -> None:
    tree_file, _, _ = _sixteen(tmp_path)
    for name in ("matplotlib.backends.backend_agg", "matplotlib.figure", "matplotlib.lines"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    result = CliRunner().invoke(main, ["tree", str(tree_file), "--png", str(tmp_path / "t.png")])
    assert result.exit_code == 1
    assert (
        f"needs matplotlib, which this Python lacks: {sys.executable} -m pip install matplotlib"
        in result.output
    )
    assert not (tmp_path / "t.png").exists()


def test_tree_errors_are_one_line() -> None:
    result = CliRunner().invoke(main, ["tree"])
    assert result.exit_code == 2 and "RATCHET_TREE" in result.output


# --- Unhappy paths: one line and a non-zero status, never a hang or a traceback (review) ------


def test_tree_committer_outside_the_tree_is_refused(tmp_path: Path) -> None:
    tree_file, _, _ = _sixteen(tmp_path)
    for leaf in ("-1", "16"):
        result = CliRunner().invoke(main, ["tree", str(tree_file), "--committer", leaf])
        assert result.exit_code == 2, result.output
        assert "is not in a tree of 16 leaves" in result.output


def test_ports_out_of_range_are_refused() -> None:
    for command in ("serve", "interop-server"):
        result = CliRunner().invoke(main, [command, "--port", "99999"])
        assert result.exit_code == 2 and "not in the range" in result.output


def test_chat_without_a_server_fails_before_the_screen_opens() -> None:
    result = CliRunner().invoke(main, ["chat", "--server", "http://127.0.0.1:9", "--user", "a"])
    assert result.exit_code == 1
    assert "cannot reach a Delivery Service" in result.output and "mlspy serve" in result.output
    result = CliRunner().invoke(main, ["chat", "--server", "notaurl", "--user", "a"])
    assert result.exit_code == 2


def test_vectors_verify_refuses_to_check_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("MLS_TEST_VECTORS", str(tmp_path))
    result = CliRunner().invoke(main, ["vectors", "verify"])
    assert result.exit_code == 2 and "no *.json test vectors" in result.output


def test_interop_run_explains_an_unreachable_client(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    from mlspy.interop.runner import main as run_main

    for argv, expected in (
        (["--client", "127.0.0.1:9"], "cannot reach client 127.0.0.1:9"),
        (["--client", "127.0.0.1:9", str(bad)], 'expected {"scripts"'),
        (["--client", "127.0.0.1:9", "--rotations", "0"], "at least 1"),
    ):
        try:
            run_main(argv)
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError("no usage error")
        assert expected in capsys.readouterr().err


def test_unexpected_failures_are_one_line(monkeypatch: Any, capsys: Any) -> None:
    import mlspy.cli as cli

    def broken(**kwargs: Any) -> None:
        raise ValueError("something specific\nwith detail")

    monkeypatch.setattr(cli, "main", broken)
    monkeypatch.delenv("MLSPY_DEBUG", raising=False)
    try:
        cli.run()
    except SystemExit as exc:
        assert exc.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ValueError: with detail" in err and "MLSPY_DEBUG" in err


def test_servers_on_a_busy_port_say_so_in_one_line() -> None:
    import socket

    with socket.create_server(("0.0.0.0", 0)) as busy:
        port = str(busy.getsockname()[1])
        busy.listen()
        for command in (["serve", "--host", "0.0.0.0"], ["interop-server"]):
            result = CliRunner().invoke(main, [*command, "--port", port])
            assert result.exit_code == 1, result.output
            assert "Choose another --port" in result.output


def test_tree_store_leaves_a_foreign_file_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.txt"
    foreign.write_bytes(b"")
    result = CliRunner().invoke(main, ["tree", "--store", str(foreign)])
    assert result.exit_code == 1 and "is not an mlspy state store" in result.output
    assert foreign.read_bytes() == b""


def test_bench_json_to_stdout_is_only_json() -> None:
    result = CliRunner().invoke(
        main, ["bench", "--sizes", "2", "--shapes", "full", "--repeat", "1", "--json", "-"]
    )
    assert result.exit_code == 0, result.stderr
    assert "crypto_costs" in json.loads(result.stdout)
