"""Archive in an S3 bucket (AWS, MinIO, Ceph, any S3-compatible endpoint).

A single-object PUT is atomic in S3: the key shows the whole old object or the whole new
one. Publication order (object, sidecar, manifest) therefore gives the same guarantee as the
local backend's temp-file-and-rename. Credentials come from boto3's usual chain (environment,
profile, instance role), never from the retention policy.
"""

from __future__ import annotations

from typing import Any, Protocol

from botocore.exceptions import (  # type: ignore[import-untyped]  # botocore ships no types
    BotoCoreError,
    ClientError,
)

from runstate.errors import ArchiveError
from runstate.retention.backends import BlobArchive

__all__ = ["S3Archive", "S3Client"]

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Client(Protocol):
    """The part of a boto3 S3 client the archive uses; tests may pass any such object."""

    def put_object(self, **kwargs: Any) -> Any: ...

    def get_object(self, **kwargs: Any) -> Any: ...

    def delete_object(self, **kwargs: Any) -> Any: ...

    def get_paginator(self, operation_name: str) -> Any: ...


def _default_client(endpoint_url: str | None, region_name: str | None) -> S3Client:
    import boto3  # type: ignore[import-untyped]  # boto3 ships no types
    from botocore.config import Config  # type: ignore[import-untyped]

    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        # S3-compatible servers on an IP or localhost cannot serve bucket subdomains.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    client: S3Client = boto3.client(
        "s3", endpoint_url=endpoint_url, region_name=region_name, config=config
    )
    return client


class S3Archive(BlobArchive):
    """Segments and manifests under ``s3://<bucket>/<prefix>/<topic>/<partition:05d>/``.

    Args:
        bucket: Bucket name; it must exist (the archive does not create buckets, which
            carry access and lifecycle settings that belong to whoever owns them).
        prefix: Key prefix inside the bucket, without leading or trailing ``/``.
        endpoint_url: Endpoint of an S3-compatible server; None for AWS.
        region_name: Region for AWS; None lets boto3 decide.
        client: An S3 client to use instead of building one (shared sessions, tests).
        list_page_size: Keys per list request; None for the server's maximum (1000 on
            AWS). Lower it for servers that time out on large listings.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: S3Client | None = None,
        list_page_size: int | None = None,
    ) -> None:
        if not bucket:
            raise ArchiveError("an S3 archive needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self._client = client or _default_client(endpoint_url, region_name)
        self._pagination = {"PageSize": list_page_size} if list_page_size else {}

    def __repr__(self) -> str:
        return f"S3Archive({self.bucket!r}, {self.prefix!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def location(self) -> str:
        """``s3://bucket/prefix``, as written in a retention policy."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _failure(self, action: str, name: str, exc: Exception) -> ArchiveError:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return ArchiveError(
            f"{self.location}{where}: cannot {action} {name}: {exc}; check the endpoint,"
            " the bucket and the credentials in the environment"
        )

    def _write(self, name: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._failure("write", name, exc) from exc

    def _read(self, name: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(name))
            body: bytes = response["Body"].read()
            return body
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                raise ArchiveError(
                    f"{self.location}/{name} is missing; run `archive verify` on its partition"
                ) from exc
            raise self._failure("read", name, exc) from exc
        except BotoCoreError as exc:
            raise self._failure("read", name, exc) from exc

    def _delete(self, name: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except (BotoCoreError, ClientError) as exc:
            raise self._failure("delete", name, exc) from exc

    def _scan(self, directory: str, *, dirs: bool) -> list[str]:
        base = self._key(directory).rstrip("/") + "/"
        paginator = self._client.get_paginator("list_objects_v2")
        names: list[str] = []
        try:
            pages = paginator.paginate(
                Bucket=self.bucket,
                Prefix=base,
                Delimiter="/",
                PaginationConfig=self._pagination,
            )
            for page in pages:
                if dirs:
                    names += [
                        p["Prefix"][len(base) :].rstrip("/") for p in page.get("CommonPrefixes", [])
                    ]
                else:
                    names += [o["Key"][len(base) :] for o in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as exc:
            raise self._failure("list", directory, exc) from exc
        return names

    def _list(self, directory: str) -> list[str]:
        return self._scan(directory, dirs=False)

    def _list_dirs(self, directory: str) -> list[str]:
        return self._scan(directory, dirs=True)
