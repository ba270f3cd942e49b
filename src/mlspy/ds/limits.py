"""What one client (or one address) may cost the Delivery Service: the operator's limits.

Per-client caps on WebSockets and on request and byte rates, per-address caps on the
unauthenticated endpoints, and timeouts. ``mlspy serve`` fills them from its configuration
(``ds/config.py``); the defaults suit a small server.
"""

from __future__ import annotations

from dataclasses import dataclass

# The largest WebSocket frame a client may send (larger: closed with 1009). Frames carry acks
# and submissions; a submission that does not fit (a commit with a large Welcome) goes over
# HTTP, whose body limit is the service's ``max_message`` times three.
WS_MAX_FRAME = 1 << 20


@dataclass(frozen=True)
class Limits:
    # WebSockets open at once per client (device); one more is refused with close code 4429.
    max_sockets_per_client: int = 4
    # Authenticated requests: a token bucket per client (sustained rate and burst).
    requests_per_second: float = 200.0
    request_burst: int = 400
    # Request body bytes per client (sustained rate and burst), so a client cannot push
    # megabytes a second for long.
    bytes_per_second: int = 1_000_000
    byte_burst: int = 8_000_000
    # Unauthenticated requests (challenge, register, token, recover): per address (many
    # users may share one address behind a NAT; a challenge costs a MAC, no database write).
    anonymous_per_second: float = 50.0
    anonymous_burst: int = 500
    # A WebSocket that neither receives a message nor sends anything for this long is closed
    # (the server pings first; a live client answers pings without the application's help).
    ws_idle_timeout: float = 300.0
    # An open WebSocket checks its token again this often: a revoked or expired token ends
    # the socket within this time (close code 4401).
    token_recheck: float = 15.0
    # HTTP keep-alive connections idle this long are closed; a request whose head or body
    # is not complete within this long is answered 408 / dropped.
    http_idle_timeout: float = 15.0
    request_timeout: float = 30.0
