"""The console end to end in headless Chromium: the queue of an approver, deciding in the
page, stale decisions refused with the API's message, no buttons (and a refusal anyway) for
a user without the role, sign-in redirects and forms without a CSRF token refused.

Screenshots of the approval queue and a run page go to ``$RUNSTATE_SCREENSHOTS`` (the
committed ones: ``RUNSTATE_SCREENSHOTS=docs/images``), else to the test's temp dir.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runstate.agents.approvals import subject_hash
from runstate.runs.state import ApprovalOutcome, RunStatus
from runstate.schemas.events import (
    ApprovalRequested,
    ApproverKind,
    ExternalActionIntended,
    ExternalActionRecorded,
    FailureReason,
    ModelCalled,
    RetryScheduled,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from runstate.streams.producer import EventProducer
from tests.cli.test_operators import ANN, BOB, EVE, JOE, _waiting, new_run_id, post, state_of
from tests.console.conftest import ConsoleProcess, running_console
from tests.polling import assert_eventually
from tests.workers import Deployment

pytestmark = [pytest.mark.integration, pytest.mark.browser]

KIM = "demo-manager.kim"


def sign_in(browser: Any, console: ConsoleProcess, token: str, then: str = "/") -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(console.url + then)
    assert "/sign-in" in browser.current_url  # no session: the console sends us to sign in
    browser.find_element(By.NAME, "token").send_keys(token)
    browser.find_element(By.ID, "sign-in").click()
    assert_eventually(lambda: "/sign-in" not in browser.current_url, timeout_s=30, what="in")
    browser.find_element(By.ID, "principal")  # the signed-in page has loaded


def ids(browser: Any, css: str) -> list[str]:
    """The ids of the elements ``css`` selects, read in one script: an auto-refresh that
    replaces the rows between finding them and reading them cannot make them stale."""
    found: list[str] = browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.id);", css
    )
    return found


def now_present(browser: Any, css: str) -> list[Any]:
    """The elements on the loaded page, without the implicit wait (for what must be absent)."""
    from selenium.webdriver.common.by import By

    browser.implicitly_wait(0)
    try:
        return list(browser.find_elements(By.CSS_SELECTOR, css))
    finally:
        browser.implicitly_wait(15)


def text_of(browser: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.find_element(By.ID, element_id).text)


def shows(browser: Any, element_id: str, needle: str) -> None:
    """Wait until the element's text holds ``needle`` (the page may still be changing)."""
    from selenium.common.exceptions import WebDriverException

    def check() -> bool:
        try:
            text = text_of(browser, element_id)
        except WebDriverException as exc:
            raise AssertionError(f"no #{element_id} yet ({type(exc).__name__})") from exc
        assert needle in text, text
        return True

    assert_eventually(check, timeout_s=30, what=f"#{element_id} says {needle!r}")


def screenshot(browser: Any, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RUNSTATE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"console-{name}.png"
    # The whole page, not only the window (Chromium's DevTools protocol; nothing installed).
    metrics = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True,
         "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}},
    )  # fmt: skip
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def test_an_unauthenticated_request_is_redirected_to_sign_in(
    browser: Any, console: ConsoleProcess
) -> None:
    browser.delete_all_cookies()
    browser.get(console.url + "/runs?status=failed")
    assert browser.current_url.startswith(console.url + "/sign-in?next=")
    from selenium.webdriver.common.by import By

    browser.find_element(By.NAME, "token").send_keys("not-a-token")
    browser.find_element(By.ID, "sign-in").click()
    assert "unknown token" in text_of(browser, "error")
    sign_in(browser, console, JOE, then="/runs?status=failed")
    assert browser.current_url == console.url + "/runs?status=failed"  # back where it was


