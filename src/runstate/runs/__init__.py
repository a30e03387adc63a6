"""The run domain: what a run is and how events change it, independent of any runtime.

``state`` (:class:`~runstate.runs.state.RunState` and its parts), ``reducer`` (the pure
``(state, event) -> outcome`` and its ``_rules``), ``state_codec`` (Avro bytes of states and
changes), ``run_view`` (the one JSON form, both ways, and the query filters), ``deadlines``
(approval expiry events), ``query_client`` (the query API over HTTP), and how a run lives in
an ordered key space: ``keyspace`` (the key scheme), ``layout`` (a run as a head plus
collection entries; an event writes only what it changed) and ``run_index`` (list queries and
due approvals from indexes kept beside the runs). No Kafka client, no RocksDB: the live
processor, replay, the agent SDK and the tests share all of it.
"""
