"""``runstate keys``: the master key that wraps the per-subject data keys."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="The master key wrapping the data keys of personal fields (docs/security.md).",
    no_args_is_help=True,
)


@app.command(name="rotate")
def rotate(
    bootstrap: Annotated[
        str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers [RUNSTATE_*]")
    ] = None,
) -> None:
    """Re-wrap every stored data key under the master key RUNSTATE_MASTER_KEY[_FILE] (the
    new one), unwrapping each with the key that wrapped it: the new one or one of
    RUNSTATE_MASTER_KEY_ACCEPTED (the old one). No sealed value changes. Safe to run again;
    keys erased during the run stay erased.

    Reads the data-keys topic into the key cache folder (RUNSTATE_KEY_CACHE_DIR) and writes
    one record per re-wrapped key. Exit 1 when some keys are wrapped by a master key not
    given (they are left as they are). The steps of a rotation: docs/security.md.
    """
    from runstate.crypto import accepted_key_managers, key_manager_from_settings
    from runstate.crypto._rotation import rotate_master_key
    from runstate.crypto._setup import key_store_from_settings
    from runstate.errors import MasterKeyError
    from runstate.settings import load_settings
    from runstate.streams.clients import require_reachable

    s = load_settings()
    keys = key_manager_from_settings(s, required=True)
    assert keys is not None
    accepted = accepted_key_managers(s)
    servers = bootstrap or s.bootstrap_servers
    if s.key_store == "kafka":
        require_reachable(servers)
    store = key_store_from_settings(s, bootstrap_servers=servers, cached=True)
    try:
        done = rotate_master_key(store, keys, accepted)
    finally:
        store.close()
    typer.echo(
        f"re-wrapped {done.rewrapped} data key(s) under master key {done.master_key_id}"
        f" ({done.current} already under it); {done.erasures_reapplied} erased during the"
        " run tombstoned again"
    )
    if done.unknown:
        ids = ", ".join(f"{k} ({n})" for k, n in sorted(done.unknown.items()))
        raise MasterKeyError(
            f"{sum(done.unknown.values())} data key(s) are wrapped by master keys not given"
            f" ({ids}): add them to RUNSTATE_MASTER_KEY_ACCEPTED and run again"
        )
