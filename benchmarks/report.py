"""``docs/benchmarks.md`` and ``docs/benchmarks.png`` from one results file.

Every number is a median over rounds with its min-max; a ratio is ours / baseline taken per
round (both ran in that round, alternating), then summarised the same way.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.scale_report import keep_section
from benchmarks.steps_report import BEGIN as STEPS_BEGIN
from benchmarks.steps_report import END as STEPS_END

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks.png"

__all__ = ["console_summary", "summarise", "write_docs"]

Getter = Callable[[dict[str, Any]], float | None]


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _path(*keys: str) -> Getter:
    def get(d: dict[str, Any]) -> float | None:
        cur: Any = d
        for k in keys:
            if not isinstance(cur, dict) or k not in cur:
                return None
            cur = cur[k]
        return _num(cur)

    return get


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}  # fmt: skip


def metrics(results: dict[str, Any]) -> list[tuple[str, str, Getter, bool]]:
    """(key, label, getter, higher_is_better) of every per-round figure."""
    out: list[tuple[str, str, Getter, bool]] = [
        ("throughput", "Processor throughput, steady (events/s)",
         _path("throughput", "steady_events_per_s"), True),
        ("throughput_wall", "Processor throughput incl. start-up (events/s)",
         _path("throughput", "wall_events_per_s"), True),
        ("startup", "Start-up to first state change (s)", _path("throughput", "startup_s"), False),
        ("cpu", "Worker CPU per event, steady (ms)", _path("throughput", "cpu_ms_per_event"),
         False),
    ]  # fmt: skip
    for rate in results.get("params", {}).get("latency_rates", ()):
        for p in ("p50", "p95", "p99"):
            out.append((f"lat{rate}_{p}", f"Latency at {rate} ev/s, {p} (ms)",
                        _path("latency", str(rate), f"{p}_ms"), False))  # fmt: skip
    out += [
        ("kill9", "kill -9 -> processing again, state intact (s)",
         _path("restart", "kill9_to_processing_s"), False),
        ("clean", "Clean restart -> processing, state intact (s)",
         _path("restart", "clean_restart_s"), False),
        ("restore", "State deleted -> processing (full restore) (s)",
         _path("restart", "restore_s"), False),
        ("restore_rate", "Full restore (changelog records/s, over the whole restart)",
         _path("restart", "restore_records_per_s"), True),
        ("changelog", "Changelog records restored", _path("restart", "changelog_records"), False),
    ]  # fmt: skip
    return out


#: Display names of the contenders (older results files also have the retired faust processor,
#: as "faust" or, before the runtime, "runstate").
LABELS = {
    "faust": "faust processor (ALO)",
    "runtime-eos": "runtime, exactly-once",
    "runtime-alo": "runtime, at-least-once",
    "quix-eos": "Quix, exactly-once",
    "quix-alo": "Quix, at-least-once",
    "runstate": "runstate (faust)",
    "quix": "Quix Streams",
}
_COLORS = {
    "runtime-eos": "#2b6cb0", "quix-eos": "#dd6b20", "runtime-alo": "#63b3ed",
    "quix-alo": "#f6ad55", "faust": "#718096", "runstate": "#2b6cb0", "quix": "#dd6b20",
}  # fmt: skip


def systems_of(results: dict[str, Any]) -> list[str]:
    """The contenders of a results file, in the order they ran in round 1."""
    return list(results.get("systems") or ["runstate", "quix"])


def pairs_of(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(ours, baseline) pairs compared round by round."""
    return [(a, b) for a, b in results.get("pairs") or [("runstate", "quix")]]


def pair_name(pair: tuple[str, str]) -> str:
    return f"{pair[0]} / {pair[1]}"


