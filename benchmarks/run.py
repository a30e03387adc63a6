"""``python -m benchmarks.run --quick|--full``: every figure, ours and the baseline alternating
in the same run; writes ``benchmarks/results/<timestamp>-<mode>.json`` and
``docs/benchmarks.md`` (+ ``docs/benchmarks.png``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks import inprocess, live, report, run_length
from benchmarks.workload import generate
from runstate.streams.broker import KAFKA_VERSION

RESULTS = h.ROOT / "benchmarks" / "results"
QUIX_REQUIREMENT = "quixstreams>=3.28,<3.29"


@dataclass(frozen=True)
class Mode:
    name: str
    rounds: int
    throughput_runs: int  # ~23 events per run
    latency_rates: tuple[int, ...]
    latency_s: float
    codec_runs: int
    codec_rounds: int
    spy_s: float


MODES = {
    # the throughput workload must take several commit intervals to process: an
    # exactly-once worker's outputs appear one transaction (one interval) at a time
    "quick": Mode("quick", 2, 500, (50, 500, 2000), 3.0, 80, 3, 6.0),
    "full": Mode("full", 5, 1200, (50, 200, 500, 2000), 10.0, 300, 5, 15.0),
}


def ensure_quix_venv() -> dict[str, str]:
    """The baseline's venv (created once): quixstreams pins older confluent-kafka/pydantic."""
    probe = (
        "from importlib.metadata import version as v; print(v('quixstreams'), v('confluent-kafka'))"
    )
    if h.QUIX_PYTHON.exists():
        out = subprocess.run([str(h.QUIX_PYTHON), "-c", probe], capture_output=True, text=True)
        if out.returncode == 0:
            quix, ck = out.stdout.split()
            return {"quixstreams": quix, "confluent_kafka_quix": ck}
    print(f"creating the baseline venv {h.QUIX_VENV} ({QUIX_REQUIREMENT}) ...", flush=True)
    shutil.rmtree(h.QUIX_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(h.QUIX_VENV)], check=True)
    pip = [str(h.QUIX_PYTHON), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, QUIX_REQUIREMENT, "fastavro>=1.9,<2"], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(h.ROOT)], check=True)
    return ensure_quix_venv()


def machine() -> dict[str, Any]:
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu_model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    return {
        "cpus": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kafka": KAFKA_VERSION,
        "java": java.splitlines()[0] if java else "",
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        name: version(name)
        for name in ("runstate", "confluent-kafka", "fastavro", "rocksdict", "pydantic")
    }  # fmt: skip


def replay_command() -> list[str] | None:
    """``runstate replay`` if this checkout has it."""
    exe = [sys.executable, "-m", "runstate"]
    out = subprocess.run([*exe, "replay", "--help"], capture_output=True, text=True)
    return [*exe, "replay"] if out.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--quick", action="store_true", help="2 rounds, small N (minutes)")
    group.add_argument("--full", action="store_true", help="5 rounds, larger N")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--skip-baseline", action="store_true", help="only our workers")
    parser.add_argument(
        "--systems",
        help=f"comma-separated subset of {','.join(h.SYSTEMS)} (default: all)",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/")
    parser.add_argument("--note", default="", help="a line for the report (e.g. machine load)")
    args = parser.parse_args(argv)
    mode = MODES["quick" if args.quick else "full"]
    if args.rounds:
        mode = Mode(**{**asdict(mode), "rounds": args.rounds})
    started = time.time()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    systems = args.systems.split(",") if args.systems else list(h.SYSTEMS)
    unknown = sorted(set(systems) - set(h.SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(h.SYSTEMS)}")
    if args.skip_baseline:
        systems = [s for s in systems if s not in (h.QUIX_EOS, h.QUIX_ALO)]
    # workers and the replay CLI import this checkout's code, whatever the caller's cwd
    os.environ["PYTHONPATH"] = f"{h.ROOT / 'src'}{os.pathsep}{h.ROOT}"
    results: dict[str, Any] = {
        "mode": mode.name,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"python -m benchmarks.run --{mode.name}"
        + (f" --systems {args.systems}" if args.systems else "")
        + (f" --rounds {args.rounds}" if args.rounds else ""),
        "systems": systems,
        "pairs": [list(p) for p in h.PAIRS if p[0] in systems and p[1] in systems],
        "params": asdict(mode),
        "note": args.note,
        "machine": machine(),
        "versions": versions(),
        "config": {
            "partitions": h.PARTITIONS,
            "session_timeout_s": h.SESSION_TIMEOUT_S,
            "commit_interval_s": h.COMMIT_INTERVAL_S,
        },
    }
    if h.QUIX_EOS in systems or h.QUIX_ALO in systems:
        results["versions"].update(ensure_quix_venv())

    step("workloads")
    throughput_wl = generate(mode.throughput_runs, seed=1)
    results["workload"] = throughput_wl.describe()

    step("in-process: codec vs fastavro")
    codec_wl = generate(mode.codec_runs, seed=2)
    results["codec"] = inprocess.codec_rates(
        codec_wl.events, codec_wl.encoded, rounds=mode.codec_rounds
    )
    step("in-process: per-event cost at a run's 10th, 100th, 1,000th event (runtime task)")
    results["run_length"] = run_length.run_length_cost(repeats=mode.codec_rounds)

    base = h.workdir()
    try:
        step(f"broker (Kafka {KAFKA_VERSION}) in {base}")
        with h.bench_broker(base) as bootstrap:
            rounds: list[dict[str, Any]] = []
            for round_no in range(1, mode.rounds + 1):
                order = systems if round_no % 2 else systems[::-1]
                for system in order:
                    step(f"round {round_no}/{mode.rounds}: {system}")
                    rounds.append(
                        live.system_round(system, round_no, bootstrap, throughput_wl, mode, base)
                    )
                    save(results | {"rounds": rounds}, stamp, mode.name, partial=True)
            results["rounds"] = rounds
            step("py-spy on the exactly-once workers")
            spy_wl = generate(max(40, mode.throughput_runs // 2), seed=9)
            results["py_spy"] = {
                s: live.spy_worker(s, bootstrap, spy_wl, mode, base)
                for s in systems
                if s in (h.RUNTIME_EOS, h.QUIX_EOS)
            }
            replay = replay_command()
            results["replay"] = (
                live.replay_figure(replay, bootstrap, throughput_wl, base)
                if replay
                else {"available": False, "note": "`runstate replay` does not exist yet"}
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results["duration_s"] = round(time.time() - started, 1)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    path = save(results, stamp, mode.name)
    step(f"results: {path.relative_to(h.ROOT)}")
    if not args.no_docs:
        md = report.write_docs(results, path)
        step(f"report: {md.relative_to(h.ROOT)}")
    print(report.console_summary(results))
    return 0


def save(results: dict[str, Any], stamp: str, mode: str, *, partial: bool = False) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp}-{mode}.json{'.tmp' if partial else ''}"
    path.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    if not partial:
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def step(text: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {text}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
