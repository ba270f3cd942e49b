"""The client SDK (asyncio): ``Client`` ties an identity, a state store and a Delivery Service
connection together and handles commit races, catch-up, removal and rejoining. What happens
is told as typed events (``mlspy.client.events``), kept in the client's inbox until the
application acknowledges them."""

from mlspy.client.events import (
    DeviceAdded,
    DeviceRemoved,
    EpochChanged,
    Event,
    Joined,
    JoinRequest,
    KeysUpdated,
    MemberAdded,
    MemberLeft,
    MemberRemoved,
    Message,
    Removed,
)
from mlspy.client.sdk import Client, member_names
from mlspy.client.who import member_devices

__all__ = [
    "Client",
    "DeviceAdded",
    "DeviceRemoved",
    "EpochChanged",
    "Event",
    "JoinRequest",
    "Joined",
    "KeysUpdated",
    "MemberAdded",
    "MemberLeft",
    "MemberRemoved",
    "Message",
    "Removed",
    "member_devices",
    "member_names",
]
