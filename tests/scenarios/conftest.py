"""Fixtures of the scenario tests: both handshake wire formats."""

from __future__ import annotations

import pytest
from hub import WIRE_FORMATS

from mlspy.messages import WireFormat


@pytest.fixture(params=list(WIRE_FORMATS), ids=str)
def wire(request: pytest.FixtureRequest) -> WireFormat:
    return WIRE_FORMATS[request.param]
