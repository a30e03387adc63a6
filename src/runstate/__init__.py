"""runstate: durable state for AI agents, kept on Kafka."""

#: The one place the version is written: the wheel's metadata reads it from here
#: (``[tool.hatch.version]`` in pyproject.toml).
__version__ = "0.1.0"
