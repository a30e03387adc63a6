"""``runstate demo``: the article's credit-limit example end to end, on the local broker.

What happens, unattended (``--interactive`` lets a person approve instead):

1. the local broker is started if needed; the demo's topics get their own prefix;
2. a processor worker starts as a subprocess, and the counting side-effect service in here;
3. a credit-limit request arrives; the agent (its own process) checks the form, finds an
   invalid phone, asks for a correction, saves the clean form, asks the manager to approve
   and exits - the run waits;
4. the processor worker is killed with SIGKILL while the run waits; a new worker, with an
   empty data folder, restores the state from Kafka and answers for the run;
5. the manager approves with ``runstate approve`` (a subprocess, like a person's shell);
6. a reactor sees the approval and starts a fresh agent process, which resumes at scoring -
   not at the form check - and sends no notification a second time;
7. the scoring service times out once; only that step is retried; the run completes.

The timeline is printed as it happens (from the state-changes topic), then the counts of the
side-effect service and the run's full event history. Subprocesses are stopped at the end;
the broker keeps running (``runstate broker stop`` stops it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.prompt import Confirm, Prompt
from rich.table import Table

from runstate.agents.client import HttpRunStateReader
from runstate.agents.reactor import Reactor
from runstate.cli.broker import _broker
from runstate.cli.progress import progress_bar, progress_console
from runstate.errors import Error
from runstate.runs.state import RunState, RunStateChanged, RunStatus
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import SingleObjectCodec
from runstate.schemas.convert import decode_event
from runstate.schemas.ids import uuid7
from runstate.settings import load_settings
from runstate.streams.reader import read_topic
from runstate.streams.schema_topic import SchemaTopicSource
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs
from runstate.testing.credit_limit import EXIT_WAITING, MANAGER, notification_keys
from runstate.testing.effects import EffectCount, EffectsService

_DEADLINE_S = 90.0


def _runstate_command() -> list[str]:
    """The ``runstate`` console script next to this Python, as a person would run it."""
    script = Path(sys.executable).with_name("runstate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from runstate.cli import main; main()"]


class _Demo:
    """The demo's moving parts, so ``demo`` reads as the story it tells."""

    def __init__(self, console: Console, stack: ExitStack, *, partitions: int) -> None:
        self.console = console
        self.stack = stack
        self.partitions = partitions
        self.t0 = time.monotonic()
        self.prefix = f"runstate-demo-{uuid.uuid4().hex[:6]}"
        self.names = TopicNames(self.prefix)
        self.workdir = Path(tempfile.mkdtemp(prefix="runstate-demo-"))
        stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        stack.callback(self._stop_all)
        self.bootstrap = ""
        self.query_url = ""
        self.effects_url = ""
        self.resumed: list[subprocess.Popen[bytes]] = []

    # -- output ------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.t0:6.2f}s[/] [bold cyan]>[/] {text}")

    def change(self, c: RunStateChanged) -> None:
        step = f" [magenta]{c.step}[/]" if c.step else ""
        extra = ""
        if c.reason:
            extra += f" reason={c.reason}"
        if c.approval_outcome is not None and c.event_type.startswith("Approval"):
            extra += f" approval={c.approval_outcome.value} approver={c.approver}"
        self.console.print(
            f"[dim]{time.monotonic() - self.t0:6.2f}s[/]   v{c.version:<3} "
            f"[green]{c.event_type:<22}[/]{step} -> {c.to_status.value}{extra}"
        )

    # -- processes ---------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RUNSTATE_BOOTSTRAP_SERVERS": self.bootstrap,
            "RUNSTATE_TOPIC_PREFIX": self.prefix,
            "RUNSTATE_PARTITIONS": str(self.partitions),
            "RUNSTATE_QUERY_URL": self.query_url,
            "COLUMNS": str(self.console.width),
        }

    def spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        out = (self.workdir / log).open("ab")
        proc = subprocess.Popen(args, env=self.env(), stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.procs.append(proc)
        return proc

    def _stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def start_worker(self, worker_id: str) -> subprocess.Popen[bytes]:
        from runstate.streams.broker import free_port

        port = free_port()
        proc = self.spawn(
            *_runstate_command(), "processor", "run",
            "--worker-id", worker_id,
            "--data-dir", str(self.workdir / worker_id),
            "--web-port", str(port),
            log=f"{worker_id}.log",
        )  # fmt: skip
        self.query_url = f"http://127.0.0.1:{port}"
        self._wait_ready(proc, worker_id)
        return proc

    def _wait_ready(self, proc: subprocess.Popen[bytes], worker_id: str) -> None:
        deadline = time.monotonic() + 60
        with progress_bar(
            f"{worker_id}: joining the group", total=self.partitions, console=progress_console()
        ) as bar:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    log = (self.workdir / f"{worker_id}.log").read_text(errors="replace")[-2000:]
                    raise Error(f"processor {worker_id} exited ({proc.returncode}):\n{log}")
                try:
                    with urllib.request.urlopen(self.query_url + "/health", timeout=2) as resp:
                        health = json.loads(resp.read())
                    active = len(health.get("active_partitions", []))
                    restoring = len(health.get("restoring_partitions", []))
                    if health.get("ready") and active == self.partitions:
                        return
                    bar.update(
                        completed=active,
                        description=f"{worker_id}: restoring {restoring} partitions"
                        if restoring
                        else f"{worker_id}: joining the group",
                    )
                except (OSError, ValueError):
                    pass
                time.sleep(0.3)
        raise Error(f"processor {worker_id} did not get ready within 60s")

    def agent(self, action: str, run_id: str) -> subprocess.Popen[bytes]:
        return self.spawn(
            sys.executable, "-m", "runstate.testing.credit_limit", action, run_id,
            "--effects-url", self.effects_url, "--query-url", self.query_url,
            log=f"agent-{action}.log",
        )  # fmt: skip

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_runstate_command(), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def reader(self) -> HttpRunStateReader:
        return HttpRunStateReader(
            self.query_url, bootstrap_servers=self.bootstrap, events_topic=self.names.events
        )

    def wait_for(self, run_id: str, status: RunStatus) -> RunState:
        deadline = time.monotonic() + _DEADLINE_S
        while time.monotonic() < deadline:
            try:
                state = self.reader().read(run_id)
            except Error:
                state = None
            if state is not None and state.status is status:
                return state
            if state is not None and state.is_terminal:
                raise Error(f"run {run_id} ended {state.status.value}: {state.last_error_message}")
            time.sleep(0.3)
        raise Error(f"run {run_id} did not reach {status.value} within {_DEADLINE_S:.0f}s")


def demo(
    interactive: Annotated[
        bool, typer.Option("--interactive", help="approve by hand instead of automatically")
    ] = False,
) -> None:
    """Run the article's credit-limit example end to end: crash, approval, resume, retry."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    s = load_settings()
    try:
        with ExitStack() as stack:
            d = _Demo(console, stack, partitions=s.partitions)
            _run(d, s.partitions, interactive=interactive)
    except Error as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


def _run(d: _Demo, partitions: int, *, interactive: bool) -> None:
    console = d.console
    broker = _broker(None)
    status = broker.status()
    if status is None:
        with progress_bar("starting the Kafka broker", console=progress_console()):
            status = broker.start()
    d.bootstrap = status.bootstrap
    d.say(f"broker at {d.bootstrap}; topics prefixed [bold]{d.prefix}[/]")
    ensure_topics(admin_client(d.bootstrap), topic_specs(d.names, partitions=partitions))

    effects = d.stack.enter_context(EffectsService(honour_keys=False))
    d.effects_url = effects.url
    d.say(f"counting side-effect service at {effects.url} (no-key mode: every call counts)")

    worker1 = d.start_worker("worker-1")
    d.say(f"processor [bold]worker-1[/] ready (pid {worker1.pid}, query API {d.query_url})")

    run_id = uuid7()
    reactor = Reactor(
        bootstrap_servers=d.bootstrap, topic=d.names.state_changes, group_id=f"{d.prefix}-reactor"
    )
    reactor.on()(lambda c: d.change(c) if c.run_id == run_id else None)

    def resume(change: RunStateChanged) -> None:
        if change.run_id == run_id:
            outcome = change.approval_outcome.value if change.approval_outcome else "decided"
            d.say(f"reactor: approval {outcome} -> starting a [bold]fresh agent process[/]")
            d.resumed.append(d.agent("resume", change.run_id))

    reactor.on(event="ApprovalGranted")(resume)
    reactor.on(event="ApprovalRejected")(resume)

    thread = threading.Thread(target=reactor.run, kwargs={"max_seconds": 300}, daemon=True)
    thread.start()
    d.stack.callback(thread.join, 10)
    d.stack.callback(reactor.stop)

    console.rule("a credit-limit request arrives")
    d.say(f"agent process 1 starts run [bold]{run_id}[/]")
    first = d.agent("start", run_id)
    if first.wait(60) != EXIT_WAITING:
        raise Error(f"the agent should have stopped to wait (exit {first.returncode}); see logs")
    state = d.wait_for(run_id, RunStatus.WAITING_APPROVAL)
    assert state.approval is not None
    d.say(
        f"agent process 1 exited; run is [bold]{state.status.value}[/], "
        f"[bold]{state.approval.approver}[/] must decide by {state.approval.due_at:%H:%M} UTC"
    )
    listing = d.cli("runs", "list", "--status", "waiting_approval", "--url", d.query_url)
    console.print(listing.stdout.rstrip())

    console.rule("the processor crashes while the run waits")
    os.kill(worker1.pid, signal.SIGKILL)
    worker1.wait(10)
    d.say(f"worker-1 killed with SIGKILL (exit {worker1.returncode})")
    d.start_worker("worker-2")
    state = d.wait_for(run_id, RunStatus.WAITING_APPROVAL)
    d.say(
        f"worker-2 (empty data folder) restored the run from Kafka: {state.status.value},"
        f" step {state.current_step}, version {state.version}"
    )

    console.rule("the manager decides")
    effects.fail_next("scoring", 1, mode="timeout", delay_s=3.0)
    d.say("scoring service will time out once (injected fault)")
    by = MANAGER
    assert state.approval is not None
    if interactive:
        console.print(f"subject ({state.approval.subject_hash}):\n{state.approval.subject}")
        by = Prompt.ask("approve as", default=MANAGER)
        if not Confirm.ask("approve this request?", default=True):
            result = d.cli("reject", run_id, "--by", by, "--reason", "rejected in the demo")
            console.print(result.stdout.strip() or result.stderr.strip())
            by = ""
    if by:
        result = d.cli("approve", run_id, "--by", by, "--comment", "ok, within policy")
        if result.returncode != 0:
            raise Error(f"runstate approve failed: {result.stderr.strip()}")
        d.say(f"$ runstate approve {run_id[:13]}... --by {by}\n         {result.stdout.strip()}")
        # Approving twice is refused, and nothing is emitted.
        again = d.cli("approve", run_id, "--by", by)
        d.say(f"approving again is refused (exit {again.returncode}): {again.stderr.strip()}")

    final = d.wait_for(run_id, RunStatus.COMPLETED)
    for proc in d.resumed:
        proc.wait(30)
    time.sleep(0.5)  # let the timeline print the last changes
    d.say(f"run completed: {final.output_ref}")
    _report(d, run_id, effects)


def _report(d: _Demo, run_id: str, effects: EffectsService) -> None:
    console = d.console
    console.rule("side effects, as the service counted them")
    counts = Table("kind", "idempotency key", "requests", "effects")
    counted = effects.counts()
    for kind, keys in sorted(counted.items()):
        for key, c in sorted(keys.items()):
            counts.add_row(kind, key.replace(run_id, "<run>"), str(c.requests), str(c.effects))
    console.print(counts)
    expected = notification_keys(run_id).values()
    problems = notification_problems(counted, expected)
    console.print(
        f"[green]each of the {len(expected)} notifications was sent exactly once[/]"
        if not problems
        else "[red]notifications were not sent exactly once:[/] "
        + "; ".join(p.replace(run_id, "<run>") for p in problems)
    )

    console.rule(f"event history of run {run_id}")
    codec = SingleObjectCodec(
        default_catalog(), writer_source=SchemaTopicSource(d.bootstrap, d.names.schemas)
    )
    history = Table()
    for name in ("offset", "at", "producer", "event"):
        history.add_column(name, no_wrap=True)
    history.add_column("details", no_wrap=True, overflow="ellipsis", max_width=80)
    form_checks, decided, resumed_at = 0, False, None
    for record in read_topic(d.bootstrap, d.names.events):
        if record.key != run_id.encode() or record.value is None:
            continue
        event = decode_event(record.value, codec=codec, topic=record.topic,
                             partition=record.partition, offset=record.offset)  # fmt: skip
        details: dict[str, Any] = event.model_dump(
            exclude={"event_id", "run_id", "occurred_at", "producer", "input", "subject"},
            exclude_none=True,
            mode="json",
        )
        if event.event_type == "StepStarted" and details.get("step") == "check_form":
            form_checks += 1
        if event.event_type in ("ApprovalGranted", "ApprovalRejected"):
            decided = True
        elif decided and resumed_at is None and event.event_type == "StepStarted":
            resumed_at = str(details.get("step"))
        text = " ".join(f"{k}={_short(v, run_id)}" for k, v in details.items())
        history.add_row(
            str(record.offset),
            event.occurred_at.strftime("%H:%M:%S.%f")[:-3],
            event.producer,
            event.event_type,
            text,
        )
    console.print(history)
    console.print(
        f"check_form ran {form_checks} time(s); after the decision the agent resumed at"
        f" {resumed_at} (it completed the approval step, then went on)"
    )
    if problems:
        raise Error("a side effect was not performed exactly once; see the counts above")


def notification_problems(
    counts: Mapping[str, Mapping[str, EffectCount]], expected: Iterable[str]
) -> list[str]:
    """What keeps the demo from saying "each notification was sent exactly once", read from
    the side-effect service's own counts: an expected notification never sent or sent more
    than once, or one nobody expected. Empty when the claim is true."""
    sent = counts.get("notification", {})
    wanted = list(expected)
    problems = []
    for key in wanted:
        effects = sent[key].effects if key in sent else 0
        if effects != 1:
            problems.append(f"{key} was sent {effects} time(s)")
    problems += [
        f"{key} was sent {sent[key].effects} time(s), and was not expected"
        for key in sorted(set(sent) - set(wanted))
    ]
    return problems


def _short(value: Any, run_id: str) -> str:
    text = (value if isinstance(value, str) else json.dumps(value)).replace(run_id, "<run>")
    return text if len(text) <= 40 else text[:37] + "..."
