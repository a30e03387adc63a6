"""The SDK with a sealing sink: personal fields are sealed for the run's data subject before
they leave the process, the reducer works on the sealed values unchanged, and the SDK opens
what it reads back (a completed step's output, a decision's comment)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from runstate.agents import DurableRun, InMemoryRuns, ManualClock
from runstate.agents.approvals import approve
from runstate.agents.operators import cancel
from runstate.crypto import FileKeyStore, LocalKeyManager, PersonalDataCipher
from runstate.errors import DataKeyMissing, RunSuspended
from runstate.runs.run_view import run_to_json
from runstate.runs.state import RunStatus
from runstate.schemas.sealed import is_sealed, parse_sealed, sealed_fields

CANARY = "canary-7f3a@example.com"


@pytest.fixture
def cipher(tmp_path: Path) -> PersonalDataCipher:
    return PersonalDataCipher(LocalKeyManager(os.urandom(32)), FileKeyStore(tmp_path))


def _agent(run: DurableRun) -> str | None:
    run.step("lookup", lambda ctx: f"found {CANARY}")
    decision = run.await_approval(
        "ok", approver="m", subject={"who": CANARY}, due=timedelta(hours=1)
    )
    assert decision.comment == f"fine for {CANARY}"
    return run.step("lookup", lambda ctx: "never run again")


def test_personal_fields_leave_sealed_and_come_back_open(cipher: PersonalDataCipher) -> None:
    runs = InMemoryRuns(sealer=cipher)
    clock = ManualClock()
    run = DurableRun.start(
        runs,
        runs,
        run_id="r1",
        agent="a",
        input=f'{{"email": "{CANARY}"}}',
        prompt_version="p",
        owner="desk",
        source="t",
        clock=clock,
        data_subject="cust-42",
    )
    with pytest.raises(RunSuspended):
        _agent(run)
    approve(runs, runs, "r1", by="m", comment=f"fine for {CANARY}")
    again = DurableRun.attach(runs, runs, "r1", clock=clock)
    assert again.data_subject == "cust-42"  # found from the sealed input
    assert _agent(again) == f"found {CANARY}"
    assert runs.rejected == []
    # Nothing personal in clear in any event; every sealed field names the subject.
    sealed_seen = 0
    for event in runs.events:
        assert CANARY not in event.model_dump_json()
        for name in sealed_fields(event.event_type):
            value = getattr(event, name)
            if isinstance(value, str):
                assert is_sealed(value) and parse_sealed(value).subject == "cust-42"
                sealed_seen += 1
    assert sealed_seen >= 4  # input, step output, approval subject, comment
    state = runs.read("r1")
    assert state is not None and CANARY not in json.dumps(run_to_json(state))
    # Erased: the SDK cannot read the step's output back any more.
    cipher.store.erase("cust-42")
    with pytest.raises(DataKeyMissing):
        DurableRun.attach(runs, runs, "r1", clock=clock).step("lookup", lambda ctx: "x")


def test_default_subject_is_the_run_and_operators_seal_for_it(
    cipher: PersonalDataCipher,
) -> None:
    runs = InMemoryRuns(sealer=cipher)
    DurableRun.start(
        runs,
        runs,
        run_id="r2",
        agent="a",
        input="x",
        prompt_version="p",
        owner="o",
        source="t",
    )
    from runstate.identity import Principal, Role

    cancel(runs, runs, "r2", by=Principal("op", frozenset({Role.OPERATOR})), reason=CANARY)
    state = runs.read("r2")
    assert state is not None and state.status is RunStatus.CANCELLED
    assert state.cancel_reason is not None and parse_sealed(state.cancel_reason).subject == "r2"
    assert cipher.open_value(state.cancel_reason, run_id="r2") == CANARY
