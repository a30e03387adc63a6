"""Start a processor worker in this process: topics first, then faust's Worker."""

from __future__ import annotations

import logging

import faust

from runstate.processors.app import build_processor
from runstate.processors.config import ProcessorConfig
from runstate.processors.local_state import set_aside_damaged_stores
from runstate.streams.topics import admin_client, ensure_topics, topic_specs

__all__ = ["run_worker"]

_LEVELS = {
    "crit": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


def run_worker(config: ProcessorConfig) -> None:
    """Create or verify the topics, then run the worker until SIGTERM/SIGINT.

    Raises:
        TopicMismatch: existing topics differ from what the processor needs.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    set_aside_damaged_stores(config.data_dir)
    ensure_topics(
        admin_client(config.bootstrap_servers),
        topic_specs(config.names, partitions=config.partitions),
        replication_factor=config.replication_factor,
    )
    worker = build_processor(config)
    level = _LEVELS.get(config.log_level.lower(), logging.WARNING)
    # faust's worker sets the root logger only; without this, faust and aiokafka build a
    # DEBUG log record for every message sent (measured: ~12% of a busy worker's CPU).
    for name in ("faust", "aiokafka", "mode"):
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    faust.Worker(worker.app, loglevel=config.log_level, quiet=True).execute_from_commandline()
