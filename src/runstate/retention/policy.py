"""The retention policy file: how long events stay hot, where they go, what gets masked.

One YAML file (``examples/retention-policy.yaml`` shows every key) decides, per topic:

* ``hot``: how long events stay in Kafka, e.g. ``7d`` or ``12h``;
* ``archive``: whether and where they are archived (``local:<path>`` or
  ``s3://bucket/prefix`` with an optional ``endpoint`` for S3-compatible servers);
* ``archive_retention``: how long the archive keeps them, or ``forever``;
* ``hold_archive``: for a topic that is *not* archived, where ``retention apply`` keeps the
  held runs' records before trimming it (without one, legal holds stop its trimming);
* ``personal_data``: per event type, per field: ``keep``, ``mask`` or ``drop``;

and, for all topics, ``legal_holds``: run ids whose records nothing may delete. A hold keeps
its runs' records only: the rest of a topic is trimmed and expired as usual (see
:mod:`runstate.retention.holds`).

``hot`` and ``archive_retention`` are per topic, not per event type: Kafka trims a
partition by offset and the archive deletes whole segments, so neither can keep one event
type longer than its neighbours. ``personal_data`` is per event type because masking works
on decoded events.

Personal-data rules are checked against the event classes at load time, so a typo in a field
name fails the load instead of silently leaving that field unmasked in the archive.
"""

from __future__ import annotations

import enum
import re
import types
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError

from runstate.durations import format_duration, parse_duration
from runstate.errors import PolicyError
from runstate.schemas.events import EVENT_TYPES, AgentEvent

if TYPE_CHECKING:
    from runstate.retention.backends import ArchiveStore

__all__ = [
    "ArchiveConfig",
    "PersonalDataAction",
    "RetentionPolicy",
    "TopicPolicy",
    "format_duration",
    "load_policy",
    "open_store",
    "parse_duration",
    "parse_policy",
]

_ENVELOPE: Final = frozenset(AgentEvent.model_fields)


def _parse_retention(text: object) -> timedelta | None:
    if text is None or text == "forever":
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{exc}, or 'forever'") from None


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Retention = Annotated[timedelta | None, BeforeValidator(_parse_retention)]


class PersonalDataAction(enum.StrEnum):
    """What the archive does with a personal-data field."""

    KEEP = "keep"  # archived as is (lists it as reviewed, unlike leaving it out)
    MASK = "mask"  # replaced by a keyed ``mask:<key id>:<hex>``: joinable, not readable
    DROP = "drop"  # replaced by null, or the field's default when it is not nullable


class ArchiveConfig(BaseModel):
    """Where a topic is archived."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    target: str = Field(description="local:<path> or s3://bucket[/prefix]")
    endpoint: str | None = Field(None, description="URL of an S3-compatible server")

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        if value.startswith("local:") and len(value) > len("local:"):
            return value
        if value.startswith("s3://") and value[len("s3://") :].split("/", 1)[0]:
            return value
        raise ValueError(f"{value!r}: use 'local:<path>' or 's3://bucket/prefix'")

    @field_validator("endpoint")
    @classmethod
    def _endpoint_for_s3(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not str(info.data.get("target", "")).startswith("s3://"):
            raise ValueError("only an s3:// target takes an endpoint")
        if not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"{value!r}: an endpoint is an http(s):// URL")
        return value

    @property
    def kind(self) -> Literal["local", "s3"]:
        """Which backend the target names."""
        return "local" if self.target.startswith("local:") else "s3"

    @property
    def local_path(self) -> Path:
        """Directory of a ``local:`` target."""
        return Path(self.target[len("local:") :]).expanduser()

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        """Bucket and key prefix of an ``s3://`` target."""
        bucket, _, prefix = self.target[len("s3://") :].partition("/")
        return bucket, prefix.strip("/")


def _field_shape(model: type[AgentEvent], name: str) -> tuple[bool, Any]:
    """(holds text or bytes, value ``drop`` writes or ``...`` if none fits) of a field."""
    info = model.model_fields[name]
    annotation = info.annotation
    members: tuple[Any, ...] = (annotation,)
    if get_origin(annotation) in (Union, types.UnionType):
        members = get_args(annotation)
    concrete = [m for m in members if m is not type(None)]
    textual = bool(concrete) and all(m in (str, bytes) for m in concrete)
    if len(concrete) < len(members):
        replacement: Any = None
    elif info.default_factory is not None:
        replacement = info.default_factory()  # type: ignore[call-arg]
    elif not info.is_required():
        replacement = info.default
    else:
        replacement = ...
    return textual, replacement


