"""Fixtures of the group tests."""

from __future__ import annotations

import pytest

from group_helpers import make_group
from mlspy.group import Group


@pytest.fixture
def groups() -> list[Group]:
    return make_group(4)
