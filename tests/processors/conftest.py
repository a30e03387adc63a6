"""Fixtures for the processor tests; the run-state factories come from ``tests.runs``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.runs.conftest import builder, run_state_factory

if TYPE_CHECKING:
    from tests.processors.processor_support import Deployment, DeploymentFactory

__all__ = ["builder", "deployment_factory", "run_state_factory"]


@pytest.fixture
def deployment_factory(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[DeploymentFactory]:
    """``make(hint, partitions)``: a deployment with its own topics; closed after the test."""
    from tests.processors.processor_support import Deployment

    made: list[Deployment] = []

    def make(hint: str, partitions: int) -> Deployment:
        d = Deployment(kafka_bootstrap, unique_name(hint), partitions, tmp_path)
        d.ensure_topics()
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            d.close()
