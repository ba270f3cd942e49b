"""The ratchet tree (RFC 9420 §4, §7) and its array-based tree math (Appendix C)."""
