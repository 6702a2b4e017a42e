"""The operator process the integration tests of this folder share, one per test module."""

from __future__ import annotations

import pytest
from operator_harness import install_crd, running_operator


@pytest.fixture(scope="module")
def operator(cluster, tmp_path_factory):
    install_crd(cluster)
    with running_operator(cluster, tmp_path_factory.mktemp("operator") / "operator.log") as op:
        yield op
