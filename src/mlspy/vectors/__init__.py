"""Conformance checks against the official MLS test vectors (``FORMAT.md`` of mls-implementations).

``runner`` finds files and aggregates results; each ``kind_*`` module checks one kind.
"""
