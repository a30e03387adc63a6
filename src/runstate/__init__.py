"""runstate: durable state for AI agents, kept on Kafka."""

__version__ = "0.1.0"
