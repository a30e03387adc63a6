"""Who owns which partition: the consumer group's own member metadata, no extra topic.

Every worker joins the group with a ``client.id`` that carries its query URL
(:func:`client_id`), so describing the group (one admin request, answered by the group
coordinator) gives the partition -> URL map the query API routes with. The map is cached
for ``refresh_s`` and re-read on demand after a miss, so a rebalance is seen within about a
second without asking the coordinator on every query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaException

from runstate.streams import clients

__all__ = ["GroupMembers", "GroupOwners", "client_id", "parse_client_id"]

log = logging.getLogger(__name__)

_PREFIX = "runstate-worker"


def client_id(worker_id: str, url: str) -> str:
    """The ``client.id`` a worker joins with: names it and says where it answers queries."""
    return f"{_PREFIX} {worker_id} {url}"


def parse_client_id(text: str) -> tuple[str, str] | None:
    """``(worker_id, url)`` from a :func:`client_id`, or None for any other client."""
    parts = text.split(" ")
    if len(parts) != 3 or parts[0] != _PREFIX:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True, slots=True)
class GroupMembers:
    """One reading of the group: each member's URL and the partitions it owns.

    ``workers`` and ``worker_ids`` say the same by worker id (unique in a group, as it fixes
    the ``transactional.id``), which standby placement uses: URLs need not be unique when
    workers serve no queries.
    """

    owners: Mapping[int, str]
    urls: tuple[str, ...]
    read_at: float
    workers: Mapping[int, str] = field(default_factory=dict)
    worker_ids: tuple[str, ...] = ()


#: Describes the group: returns ``[(client_id, [partition, ...]), ...]`` for the topic.
Describe = Callable[[], list[tuple[str, list[int]]]]


class GroupOwners:
    """The partition -> worker URL map of a consumer group, cached.

    Args:
        describe: Reads the group's members (see :func:`kafka_describe`).
        refresh_s: How long one reading is used before the group is described again.
    """

    def __init__(self, describe: Describe, *, refresh_s: float = 1.0) -> None:
        self._describe = describe
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._members = GroupMembers({}, (), float("-inf"))

    def members(self, *, fresh: bool = False) -> GroupMembers:
        """The latest reading; re-read if older than ``refresh_s`` (or ``fresh``)."""
        with self._lock:
            age = time.monotonic() - self._members.read_at
            if fresh or age >= self._refresh_s:
                self._members = self._read()
            return self._members

    def owner_url(self, partition: int) -> str | None:
        url = self.members().owners.get(partition)
        if url is None:  # maybe a rebalance just finished: look once more, now
            url = self.members(fresh=True).owners.get(partition)
        return url

    def _read(self) -> GroupMembers:
        owners: dict[int, str] = {}
        urls: list[str] = []
        try:
            described = self._describe()
        except (KafkaException, TimeoutError) as exc:
            log.warning("cannot describe the processor group: %s", exc)
            old = self._members
            return GroupMembers(
                dict(old.owners), old.urls, time.monotonic(), dict(old.workers), old.worker_ids
            )
        workers: dict[int, str] = {}
        ids: list[str] = []
        for cid, partitions in described:
            parsed = parse_client_id(cid)
            if parsed is None:
                continue
            worker, url = parsed
            urls.append(url)
            ids.append(worker)
            for p in partitions:
                owners[p] = url
                workers[p] = worker
        return GroupMembers(
            owners,
            tuple(sorted(set(urls))),
            time.monotonic(),
            workers,
            tuple(sorted(set(ids))),
        )


def kafka_describe(
    bootstrap_servers: str, group_id: str, topic: str, *, timeout_s: float = 5.0
) -> Describe:
    """A :data:`Describe` over the real group, with one admin client kept for it."""
    admin = clients.admin_client(bootstrap_servers)

    def describe() -> list[tuple[str, list[int]]]:
        future = admin.describe_consumer_groups([group_id], request_timeout=timeout_s)[group_id]
        group = future.result(timeout=timeout_s)
        return [
            (
                m.client_id,
                [tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic],
            )
            for m in group.members
        ]

    return describe
