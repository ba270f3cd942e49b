"""The MLS group engine (RFC 9420 §10-§12): KeyPackages, proposals, commits, Welcome,
external joins, application messages, and a public (secret-free) view of a group."""