def test_a_waiting_run_is_in_its_approvers_queue_and_not_in_anothers(
    browser: Any, console: ConsoleProcess, deployment: Deployment, producer: EventProducer,
    tmp_path: Path,
) -> None:  # fmt: skip
    mine = new_run_id("queue-bob")
    grouped = new_run_id("queue-group")
    _waiting(deployment, producer, mine, "manager.bob")
    _waiting(deployment, producer, grouped, "credit-managers")
    from selenium.webdriver.common.by import By

    sign_in(browser, console, BOB)
    rows = ids(browser, "#queue tbody tr")
    assert {f"row-{mine}", f"row-{grouped}"} <= set(rows)
    assert "5000" in text_of(browser, f"row-{mine}")  # the subject, for the one who decides
    screenshot(browser, "approvals", tmp_path)

    sign_in(browser, console, KIM)  # in the group, but not manager.bob
    rows = ids(browser, "#queue tbody tr")
    assert f"row-{grouped}" in rows and f"row-{mine}" not in rows
    sign_in(browser, console, EVE)  # an auditor: asked for nothing
    assert f"row-{mine}" not in ids(browser, "#queue tbody tr")

    sign_in(browser, console, ANN)  # an admin: asked for nothing, but may see everyone's
    assert f"row-{mine}" not in ids(browser, "#queue tbody tr")
    browser.get(console.url + "/?all=1")
    assert {f"row-{mine}", f"row-{grouped}"} <= set(ids(browser, "#queue tbody tr"))
    row = browser.find_element(By.ID, f"row-{mine}")
    assert row.find_elements(By.NAME, "override_reason")  # deciding it needs a reason


def test_approving_in_the_page_moves_the_run_on(
    browser: Any, console: ConsoleProcess, deployment: Deployment, producer: EventProducer,
    tmp_path: Path,
) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By

    run_id = new_run_id("approve")
    _waiting(deployment, producer, run_id, "manager.bob")
    sign_in(browser, console, BOB)
    row = browser.find_element(By.ID, f"row-{run_id}")
    row.find_element(By.NAME, "comment").send_keys("limit ok")
    row.find_element(By.CSS_SELECTOR, "button.approve").click()

    assert_eventually(lambda: "/runs/" in browser.current_url, timeout_s=30, what="run page")
    assert text_of(browser, "notice").startswith("Approved")
    assert text_of(browser, "status").startswith("in_progress")
    assert text_of(browser, "decided-by") == "manager.bob"
    # The timeline is the run's journal: the decision with its decider, in event order.
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")]
    granted = [r for r in rows if "approval granted" in r]
    assert len(granted) == 1 and "manager.bob" in granted[0], rows
    asked = next(i for i, r in enumerate(rows) if "approval requested" in r)
    assert rows.index(granted[0]) > asked and "run started" in rows[0], rows
    screenshot(browser, "run", tmp_path)
    approval = state_of(deployment, run_id).approval
    assert approval is not None
    assert (approval.outcome, approval.decided_by, approval.comment) == (
        ApprovalOutcome.GRANTED, "manager.bob", "limit ok",
    )  # fmt: skip
    browser.get(console.url + "/")
    assert f"row-{run_id}" not in ids(browser, "#queue tbody tr")  # gone from the queue


def test_a_stale_approval_is_refused_with_the_apis_message(
    browser: Any, console: ConsoleProcess, deployment: Deployment, producer: EventProducer
) -> None:
    from selenium.webdriver.common.by import By

    run_id = new_run_id("stale")
    _waiting(deployment, producer, run_id, "manager.bob")
    sign_in(browser, console, BOB)
    assert f"row-{run_id}" in ids(browser, "#queue tbody tr")  # the page shows subject 1

    # Meanwhile: rejected elsewhere, and the agent asks again about another subject.
    status, body = post(deployment, BOB, f"/runs/{run_id}/reject", {"reason": "too high"})
    assert status == 200, body
    subject = '{"limit": 3000}'
    again = producer.new_event(
        ApprovalRequested, run_id, step="limit", approver="manager.bob",
        approver_kind=ApproverKind.USER, due_at=datetime.now(UTC) + timedelta(hours=1),
        subject=subject, subject_hash=subject_hash({"limit": 3000}), enforce_decider=True,
    )  # fmt: skip
    producer.emit(again)
    assert_eventually(
        lambda: state_of(deployment, run_id).status is RunStatus.WAITING_APPROVAL,
        timeout_s=30, what="asked again",
    )  # fmt: skip

    browser.find_element(By.ID, f"row-{run_id}").find_element(
        By.CSS_SELECTOR, "button.approve"
    ).click()
    assert "subject changed since it was shown" in text_of(browser, "error")
    assert state_of(deployment, run_id).status is RunStatus.WAITING_APPROVAL  # nothing sent

    # The run page now shows the new subject; it is decided elsewhere before the click.
    browser.get(f"{console.url}/runs/{run_id}")
    assert "3000" in text_of(browser, "approval")
    status, body = post(deployment, BOB, f"/runs/{run_id}/approve", {"comment": "by API"})
    assert status == 200, body
    browser.find_element(By.CSS_SELECTOR, "#approval button.approve").click()
    assert text_of(browser, "error")  # the API's refusal, shown
    approval = state_of(deployment, run_id).approval
    assert approval is not None and approval.comment == "by API"  # decided once


