"""Fixtures of the operator unit tests."""

from __future__ import annotations

import pytest
from operator_factory import SAMPLES, sample_fms

from fms_operator.api.resource import FMS


@pytest.fixture(params=SAMPLES, ids=lambda p: p.stem)
def sample(request) -> FMS:
    return sample_fms(request.param)
