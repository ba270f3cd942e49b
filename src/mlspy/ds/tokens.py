"""Ending bearer tokens before they expire: a user's logout, an operator's revocation.

A token is a row in ``tokens``; deleting it ends it on every DS node at once (each request
looks its token up). Open WebSockets check their token again at least every
``Limits.token_recheck`` seconds and close with code 4401 once it is gone.
"""

from __future__ import annotations

from mlspy.ds.db import Database


def revoke(db: Database, client_id: str, token: str | None = None) -> int:
    """End ``token`` of ``client_id`` (or, without one, every token of the client); returns
    how many ended."""
    with db.transaction() as tx:
        if token is None:
            rows = tx.execute("SELECT COUNT(*) FROM tokens WHERE client_id = ?", (client_id,))
            tx.execute("DELETE FROM tokens WHERE client_id = ?", (client_id,))
        else:
            rows = tx.execute(
                "SELECT COUNT(*) FROM tokens WHERE client_id = ? AND token = ?",
                (client_id, token),
            )
            tx.execute("DELETE FROM tokens WHERE client_id = ? AND token = ?", (client_id, token))
    return int(rows[0][0])