class TopicPolicy(BaseModel):
    """Retention of one topic. Field order matters: validators read earlier fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hot: Duration
    archive: ArchiveConfig | None = None
    hold_archive: ArchiveConfig | None = None
    archive_retention: Retention = None
    personal_data: dict[str, dict[str, PersonalDataAction]] = Field(default_factory=dict)

    @field_validator("hold_archive")
    @classmethod
    def _hold_archive_for_unarchived(
        cls, value: ArchiveConfig | None, info: ValidationInfo
    ) -> ArchiveConfig | None:
        archive = info.data.get("archive")
        if value is not None and archive is not None and archive.enabled:
            raise ValueError(
                "an archived topic keeps held runs' records in its archive; hold_archive is"
                " for topics that are not archived"
            )
        return value

    @field_validator("archive_retention")
    @classmethod
    def _not_shorter_than_hot(
        cls, value: timedelta | None, info: ValidationInfo
    ) -> timedelta | None:
        hot = info.data.get("hot")
        if value is not None and hot is not None and value < hot:
            raise ValueError(
                f"{format_duration(value)} is shorter than hot ({format_duration(hot)}): the"
                " archive would drop events Kafka still holds; make it at least as long as"
                " hot, or 'forever'"
            )
        return value

    @field_validator("personal_data")
    @classmethod
    def _fields_exist(
        cls, value: dict[str, dict[str, PersonalDataAction]]
    ) -> dict[str, dict[str, PersonalDataAction]]:
        normalised: dict[str, dict[str, PersonalDataAction]] = {}
        for event_type, fields in value.items():
            short = event_type.rsplit(".", 1)[-1]
            model = EVENT_TYPES.get(short)
            if model is None:
                raise ValueError(
                    f"{event_type}: unknown event type; known: {', '.join(sorted(EVENT_TYPES))}"
                )
            for name, action in fields.items():
                where = f"{event_type}.{name}"
                if name in _ENVELOPE:
                    raise ValueError(f"{where}: envelope fields route events and stay as they are")
                if name not in model.model_fields:
                    known = ", ".join(sorted(set(model.model_fields) - _ENVELOPE))
                    raise ValueError(f"{where}: {short} has no such field; fields: {known}")
                textual, replacement = _field_shape(model, name)
                if action is PersonalDataAction.MASK and not textual:
                    raise ValueError(f"{where}: only text fields can be masked; use drop")
                if action is PersonalDataAction.DROP and replacement is ...:
                    raise ValueError(
                        f"{where}: required and not nullable, so it cannot be dropped; use mask"
                    )
            normalised.setdefault(short, {}).update(fields)
        return normalised

    @property
    def archived(self) -> bool:
        """True when the topic is archived (an archive section with ``enabled: true``)."""
        return self.archive is not None and self.archive.enabled

    def drop_value(self, event_type: str, field: str) -> Any:
        """What ``drop`` writes into ``field``: null, or the default of a non-nullable field."""
        return _field_shape(EVENT_TYPES[event_type], field)[1]


class RetentionPolicy(BaseModel):
    """The whole policy file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    legal_holds: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    topics: dict[str, TopicPolicy]

    @property
    def held_run_ids(self) -> frozenset[str]:
        """Run ids under legal hold: no deletion may touch their events."""
        return frozenset(self.legal_holds)

    def topic(self, name: str) -> TopicPolicy:
        """The policy of one topic.

        Raises:
            PolicyError: the policy does not mention the topic; add it under ``topics``.
        """
        try:
            return self.topics[name]
        except KeyError:
            raise PolicyError(
                f"topic {name!r} has no retention policy; add it under 'topics'"
                f" (configured: {', '.join(sorted(self.topics)) or 'none'})"
            ) from None


def _describe(exc: PydanticValidationError, source: str) -> str:
    problems = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{source}: {loc}: {message}")
    return "\n".join(problems)


def parse_policy(text: str, *, source: str = "policy.yaml") -> RetentionPolicy:
    """Validate a policy from YAML text.

    Args:
        text: The YAML document.
        source: File name to start error messages with.

    Raises:
        PolicyError: bad YAML or a bad value; each problem is reported on its own line
            as ``policy.yaml: topics.events.hot: <what is wrong>``.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise PolicyError(f"{source}: expected a mapping with a 'topics' key at the top level")
    try:
        return RetentionPolicy.model_validate(document)
    except PydanticValidationError as exc:
        raise PolicyError(_describe(exc, source)) from exc


def load_policy(path: Path | str) -> RetentionPolicy:
    """Read and validate a policy file.

    Raises:
        PolicyError: the file cannot be read or is invalid; the message names the key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(
            f"{path}: cannot read the retention policy ({exc.strerror or exc}); check the path"
            " and that you may read it"
        ) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"{path}: the retention policy is not UTF-8 text (byte {exc.object[exc.start]:#04x}"
            f" at offset {exc.start}); save it as UTF-8"
        ) from exc
    return parse_policy(text, source=path.name)


def open_store(archive: ArchiveConfig) -> ArchiveStore:
    """The archive store a topic's ``archive`` section names."""
    if archive.kind == "local":
        from runstate.retention.local import LocalArchive

        return LocalArchive(archive.local_path)
    from runstate.retention.s3 import S3Archive

    bucket, prefix = archive.bucket_and_prefix
    return S3Archive(bucket, prefix, endpoint_url=archive.endpoint)
