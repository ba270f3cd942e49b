"""The key schedule (RFC 9420 §8), PSKs, transcript hashes and the secret tree (§9)."""
