"""The oracle: trusts nothing the processor says about itself.

It reads the events back from the events topic (the source of truth), folds each run with
the pure reducer in log order - exactly what a correct processor does - and compares with
what the processor published:

* the latest-state topic: the *last* record per run (what compaction keeps and what a reader
  of the topic ends up with), which must equal the folded state's summary (a whole-state
  record, as the faust processor writes, is read as its summary);
* the table's changelog: the last record per run (what the next restore loads), same rule;
* the state-changes topic: for every ``(run_id, version)`` all copies are byte-identical and
  equal to the change the reducer makes for that version, and versions are exactly 1..N;
* the query API, when a worker is given: ``GET /runs/{id}`` equals the folded state;
* the producers' acknowledgements: every acknowledged event is in the log;
* side effects, when counts are given: no effect performed twice for one key.

Counted as *lost*: an acknowledged event missing, a run or version missing, a state behind
the fold. *Doubled*: one ``(run_id, version)`` with two contents, an effect performed twice.
*Wrong*: a state or change that differs from the fold in any other way (a stale write that
landed last, a change the reducer would not have made).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runstate.runs.reducer import Applied, apply
from runstate.runs.run_view import run_to_json
from runstate.runs.state import RunState
from runstate.runs.state_codec import decode_change, decode_state, encode_change
from runstate.runs.summary import RunSummary, decode_summary, summarize
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import SingleObjectCodec
from runstate.schemas.convert import decode_event
from runstate.schemas.events import AgentEvent
from runstate.streams.reader import RawRecord, read_topic
from runstate.streams.schema_topic import SchemaTopicSource
from runstate.streams.topics import TopicNames

#: Problems listed per kind in a verdict (the counts are always complete).
_SHOWN = 8


@dataclass
class Expected:
    """The fold of the events topic: final state and every change, per run."""

    states: dict[str, RunState]
    changes: dict[tuple[str, int], bytes]
    event_ids: set[str]
    events: int
    undecodable: int


def fold_log(records: Iterable[RawRecord], codec: SingleObjectCodec | None = None) -> Expected:
    """Fold every decodable, correctly keyed event per run in offset order.

    ``codec`` should resolve writer schemas as the processor does (the schemas topic), or
    an event written with a newer compatible schema would count as undecodable here only.
    """
    per_run: dict[str, list[tuple[int, AgentEvent]]] = defaultdict(list)
    ids: set[str] = set()
    events = undecodable = 0
    for r in records:
        if r.value is None:
            undecodable += 1
            continue
        try:
            e = decode_event(r.value, codec=codec)
        except Exception:
            undecodable += 1
            continue
        events += 1
        ids.add(e.event_id)
        if r.key is not None and r.key == e.run_id.encode():
            per_run[e.run_id].append((r.offset, e))
    states: dict[str, RunState] = {}
    changes: dict[tuple[str, int], bytes] = {}
    for run_id, pairs in per_run.items():
        state: RunState | None = None
        for offset, e in sorted(pairs, key=lambda p: p[0]):
            outcome = apply(state, e, offset=offset)
            if isinstance(outcome, Applied):
                state = outcome.state
                changes[(run_id, state.version)] = encode_change(outcome.change)
        if state is not None:
            states[run_id] = state
    return Expected(states, changes, ids, events, undecodable)


@dataclass
class Verdict:
    """What the oracle found; ``clean`` when nothing was lost, doubled or wrong."""

    runs: int = 0
    events: int = 0
    changes: int = 0
    change_copies: int = 0
    lost: int = 0
    doubled: int = 0
    wrong: int = 0
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.wrong == 0

    def note(self, kind: str, what: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.problems[kind]) < _SHOWN:
            self.problems[kind].append(what)

    def summary(self) -> str:
        head = (
            f"runs={self.runs} events={self.events} changes={self.changes}"
            f" (+{self.change_copies} identical copies) lost={self.lost}"
            f" doubled={self.doubled} wrong={self.wrong}"
        )
        details = [f"  {k}: {v}" for k, vs in self.problems.items() for v in vs]
        return "\n".join([head, *details])


def _last_per_key(records: Iterable[RawRecord]) -> dict[bytes, bytes | None]:
    last: dict[bytes, tuple[int, int, bytes | None]] = {}
    for r in records:
        if r.key is None:
            continue
        have = last.get(r.key)
        if have is None or (r.partition, r.offset) > (have[0], have[1]):
            last[r.key] = (r.partition, r.offset, r.value)
    return {k: v for k, (_p, _o, v) in last.items()}


def _compare_state(
    v: Verdict, where: str, run_id: str, want: RunState | RunSummary, raw: bytes | None
) -> None:
    """``raw`` against the fold: a state, or (``want`` a summary) a latest-state record."""
    if raw is None:
        v.note("lost", f"{where}: run {run_id} missing")
        return
    try:
        have = decode_summary(raw) if isinstance(want, RunSummary) else decode_state(raw)
    except Exception as exc:
        v.note("wrong", f"{where}: run {run_id} undecodable: {exc}")
        return
    if have == want:
        return
    if have.version < want.version:
        v.note("lost", f"{where}: run {run_id} at v{have.version}, fold is v{want.version}")
    else:
        v.note("wrong", f"{where}: run {run_id} v{have.version} differs from fold v{want.version}")


class Oracle:
    """Checks one deployment's topics (and optionally a worker's answers) against the fold."""

    def __init__(self, bootstrap: str, names: TopicNames) -> None:
        self.bootstrap = bootstrap
        self.names = names
        self.codec = SingleObjectCodec(
            default_catalog(), writer_source=SchemaTopicSource(bootstrap, names.schemas)
        )

    def read(self, topic: str) -> list[RawRecord]:
        return list(read_topic(self.bootstrap, topic, timeout_s=30))

    def expected(self) -> Expected:
        return fold_log(self.read(self.names.events), self.codec)

    def check(
        self,
        *,
        acked: Iterable[str] = (),
        query: Any | None = None,
        effects: Mapping[str, Mapping[str, Any]] | None = None,
        changelog: bool = True,
    ) -> Verdict:
        """Everything the processor published against the fold of the events topic.

        Args:
            acked: event ids the producers had confirmed; each must be in the log.
            query: a worker with ``get(path)`` (the HTTP query API) to ask about every run.
            effects: ``{kind: {key: EffectCount}}`` from the counting side-effect service.
            changelog: also check the table's changelog topic.
        """
        exp = self.expected()
        v = Verdict(runs=len(exp.states), events=exp.events, changes=len(exp.changes))
        for event_id in acked:
            if event_id not in exp.event_ids:
                v.note("lost", f"acknowledged event {event_id} is not in the events topic")
        self._check_changes(v, exp)
        latest = _last_per_key(self.read(self.names.latest_state))
        for run_id, want in exp.states.items():
            _compare_state(v, "latest-state", run_id, summarize(want), latest.get(run_id.encode()))
        if changelog:
            table = _last_per_key(self.read(self.names.changelog))
            for run_id, want in exp.states.items():
                _compare_state(v, "changelog", run_id, want, table.get(run_id.encode()))
        if query is not None:
            for run_id, want in exp.states.items():
                status, body = query.get(f"/runs/{run_id}")
                if status != 200:
                    v.note("lost", f"query: run {run_id} answered {status} {body}")
                    continue
                body.pop("served_by", None)
                body.pop("partition", None)
                if body != run_to_json(want):
                    v.note("wrong", f"query: run {run_id} v{body.get('version')} != fold")
        for kind, by_key in (effects or {}).items():
            for key, count in by_key.items():
                performed = count["effects"] if isinstance(count, Mapping) else count.effects
                if performed > 1:
                    v.note("doubled", f"effect {kind}/{key} performed {performed} times")
        return v

    def _check_changes(self, v: Verdict, exp: Expected) -> None:
        copies: dict[tuple[str, int], set[bytes]] = defaultdict(set)
        total = 0
        for r in self.read(self.names.state_changes):
            total += 1
            if r.value is None:
                v.note("wrong", f"state-changes: null record at {r.partition}@{r.offset}")
                continue
            try:
                c = decode_change(r.value)
            except Exception as exc:
                v.note("wrong", f"state-changes: undecodable at {r.partition}@{r.offset}: {exc}")
                continue
            copies[(c.run_id, c.version)].add(r.value)
        v.change_copies = max(0, total - len(copies))
        for key, contents in copies.items():
            want = exp.changes.get(key)
            if len(contents) > 1:
                v.note("doubled", f"change {key[0]} v{key[1]} has {len(contents)} contents")
            elif want is None:
                v.note("wrong", f"change {key[0]} v{key[1]} is not a version the fold reaches")
            elif want not in contents:
                v.note("wrong", f"change {key[0]} v{key[1]} differs from the reducer's")
        for key in exp.changes:
            if key not in copies:
                v.note("lost", f"change {key[0]} v{key[1]} missing")


def converge(
    oracle: Oracle,
    *,
    timeout_s: float,
    interval_s: float = 2.0,
    stable_checks: int = 8,
    **check: Any,
) -> tuple[Verdict, float]:
    """Check until clean or ``timeout_s``; the last verdict and the seconds it took.

    Outputs trail the events, so a verdict taken while the workers still catch up is not
    final; the scenario's bound decides when a difference counts. A verdict that stays the
    same for ``stable_checks`` checks in a row is final too (nothing is moving any more).
    """
    import time

    began = time.monotonic()
    last: tuple[int, ...] | None = None
    same = 0
    while True:
        verdict = oracle.check(**check)
        if verdict.clean or time.monotonic() - began >= timeout_s:
            return verdict, time.monotonic() - began
        now = (verdict.events, verdict.change_copies, verdict.lost, verdict.doubled, verdict.wrong)
        same = same + 1 if now == last else 0
        last = now
        if same >= stable_checks:
            return verdict, time.monotonic() - began
        time.sleep(interval_s)
