"""mlspy: Messaging Layer Security (RFC 9420) in Python."""

__version__ = "0.1.0"
