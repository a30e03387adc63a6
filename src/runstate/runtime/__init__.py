"""The run-state processor on confluent-kafka, exactly-once with Kafka transactions (issue 10).

Small modules, one concern each: ``store`` (the local table behind one interface, RocksDB or
memory), ``checkpoint`` (the commit protocol: one Kafka transaction per interval), ``recovery``
(restore from the changelog), the poll loop, and standbys. The run domain it drives
(``runstate.runs``) knows nothing of it.
"""