def summarise(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per figure: each system's median/min/max over rounds and each pair's per-round ratio."""
    rounds = [r for r in results.get("rounds", []) if "error" not in r]
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rounds:
        by_round.setdefault(r["round"], {})[r["system"]] = r
    table: dict[str, dict[str, Any]] = {}
    for key, label, get, higher in metrics(results):
        row: dict[str, Any] = {"label": label, "higher_is_better": higher, "ratios": {}}
        for system in systems_of(results):
            vals = [v for r in rounds if r["system"] == system and (v := get(r)) is not None]
            row[system] = _stats(vals)
        for ours, base in pairs_of(results):
            ratios = []
            for pair in by_round.values():
                if ours in pair and base in pair:
                    a, b = get(pair[ours]), get(pair[base])
                    if a is not None and b:
                        ratios.append(a / b)
            row["ratios"][pair_name((ours, base))] = None if key in _NO_RATIO else _stats(ratios)
        table[key] = row
    return table


#: Markers of the hand-written History section (figures of retired contenders, dated).
HISTORY = ("<!-- history:begin -->", "<!-- history:end -->")
KEYS = ("<!-- keys:begin -->", "<!-- keys:end -->")

#: Figures whose ratio would mislead: Quix's changelog keeps one record per changed key per
#: checkpoint and the runtime's one per changed layout key, so record counts and records/s
#: measure different things.
_NO_RATIO = frozenset({"changelog", "restore_rate"})


def producer_rate(results: dict[str, Any]) -> dict[str, float] | None:
    """The SDK's rate over every preload of the run (the same SDK for both systems)."""
    rounds = results.get("rounds", [])
    return _stats([r["producer_events_per_s"] for r in rounds if "producer_events_per_s" in r])


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _cell(s: dict[str, float] | None) -> str:
    if not s:
        return "-"
    return f"{_fmt(s['median'])} ({_fmt(s['min'])}-{_fmt(s['max'])})"


def _ratio(s: dict[str, float] | None) -> str:
    if not s:
        return "-"
    return f"**{s['median']:.2f}x** ({s['min']:.2f}-{s['max']:.2f})"


def _saturation(results: dict[str, Any]) -> list[str]:
    lines = []
    for rate in results.get("params", {}).get("latency_rates", ()):
        for system in systems_of(results):
            sat = [r for r in results.get("rounds", []) if r.get("system") == system
                   and r.get("latency", {}).get(str(rate), {}).get("saturated")]  # fmt: skip
            if sat:
                caps = [_fmt(r["latency"][str(rate)].get("capacity_events_per_s")) for r in sat]
                lines.append(
                    f"- {LABELS.get(system, system)} at {rate} ev/s: not measured in"
                    f" {len(sat)} round(s), the offered"
                    f" rate is above 80 % of its measured capacity ({', '.join(caps)} ev/s):"
                    " the backlog would grow for as long as the test ran."
                )
    return lines


def write_docs(results: dict[str, Any], results_path: Path) -> Path:
    table = summarise(results)
    plotted = _plot(results, table)
    # The Scale, Durable steps and Data keys sections come from their own benchmarks
    # (benchmarks.scale, benchmarks.steps, benchmarks.key_store), the History section from
    # contenders no longer run: kept as they are.
    old = DOC.read_text() if DOC.exists() else ""
    steps = keep_section(old, STEPS_BEGIN, STEPS_END)
    keys = keep_section(old, *KEYS)
    kept = [s for s in (steps, keep_section(old, *HISTORY), keep_section(old), keys) if s]
    page = _markdown(results, table, results_path, plotted).rstrip("\n") + "\n"
    DOC.write_text(page + "".join(f"\n{s}\n" for s in kept))
    return DOC


def _markdown(
    results: dict[str, Any], table: dict[str, dict[str, Any]], results_path: Path, plotted: bool
) -> str:
    m, v, cfg = results["machine"], results["versions"], results["config"]
    wl = results["workload"]
    rel = results_path.relative_to(ROOT)
    out = [
        "# Benchmarks",
        "",
        f"_Generated by `make bench{'-quick' if results['mode'] == 'quick' else ''}`"
        f" (`{results['command']}`) on {results['started_at']},"
        f" {results.get('duration_s', 0):.0f} s;"
        f" raw numbers: [`{rel}`](../{rel}). Do not edit by hand: the next run rewrites it._",
        "",
        "Every figure is the **median over rounds (min-max)**. Ours and the baseline run in the"
        " same invocation, alternating within each round on one broker; the ratio is"
        " ours / baseline computed per round, then summarised. Absolute numbers from this shared,"
        " noisy machine are context only; compare the ratios.",
        "",
        f"Mode: **{results['mode']}**, {results['params']['rounds']} rounds. Contenders: "
        + ", ".join(f"`{x}` ({LABELS.get(x, x)})" for x in systems_of(results))
        + ". Ratios: "
        + ", ".join(f"`{pair_name(p)}`" for p in pairs_of(results))
        + " (the same processing guarantee on both sides).",
        "",
        *_load_lines(results),
        "## Machine",
        "",
        f"- {m['cpus']} CPUs ({m['cpu_model'] or 'unknown model'}), {m['memory_gib']} GiB RAM;"
        " broker, worker and harness share them",
        f"- Python {m['python']}, {m['platform']}",
        f"- Apache Kafka {m['kafka']} (KRaft, one local node, from the Maven jars), {m['java']}",
        f"- runstate {v.get('runstate')}: the runtime on confluent-kafka"
        f" {v.get('confluent-kafka')} (also the SDK's);"
        f" fastavro {v.get('fastavro')}, rocksdict {v.get('rocksdict')}",
        f"- Baseline: quixstreams {v.get('quixstreams', '-')} with confluent-kafka"
        f" {v.get('confluent_kafka_quix', '-')} in its own venv (`.runstate/bench-quix`): every"
        " quixstreams release pins confluent-kafka < 2.13, pydantic < 2.14 and"
        " pydantic-settings < 2.16, older than runstate's",
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench-quick   # 2 rounds, small N, a few minutes",
        "make bench         # 5 rounds, larger N, then the durable-step costs",
        "make bench-steps   # only the durable-step costs beside their anchors",
        "# or: .venv/bin/python -m benchmarks.run --quick [--rounds N] [--systems a,b,...]",
        "```",
        "",
        "The harness starts its own broker (free ports, temp dir), makes fresh topics"
        f" ({cfg['partitions']} partitions) with a unique prefix per system and round, preloads"
        " the workload through the SDK, then starts the worker as a child process. Every worker"
        f" uses a {cfg['session_timeout_s']:.0f} s consumer session timeout and a"
        f" {cfg['commit_interval_s']:.0f} s commit interval (the runtime's own default is 0.1 s;"
        " it is set equal here, as an exactly-once worker's outputs become visible only when"
        " its transaction commits). The harness reads the outputs `read_committed`.",
        "",
        "## Workload",
        "",
        f"{wl['runs']} runs, {wl['events']:,} events, {wl['bytes'] / 1e6:.1f} MB (seed"
        f" {wl['seed']}): {wl['events_per_run']['min']}-{wl['events_per_run']['max']} events per"
        f" run (median {wl['events_per_run']['median']}), {wl['event_bytes']['min']}-"
        f"{wl['event_bytes']['max']} bytes per event (median {wl['event_bytes']['median']}),"
        " runs interleaved as on a busy cluster. Mix: "
        + ", ".join(f"{k} {n}" for k, n in wl["types"].items())
        + ". Every event is applied by the reducer (no rejections; `tests/benchmarks/`).",
        "",
        "## Results",
        "",
    ]
    if plotted:
        out += ["![benchmarks](benchmarks.png)", ""]
    systems, pairs = systems_of(results), pairs_of(results)
    out += [
        "| Figure | "
        + " | ".join(LABELS.get(x, x) for x in systems)
        + " | "
        + " | ".join(f"{LABELS.get(a, a)} / {LABELS.get(b, b)}" for a, b in pairs)
        + " |",
        "|---|" + "---|" * (len(systems) + len(pairs)),
    ]
    for row in table.values():
        if not any(row.get(x) for x in systems):
            continue
        arrow = "↑" if row["higher_is_better"] else "↓"
        out.append(
            f"| {row['label']} {arrow} | "
            + " | ".join(_cell(row.get(x)) for x in systems)
            + " | "
            + " | ".join(_ratio(row["ratios"].get(pair_name(p))) for p in pairs)
            + " |"
        )
    out += ["", "↑ higher is better, ↓ lower is better.", ""]
    out += _saturation(results)
    out += _output_lines(results)
    errors = [r for r in results.get("rounds", []) if "error" in r]
    for r in errors:
        out.append(f"- round {r['round']} of {r['system']} failed: `{r['error'][:300]}`")
    out += [
        "",
        *_run_length_section(results),
        *_codec_section(results),
        *_profile_section(results),
        *_notes(results),
        "",
    ]
    return "\n".join(out) + "\n"


def _output_lines(results: dict[str, Any]) -> list[str]:
    """Doubled state changes per system over its rounds (kill -9 included)."""
    counted = [r for r in results.get("rounds", []) if "outputs" in r]
    if not counted:
        return []
    parts = []
    for system in systems_of(results):
        mine = [r["outputs"] for r in counted if r["system"] == system]
        if mine:
            records = sum(o["records"] for o in mine)
            doubled = sum(o["doubled"] for o in mine)
            parts.append(f"{LABELS.get(system, system)} {doubled} of {records:,}")
    return [
        "- Doubled state changes (a run version seen twice over a round, kill -9 and restarts"
        " included; allowed at least once, never exactly once): " + "; ".join(parts) + ".",
    ]


def _load_lines(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    start, end = m.get("loadavg_start"), m.get("loadavg_end")
    if not start:
        return []
    text = f"**Machine load**: 1-minute load average {start[0]:.1f} at the start"
    if end:
        text += f", {end[0]:.1f} at the end"
    text += f" on {m['cpus']} CPUs."
    if results.get("note"):
        text += f" {results['note']}"
    return [text, ""]


def _run_length_section(results: dict[str, Any]) -> list[str]:
    fig = results.get("run_length")
    if not fig:
        return []
    out = [
        "### Per-event cost as a run grows (runtime task path, in process)",
        "",
        "One run of 10, 100 and 1,000 events, each event a batch of its own through"
        " `RunTask.process` (the runtime's task: decode, load through the partition"
        " transaction, reduce, the change, the layout's writes, the run's summary for the"
        " latest-state topic) over a memory partition store, the interval committed after"
        f" each event. Cost at the k-th event: median over {fig['repeats']} passes and the"
        f" events k-{fig['window'] - 1}..k. The steps that may grow with the run are timed"
        f" alone at the same events (best of {fig['repeats']}), and so is the whole-state"
        " encode the latest-state topic carried before the summary (no longer done; for"
        " comparison).",
        "",
        "| run length | k-th event | µs/event | reduce µs | layout writes µs"
        " | encode change µs | encode summary µs | summary bytes"
        " | whole-state encode µs (not done) | state bytes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = fig.get("latest_state") == "summary"  # older results: whole states
    for n, run in fig["runs"].items():
        for k, at in run["at"].items():
            out.append(
                f"| {int(n):,} | {int(k):,} | {at['task_us']:,.0f} | {at['apply_us']:.0f}"
                f" | {at['run_writes_us']:.0f} | {at['encode_change_us']:.0f}"
                + (
                    f" | {at['encode_summary_us']:.0f} | {at['summary_bytes']:,}"
                    if summary
                    else " | - | -"
                )
                + f" | {at['encode_state_us']:,.0f} | {at['state_bytes']:,} |"
            )
    ratio = fig.get("ratio_last_to_10th")
    if ratio and not summary:
        out += ["", f"The 1,000th event costs {ratio:.1f}x the 10th (whole-state latest state)."]
    elif ratio:
        met = "meets" if ratio <= fig["goal_ratio"] else "**misses**"
        out += [
            "",
            f"The 1,000th event costs **{ratio:.2f}x** the 10th ({met} the goal of"
            f" {fig['goal_ratio']}x). The layout writes only what an event changed and the"
            " latest-state topic carries the run's summary, whose size and encode cost do not"
            " depend on the run's length; the reducer checks a model request id against a"
            " set kept with the run's newest calls (`runstate.runs.state.append_model_call`),"
            " not by scanning them. The reducer is timed within folds in order, as the task"
            " applies events.",
        ]
    return [*out, ""]


def _codec_section(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    producer = producer_rate(results)
    if producer:
        out += [
            "### Producer SDK",
            "",
            f"`EventProducer.send` x {results['workload']['events']:,} then `flush`, every"
            f" delivery confirmed (acks=all, idempotent, lz4, linger 5 ms): **{_cell(producer)}"
            f" events/s** over the {producer['n']} preloads of this run (one per system and"
            " round; the same SDK feeds both systems, so there is no ratio).",
            "",
        ]
    c = results.get("codec")
    if not c:
        return out
    names = {
        "encode_event/fastavro": "`encode_event` (pydantic event → Avro single-object)",
        "codec_encode/fastavro": "`codec.encode` (record dict → single-object)",
        "decode_event/fastavro": "`decode_event` (bytes → pydantic event)",
        "codec_decode/fastavro": "`codec.decode` (bytes → record dict)",
        "encode_state/fastavro": "`StateCodec.encode_state` (RunState → bytes)",
        "decode_state/fastavro": "`StateCodec.decode_state` (bytes → RunState)",
    }
    rate_of = {
        "encode_event/fastavro": ("encode_event", "fastavro_encode"),
        "codec_encode/fastavro": ("codec_encode", "fastavro_encode"),
        "decode_event/fastavro": ("decode_event", "fastavro_decode"),
        "codec_decode/fastavro": ("codec_decode", "fastavro_decode"),
        "encode_state/fastavro": ("encode_state", "fastavro_encode_state"),
        "decode_state/fastavro": ("decode_state", "fastavro_decode_state"),
    }
    out += [
        "### Codec against plain fastavro (issue 2)",
        "",
        f"{c['records']:,} workload events (and the {c['records']:,} run states they produce,"
        f" median {c['state_bytes_median']:,.0f} bytes), "
        f"{c['rates']['fastavro_encode']['n']} alternating rounds in one process. Plain"
        " fastavro is `schemaless_writer`/`schemaless_reader` with the parsed schema on"
        " the same records (no header, no pydantic).",
        "",
        "| Path | ours (records/s) | fastavro (records/s) | ours / fastavro |",
        "|---|---|---|---|",
    ]
    for key, label in names.items():
        ours, base = rate_of[key]
        out.append(
            f"| {label} | {_cell(c['rates'][ours])} | {_cell(c['rates'][base])}"
            f" | {_ratio(c['ratios'][key])} |"
        )
    return [*out, ""]


def _profile_section(results: dict[str, Any]) -> list[str]:
    out = ["## Where the time goes per event", ""]
    for system, spy in (results.get("py_spy") or {}).items():
        if not spy.get("available") or not spy.get("samples"):
            out += [f"py-spy on the {system} worker: not available ({spy.get('note', '')}).", ""]
            continue
        out += [
            f"py-spy on the **{system}** worker process while it worked through a preloaded"
            f" topic ({spy['samples']:,} samples of busy threads):",
            "",
            "| Leaf function (self) | share |",
            "|---|---|",
        ]
        for row in spy["top_self"][:10]:
            out.append(f"| `{row['function']}` | {row['share']:.0%} |")
        out += ["", "Self time by package: " + ", ".join(
            f"{r['function']} {r['share']:.0%}" for r in spy["self_by_package"][:8]
        ) + ".", ""]  # fmt: skip
        if spy.get("top_inclusive_runstate"):
            out.append(
                "runstate functions on the stack (inclusive): "
                + ", ".join(
                    f"`{r['function'].split(' (')[0]}` {r['share']:.0%}"
                    for r in spy["top_inclusive_runstate"][:8]
                )
                + "."
            )
            out.append("")
    return out


def _notes(results: dict[str, Any]) -> list[str]:
    replay = results.get("replay") or {}
    if not replay.get("available"):
        replay_line = (
            f"- **Replay** (`runstate replay --all`): not available: {replay.get('note')}."
        )
    else:
        parts = []
        for key, label in (("from_topic", "from the topic"), ("from_archive", "from the archive")):
            fig = replay.get(key) or {}
            if "events_per_s" in fig:
                parts.append(
                    f"{label} **{fig['events_per_s']:,.0f} events/s** ({fig['events']:,} events"
                    f" in {fig['seconds']:.1f} s)"
                )
            else:
                parts.append(f"{label}: failed (`{str(fig.get('error', '?'))[-200:]}`)")
        replay_line = (
            "- **Replay** (`runstate replay --all`, one run each, whole command incl. its"
            f" {replay.get('cli_startup_s', 0):.1f} s CLI start-up, no baseline): "
            + "; ".join(parts)
            + "."
        )
    return [
        "## How each figure is measured",
        "",
        "- **Throughput**: the worker starts on a topic preloaded with the whole workload;"
        " the harness reads the state-changes topic and notes when each record arrives."
        " *Steady* is records per second from the end of the first burst of outputs (what"
        " arrives within 0.25 s of the first; for an exactly-once worker, its first"
        " transaction) to the last arrival (start-up excluded); CPU per event is the worker's"
        " CPU time over the same stretch divided by the records that arrived after the first"
        " burst (an exactly-once worker can be up to one commit interval ahead of what is"
        " visible, so its CPU figure can be low by up to that interval's work);"
        " *incl. start-up* counts from process start. Every system consumes, decodes"
        " with our codec, apply our reducer, keep the state codec's bytes in RocksDB with a"
        " changelog, and produce RunStateChanged and the run's summary (latest-state topic;"
        " the faust processor: the whole state).",
        "- **Latency**: after the throughput run, new runs are sent through the SDK at a fixed"
        " offered rate; latency is from the SDK `send` call to the state change's arrival at"
        " the harness's consumer (same clock). Includes the SDK's 5 ms linger.",
        "- **Restart**: a ModelCalled probe is sent every 100 ms; *kill -9* is from SIGKILL to"
        " the first probe's state change after an immediate restart (includes waiting for the"
        " dead member's session to expire); *clean* is SIGTERM, start, first probe; *full"
        " restore* deletes the state folder first. The restore rate divides the changelog's"
        " records by the whole restart time (a lower bound on the restore speed).",
        "- **Producer SDK**: `EventProducer.send` for the whole workload, then `flush`;"
        " every delivery confirmed (acks=all, idempotent).",
        "",
        "## Differences to keep in mind",
        "",
        "- Exactly-once on both sides is Kafka transactions: the runtime commits the"
        " interval's outputs, changelog and offsets in one transaction"
        ' (`runtime/checkpoint.py`), Quix with `processing_guarantee="exactly-once"`; at'
        " least once, the runtime produces, flushes, then commits offsets, and relies on the"
        " reducer to drop redelivered events.",
        "- The runtime keeps a run as a head plus one entry per collection item (the run"
        " layout) and writes the changed keys to its changelog; Quix keeps the whole state"
        " under one key and writes one changelog record per changed key per checkpoint.",
        "- Our workers also run an HTTP query API and an approval-deadline timer in the same"
        " process (the runtime also writes the query indexes); the baseline has neither.",
        "- The baseline has no dead-letter path; the workload has no bad records, so neither"
        " system spends time there.",
        replay_line,
    ]


def _plot(results: dict[str, Any], table: dict[str, dict[str, Any]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    systems = [(x, _COLORS.get(x, "#999999")) for x in systems_of(results)]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))

    def bars(ax: Any, keys: list[tuple[str, str]], title: str, ylabel: str, *, log: bool) -> None:
        width = 0.8 / len(systems)
        for i, (system, color) in enumerate(systems):
            xs, ys, lo, hi = [], [], [], []
            for j, (key, _) in enumerate(keys):
                st = table.get(key, {}).get(system)
                if st:
                    xs.append(j + (i - (len(systems) - 1) / 2) * width)
                    ys.append(st["median"])
                    lo.append(st["median"] - st["min"])
                    hi.append(st["max"] - st["median"])
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=color,
                       label=LABELS.get(system, system))  # fmt: skip
        ax.set_xticks(range(len(keys)), [label for _, label in keys], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7)

    ax = axes[0][0]
    bars(ax, [("throughput", "steady"), ("throughput_wall", "incl. start-up")],
         "Processor events/s (median, min-max)", "events/s", log=True)  # fmt: skip
    lat_keys = []
    for rate in results["params"]["latency_rates"]:
        for p in ("p50", "p99"):
            lat_keys.append((f"lat{rate}_{p}", f"{rate}/s {p}"))
    bars(axes[0][1], lat_keys, "Latency send → state change (ms)", "ms", log=True)
    bars(axes[1][0], [("kill9", "kill -9"), ("clean", "clean restart"),
                      ("restore", "state deleted")], "Back to processing (s)", "s",
         log=False)  # fmt: skip
    ax = axes[1][1]
    ratio_keys = [("throughput", "throughput ↑"), ("cpu", "CPU/event ↓"),
                  ("lat500_p50", "500/s p50 ↓"), ("lat500_p99", "500/s p99 ↓")]  # fmt: skip
    pairs = pairs_of(results)
    width = 0.8 / max(len(pairs), 1)
    for i, pair in enumerate(pairs):
        xs, ys = [], []
        for j, (key, _) in enumerate(ratio_keys):
            st = table.get(key, {}).get("ratios", {}).get(pair_name(pair))
            if st:
                xs.append(j + (i - (len(pairs) - 1) / 2) * width)
                ys.append(st["median"])
        if xs:
            ax.bar(xs, ys, width, color=_COLORS.get(pair[0], "#999999"),
                   label=f"{pair[0]} / {pair[1]}")  # fmt: skip
    ax.set_xticks(range(len(ratio_keys)), [label for _, label in ratio_keys], fontsize=8)
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_title("Ours / Quix, per-round ratio (median; 1.0 = equal, log)", fontsize=10)
    ax.legend(fontsize=7)
    fig.suptitle(
        f"runstate vs Quix Streams: {results['mode']} mode, {results['params']['rounds']}"
        f" rounds, {results['machine']['cpus']} CPUs",
        fontsize=11,
    )
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)
    return True


def console_summary(results: dict[str, Any]) -> str:
    lines = [""]
    lines.append(f"  producer SDK events/s: {_cell(producer_rate(results))}")
    for key, r in (results.get("codec") or {}).get("ratios", {}).items():
        lines.append(f"  codec {key}: {_ratio(r)}")
    systems, pairs = systems_of(results), pairs_of(results)
    lines.append("  columns: " + " | ".join(systems) + " | " + " | ".join(map(pair_name, pairs)))
    for row in summarise(results).values():
        if any(row.get(x) for x in systems):
            lines.append(
                f"  {row['label']}: "
                + " | ".join(_cell(row.get(x)) for x in systems)
                + " | "
                + " | ".join(_ratio(row["ratios"].get(pair_name(p))) for p in pairs)
            )
    fig = results.get("run_length")
    if fig:
        for n, run in fig["runs"].items():
            for k, at in run["at"].items():
                lines.append(
                    f"  run of {n}, event {k}: {at['task_us']:.0f} us"
                    f" (summary encode {at.get('encode_summary_us', 0):.0f} us)"
                )
        lines.append(f"  1,000th / 10th: {fig['ratio_last_to_10th']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":  # regenerate the docs from a results file
    source = Path(sys.argv[1])
    print(write_docs(json.loads(source.read_text()), source.resolve()))