def _forge(browser: Any, path: str, fields: dict[str, str]) -> None:
    """A POST the page never offered, with the session's valid CSRF token."""
    browser.execute_script(
        """
        const [path, fields] = arguments;
        const form = document.createElement("form");
        form.method = "post"; form.action = path;
        const csrf = document.querySelector("input[name=csrf]").value;
        for (const [k, v] of Object.entries({...fields, csrf})) {
          const input = document.createElement("input");
          input.type = "hidden"; input.name = k; input.value = v; form.appendChild(input);
        }
        document.body.appendChild(form); form.submit();
        """,
        path,
        fields,
    )


def test_a_user_without_the_role_sees_no_buttons_and_is_refused_anyway(
    browser: Any, console: ConsoleProcess, deployment: Deployment, producer: EventProducer
) -> None:

    run_id = new_run_id("norole")
    _waiting(deployment, producer, run_id, "manager.bob")
    sign_in(browser, console, EVE, then=f"/runs/{run_id}")
    assert text_of(browser, "status").startswith("waiting_approval")
    assert now_present(browser, "main button") == []
    assert "•••• (personal)" in text_of(browser, "approval")  # not hers to see

    _forge(browser, f"/runs/{run_id}/approve", {"comment": "me too"})
    shows(browser, "error", "and 'intern.eve' is not (groups: none); ask user 'manager.bob'")
    _forge(browser, f"/runs/{run_id}/cancel", {"reason": "forged"})
    shows(browser, "error", "'intern.eve' may not cancel run")
    assert state_of(deployment, run_id).status is RunStatus.WAITING_APPROVAL

    sign_in(browser, console, JOE, then=f"/runs/{run_id}")  # an operator: cancel, no approve
    assert now_present(browser, "#cancel") and not now_present(browser, "button.approve")


def test_a_post_without_the_csrf_token_is_refused(
    browser: Any, console: ConsoleProcess, deployment: Deployment, producer: EventProducer
) -> None:
    run_id = new_run_id("csrf")
    _waiting(deployment, producer, run_id, "manager.bob")
    sign_in(browser, console, JOE, then=f"/runs/{run_id}")
    status = browser.execute_async_script(
        """
        const [path, done] = arguments;
        fetch(path, {method: "POST", body: new URLSearchParams({reason: "no csrf"})})
          .then(r => done(r.status), e => done(String(e)));
        """,
        f"/runs/{run_id}/cancel",
    )
    assert status == 403
    assert state_of(deployment, run_id).status is RunStatus.WAITING_APPROVAL
    log = console.log()
    assert "ops.joe signed in" in log and "demo-" not in log  # no token in the console's log


def _failed_run(producer: EventProducer, run_id: str) -> None:
    """A run that called a model and a CRM, then failed at scoring with its retries spent."""
    now = datetime.now(UTC)
    key = f"{run_id}:crm"
    for cls, fields in [
        (RunStarted, {"agent": "credit", "input": '{"customer": "Ada Lovelace"}',
                      "prompt_version": "credit@3", "owner": "team-credit", "source": "pytest"}),
        (StepStarted, {"step": "collect", "step_index": 0, "attempt": 1}),
        (ModelCalled, {"model_request_id": f"req-{run_id}-1", "model": "m-large",
                       "step": "collect"}),
        (ExternalActionIntended, {"step": "collect", "idempotency_key": key, "system": "crm"}),
        (ExternalActionRecorded, {"step": "collect", "idempotency_key": key, "system": "crm",
                                  "external_id": "crm-4711"}),
        (StepCompleted, {"step": "collect", "attempt": 1}),
        (StepStarted, {"step": "score", "step_index": 1, "attempt": 1}),
        (ModelCalled, {"model_request_id": f"req-{run_id}-2", "model": "m-small",
                       "step": "score"}),
        (StepFailed, {"step": "score", "attempt": 1, "reason": FailureReason.TIMEOUT,
                      "message": "scoring timed out"}),
        (RetryScheduled, {"step": "score", "attempt": 2, "not_before": now}),
        (RunFailed, {"step": "score", "reason": FailureReason.TIMEOUT,
                     "message": "retries spent", "needs_attention": True}),
    ]:  # fmt: skip
        producer.emit(producer.new_event(cls, run_id, **fields))


