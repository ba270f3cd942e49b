"""The Delivery Service and Authentication Service (RFC 9750): ``mlspy serve``."""
