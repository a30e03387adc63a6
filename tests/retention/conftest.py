"""Fixtures for the archive tests: record and segment factories, and both archive backends.

The S3 backend runs against moto's S3 server over real HTTP on 127.0.0.1 (a free port), so
the same parametrised tests exercise boto3, signing, pagination and error mapping.
``RUNSTATE_ARCHIVE_BACKENDS=local`` leaves S3 out: ``make mutation`` sets it, since no
mutated module is a backend and each mutant would otherwise run every archive test twice.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config  # type: ignore[import-untyped]
from moto.server import ThreadedMotoServer

from runstate.retention import (
    ArchivedRecord,
    ArchiveSegment,
    BlobArchive,
    LocalArchive,
    S3Archive,
    build_segment,
)

from .support import CREATED, T0_MS, RecordFactory, SegmentFactory, event_value


@pytest.fixture
def record_factory() -> RecordFactory:
    """Records at the given offsets, one second apart, keyed by ``run-<offset // 10>``."""

    def make(
        offsets: Sequence[int], *, run_ids: Sequence[str] | None = None, step_ms: int = 1000
    ) -> list[ArchivedRecord]:
        return [
            ArchivedRecord(
                offset=o,
                timestamp_ms=T0_MS + o * step_ms,
                key=(run_ids[i] if run_ids else f"run-{o // 10}").encode(),
                value=event_value(body=f"event {o}".encode()),
                headers=(("trace", f"t{o}".encode()), ("empty", None)),
            )
            for i, o in enumerate(offsets)
        ]

    return make


@pytest.fixture
def segment_factory(record_factory: RecordFactory) -> SegmentFactory:
    """A segment of ``topic``/``partition`` covering ``first..last`` (every offset a record)."""

    def make(
        first: int,
        last: int,
        *,
        topic: str = "runstate.events",
        partition: int = 0,
        **kwargs: Any,
    ) -> ArchiveSegment:
        records = record_factory(range(first, last + 1))
        return build_segment(topic, partition, records, created_at=CREATED, **kwargs)

    return make


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 at a free port, with dummy credentials in the env."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.delenv("AWS_PROFILE", raising=False)
        env.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket per test, so tests never see each other's objects."""
    name = f"archive-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, config=Config(s3={"addressing_style": "path"})
    )
    client.create_bucket(Bucket=name)
    return name


#: The backends ``archive_store`` runs each test on (see the module docstring).
BACKENDS = os.environ.get("RUNSTATE_ARCHIVE_BACKENDS", "local,s3").split(",")


@pytest.fixture(params=BACKENDS)
def archive_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobArchive:
    """Each backend in turn, empty; tests taking it run once per backend."""
    if request.param == "local":
        return LocalArchive(tmp_path / "archive")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Archive(bucket, "tier/archive", endpoint_url=endpoint)