def test_a_run_page_shows_actions_model_requests_and_failures_and_retries_a_step(
    browser: Any, console: ConsoleProcess, deployment: Deployment, producer: EventProducer,
    tmp_path: Path,
) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By

    run_id = new_run_id("failed")
    _failed_run(producer, run_id)
    assert_eventually(
        lambda: state_of(deployment, run_id).status is RunStatus.FAILED,
        timeout_s=30, what="failed",
    )  # fmt: skip
    sign_in(browser, console, JOE, then=f"/runs/{run_id}")
    assert "crm-4711" in text_of(browser, "actions")
    calls = text_of(browser, "model-calls")
    assert f"req-{run_id}-1" in calls and f"req-{run_id}-2" in calls
    assert "timeout" in text_of(browser, "failures")
    assert "retries spent" not in text_of(browser, "failures")  # personal: masked for joe
    timeline = text_of(browser, "timeline")
    assert "step completed · collect (attempt 1)" in timeline
    assert "run failed" in timeline and "retries spent" not in timeline  # no personal text
    screenshot(browser, "run-failed", tmp_path)

    browser.find_element(By.ID, "retry-step").click()
    shows(browser, "notice", "one more attempt")
    state = state_of(deployment, run_id)
    assert (state.status, state.current_step) == (RunStatus.IN_PROGRESS, "score")


def test_the_runs_page_filters_pages_and_says_what_is_wrong_with_a_filter(
    browser: Any, console: ConsoleProcess, deployment: Deployment, producer: EventProducer
) -> None:
    from selenium.webdriver.common.by import By

    failed = [new_run_id("page") for _ in range(3)]
    for run_id in failed:
        _failed_run(producer, run_id)
    waiting = new_run_id("page-waiting")
    _waiting(deployment, producer, waiting, "manager.bob")
    for run_id in failed:
        assert_eventually(
            lambda r=run_id: state_of(deployment, r).status is RunStatus.FAILED,  # type: ignore[misc]
            timeout_s=30, what="failed",
        )  # fmt: skip
    sign_in(browser, console, JOE, then="/runs?needs_attention=1&owner=team-credit&limit=1")
    seen: list[str] = []
    for _ in range(20):  # bounded: the module's other tests add a few such runs
        rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr td:first-child a")
        assert len(rows) <= 1
        seen += [r.text for r in rows]
        more = now_present(browser, "#next")
        if not more:
            break
        browser.get(more[0].get_attribute("href"))
    assert set(failed) <= set(seen) and waiting not in seen
    assert len(seen) == len(set(seen))  # the cursor never repeats a run

    browser.get(console.url + "/runs?idle_for=2")
    assert "idle_for" in text_of(browser, "error")  # a bare number: which unit? refused


def test_the_queue_refreshes_itself_without_a_reload(
    browser: Any, deployment: Deployment, producer: EventProducer, tmp_path: Path
) -> None:
    with running_console(deployment, tmp_path, refresh_s=5) as quick:
        sign_in(browser, quick, BOB)
        browser.execute_script("window.notReloaded = true;")
        run_id = new_run_id("refresh")
        _waiting(deployment, producer, run_id, "manager.bob")
        assert_eventually(
            lambda: f"row-{run_id}" in ids(browser, "#queue tbody tr"),
            timeout_s=60, what="the new run shows up by itself",
        )  # fmt: skip
        assert browser.execute_script("return window.notReloaded === true;")


def test_the_dead_letter_page_says_why_and_where_from(
    browser: Any, console: ConsoleProcess, deployment: Deployment, producer: EventProducer
) -> None:
    from selenium.webdriver.common.by import By

    run_id = new_run_id("dlq")
    early = producer.new_event(StepStarted, run_id, step="s", step_index=0, attempt=1)
    delivery = producer.emit(early)  # before its RunStarted: set aside as run_not_started
    sign_in(browser, console, EVE, then="/dead-letters")

    def row() -> str:
        browser.get(console.url + "/dead-letters")
        for tr in now_present(browser, "#dead-letters tbody tr"):
            if run_id in tr.text:
                return str(tr.text)
        return ""

    text = assert_eventually(row, timeout_s=30, what="the dead letter listed")
    where = f"{deployment.names.events}[{delivery.partition}]@{delivery.offset}"
    assert "rejected" in text and "run_not_started" in text and where in text, text
    assert browser.find_element(By.LINK_TEXT, run_id)
