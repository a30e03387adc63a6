"""``runstate erase``: erase a data subject by destroying its data keys."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer


def erase(
    subject: Annotated[
        str | None, typer.Option("--subject", help="the data subject id the agent gave")
    ] = None,
    run: Annotated[
        str | None,
        typer.Option("--run", help="a run whose data subject is the run itself (the default)"),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option("--by", help="who erases, for the record [default: the Kafka user or login]"),
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers [RUNSTATE_*]")
    ] = None,
) -> None:
    """Erase a data subject: destroy every version of its data key (a tombstone in the
    data-keys topic, or the file of the local key store), then record DataSubjectErased in
    the erasures topic.

    Afterwards every copy of the subject's personal fields (topics, changelog, archive,
    backups) is unreadable and shows as "erased"; the rest of each event stays readable and
    replayable. Needs the master key settings the writers use (RUNSTATE_MASTER_KEY[_FILE],
    RUNSTATE_KEY_STORE). Keeps a mirror of the data-keys topic in RUNSTATE_KEY_CACHE_DIR
    (default .runstate/key-cache). Cannot be undone.
    """
    from runstate.crypto import erase_subject, key_manager_from_settings, publish_erasure
    from runstate.crypto._setup import key_store_from_settings
    from runstate.settings import load_settings
    from runstate.streams.clients import require_reachable
    from runstate.streams.topics import TopicNames

    if (subject is None) == (run is None):
        raise typer.BadParameter("give exactly one of --subject ID and --run RUN_ID")
    who = subject if subject is not None else run
    assert who is not None
    s = load_settings()
    key_manager_from_settings(s, required=True)  # the writers' deployment, not another
    servers = bootstrap or s.bootstrap_servers
    require_reachable(servers)  # before anything is destroyed: the record must follow
    # A Kafka store reads the data-keys topic into the key cache folder (only what was
    # written since the last run there) and finds the subject's versions by one prefix read.
    store = key_store_from_settings(s, bootstrap_servers=servers, cached=True)
    try:
        erasure = erase_subject(
            store,
            who,
            by=by or s.kafka_sasl_username or getpass.getuser(),
            runs=(run,) if run is not None else (),
        )
    finally:
        store.close()
    names = TopicNames(s.topic_prefix)
    publish_erasure(servers, names, erasure)
    versions = ", ".join(erasure.key_versions)
    typer.echo(
        f"erased data subject {who!r}: {len(erasure.key_versions)} data key version(s)"
        f" destroyed ({versions}); recorded as DataSubjectErased {erasure.erasure_id} in"
        f" {names.erasures}"
    )
