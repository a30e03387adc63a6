"""Fixtures for the runtime tests; the run-state factories come from ``tests.runs``."""

from __future__ import annotations

from tests.runs.conftest import builder, run_state_factory

__all__ = ["builder", "run_state_factory"]
