"""The client SDK (asyncio): ``Client`` ties an identity, a state store and a Delivery Service
connection together and handles commit races, catch-up, removal and rejoining."""

from mlspy.client.sdk import Client, Event, member_names

__all__ = ["Client", "Event", "member_names"]
