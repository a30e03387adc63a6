"""The console against a real broker, a runtime worker and its query API with auth on, driven
by Debian's headless Chromium (``make browser`` installs ``chromium`` and ``chromium-driver``).

The worker group is test_operators' (the example identity file, tokens ``demo-<name>``);
the console is the ``runstate console`` command, a child process. Selenium is given the
driver and the browser explicitly and runs offline: Selenium Manager never downloads.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runstate.streams.broker import free_port
from tests.cli.test_operators import AUTH, deployment, producer
from tests.polling import assert_eventually
from tests.workers import RUNSTATE, Deployment

__all__ = [
    "ConsoleProcess",
    "browser",
    "console",
    "deployment",
    "producer",
    "running_console",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SECRET = "console-test-secret-0123456789abcdef"


@dataclass
class ConsoleProcess:
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_console(
    deployment: Deployment, folder: Path, *, refresh_s: int = 3600
) -> Iterator[ConsoleProcess]:
    """``runstate console`` as a child process (refreshing its lists every ``refresh_s``)."""
    port = free_port()
    log_path = folder / f"console-{port}.log"
    env = {**deployment.workers[0].env, **AUTH, "RUNSTATE_CONSOLE_SECRET": SECRET}
    env.pop("RUNSTATE_TOKEN", None)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(RUNSTATE), "console", "--listen", f"127.0.0.1:{port}",
             "--query-url", deployment.workers[0].url, "--refresh", str(refresh_s)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    c = ConsoleProcess(f"http://127.0.0.1:{port}", log_path, proc)

    def up() -> bool:
        try:
            with urllib.request.urlopen(c.url + "/health", timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the console exited:\n{c.log()}") from None
            return False

    try:
        assert_eventually(up, timeout_s=60, what="the console answers")
        yield c
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def console(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleProcess]:
    """The module's console; its lists never refresh themselves during a test (an hour)."""
    with running_console(deployment, tmp_path_factory.mktemp("console")) as c:
        yield c


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through Debian's chromedriver; nothing is downloaded."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make browser` (apt-get chromium"
                    " chromium-driver)")  # fmt: skip
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download a driver or browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(90)
    driver.implicitly_wait(15)  # a clicked form's page may still be loading
    try:
        yield driver
    finally:
        driver.quit()
