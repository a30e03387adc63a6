"""The wheel as an application gets it: built from this checkout, installed without extras
into a fresh virtual environment, then used from there (never from ``src/``).

* The core stays lean: the processor's, archive's and console's libraries are not even
  installed, and an agent that imports the SDK and produces an event (to the session's real
  broker) loads none of them, nor the runtime, retention or the test stand-ins.
* One version: the installed metadata says what ``runstate.__version__`` says.
* The license file ships, and matches the declared license.
* ``py.typed`` ships, and works: mypy in a tiny downstream project sees runstate's types
  (a wrong return type is an error), and without the marker it would not.
* A command of a role whose extra is missing names the extra.

The dependencies come from a wheel cache under ``.runstate/wheels`` (filled from the
package registry on the first run, like the Kafka jars), pinned by ``constraints.txt``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import runstate

pytestmark = [pytest.mark.integration, pytest.mark.packaging]

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / ".runstate" / "wheels"
CONSTRAINTS = ROOT / "constraints.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: Import names of distributions whose import name differs.
_IMPORT_NAME = {"pyyaml": "yaml", "moto": "moto", "pytest-timeout": "pytest_timeout"}


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower()


def _extra_distributions(*extras: str) -> set[str]:
    """The distributions the extras bring, following ``runstate[...]`` references."""
    found: set[str] = set()
    for extra in extras:
        for req in PYPROJECT["project"]["optional-dependencies"][extra]:
            name = _requirement_name(req)
            if name == "runstate":
                inner = req[req.index("[") + 1 : req.index("]")].split(",")
                found |= _extra_distributions(*inner)
            else:
                found.add(name)
    return found


#: What only the processor, the archive (local or S3) and the console need.
ROLE_DISTRIBUTIONS = _extra_distributions("processor", "archive", "s3", "console") | {
    "botocore",  # boto3's own
    "s3transfer",
}
ROLE_MODULES = {_IMPORT_NAME.get(d, d.replace("-", "_")) for d in ROLE_DISTRIBUTIONS}
#: runstate's own parts an agent never needs.
HEAVY_LAYERS = {"runstate.runtime", "runstate.retention", "runstate.checks", "runstate.testing"}


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment less what would let the venv see this checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MYPYPATH")
    }
    return {**env, **extra}


def _run(
    args: list[str], *, timeout: float, cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=_clean_env(**env),
        check=False,
    )


@dataclass(frozen=True)
class CoreInstall:
    wheel: Path
    python: Path
    site_packages: Path
    work: Path

    def run(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return _run([str(self.python), *args], timeout=timeout, cwd=self.work, **env)


def _pip(*args: str | Path, work: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """This venv's pip (it has hatchling, the build backend: the wheel builds offline)."""
    return _run([sys.executable, "-m", "pip", *map(str, args)], timeout=timeout, cwd=work)


def _install_core(python: Path, wheel: Path, work: Path) -> subprocess.CompletedProcess[str]:
    return _pip(
        "--python", python, "install", "-q", "--no-index", "--find-links", WHEELHOUSE,
        "-c", CONSTRAINTS, wheel, work=work, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoreInstall]:
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    built = _pip(
        "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, ROOT,
        work=work, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("runstate-*.whl")
    venv = work / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=300, cwd=work)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    installed = _install_core(python, wheel, work)
    if installed.returncode != 0:  # the cache lacks something: fetch the pinned wheels once
        fetched = _pip(
            "download", "-q", "-d", WHEELHOUSE, "-c", CONSTRAINTS, wheel, work=work, timeout=900
        )
        assert fetched.returncode == 0, fetched.stderr
        for own in WHEELHOUSE.glob("runstate-*.whl"):
            own.unlink()
        installed = _install_core(python, wheel, work)
    assert installed.returncode == 0, installed.stderr
    site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        timeout=60,
        cwd=work,
    )
    assert site.returncode == 0, site.stderr
    yield CoreInstall(wheel, python, Path(site.stdout.strip()), work)


AGENT = """
import importlib.metadata, json, sys
import runstate, runstate.agents
from runstate.agents import DurableRun, HttpRunStateReader, Reactor, approve
from runstate.runs.query_client import QueryClient
from runstate.schemas.events import RunStarted
from runstate.streams.producer import EventProducer
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs

bootstrap, prefix = sys.argv[1:3]
ensure_topics(admin_client(bootstrap), topic_specs(TopicNames(prefix), partitions=1))
with EventProducer(bootstrap_servers=bootstrap, topic_prefix=prefix) as producer:
    delivery = producer.run().emit(
        RunStarted, agent="wheel", input="{}", prompt_version="p@1", owner="o", source="t"
    )
print(json.dumps({
    "offset": delivery.offset,
    "modules": sorted(sys.modules),
    "file": runstate.__file__,
    "version": runstate.__version__,
    "metadata_version": importlib.metadata.version("runstate"),
    "distributions": sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()),
}))
"""


@pytest.fixture(scope="module")
def agent_run(
    core: CoreInstall, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    prefix = f"wheel-{os.getpid()}-{tmp_path_factory.getbasetemp().name}"
    done = core.run("-c", AGENT, kafka_bootstrap, prefix)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_the_agent_runs_from_the_installed_wheel(
    core: CoreInstall, agent_run: dict[str, Any]
) -> None:
    assert Path(agent_run["file"]).is_relative_to(core.site_packages)
    assert agent_run["offset"] >= 0  # the broker stored the event


def test_the_core_install_brings_no_role_library(agent_run: dict[str, Any]) -> None:
    assert {"rocksdict", "aiohttp", "boto3", "pyyaml"} <= ROLE_DISTRIBUTIONS
    assert set(agent_run["distributions"]) & ROLE_DISTRIBUTIONS == set()


def test_an_agent_that_produces_loads_no_role_library_and_no_runtime(
    agent_run: dict[str, Any],
) -> None:
    loaded = set(agent_run["modules"])
    assert {m.split(".")[0] for m in loaded} & ROLE_MODULES == set()
    heavy = {m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY_LAYERS)}
    assert heavy == set()


def test_one_version_in_the_code_and_the_metadata(
    core: CoreInstall, agent_run: dict[str, Any]
) -> None:
    assert agent_run["version"] == agent_run["metadata_version"] == runstate.__version__
    assert core.wheel.name.startswith(f"runstate-{runstate.__version__}-")


def test_the_wheel_ships_the_license_and_the_type_marker(core: CoreInstall) -> None:
    with zipfile.ZipFile(core.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"runstate-{runstate.__version__}.dist-info/METADATA").decode()
        license_text = wheel.read(
            f"runstate-{runstate.__version__}.dist-info/licenses/LICENSE"
        ).decode()
    assert "runstate/py.typed" in names
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert license_text == (ROOT / "LICENSE").read_text()


def test_the_wheel_ships_the_consoles_templates_and_static_files(core: CoreInstall) -> None:
    console = ROOT / "src" / "runstate" / "console"
    data = sorted(
        str(p.relative_to(ROOT / "src"))
        for folder in ("templates", "static")
        for p in (console / folder).iterdir()
    )
    assert len(data) >= 9, data  # the pages, the form macros, the stylesheet and the script
    with zipfile.ZipFile(core.wheel) as wheel:
        assert set(data) <= set(wheel.namelist())


def test_a_command_of_a_missing_role_names_its_extra(core: CoreInstall) -> None:
    runstate_cli = core.python.parent / "runstate"
    helped = _run([str(runstate_cli), "--help"], timeout=120, cwd=core.work)
    assert helped.returncode == 0, helped.stderr
    done = _run(
        [str(runstate_cli), "processor", "run", "--web-port", "0"], timeout=120, cwd=core.work
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'runstate[processor]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    console = _run([str(runstate_cli), "console"], timeout=120, cwd=core.work)
    assert console.returncode == 1, console.stderr
    assert "pip install 'runstate[console]'" in console.stderr
    assert len(console.stderr.strip().splitlines()) == 1, console.stderr


DOWNSTREAM = """\
from runstate.runs.state import RunState, RunStatus
from runstate.streams.producer import Delivery


def status_of(state: RunState) -> RunStatus:
    return state.status


def offset_of(delivery: Delivery) -> str:
    return delivery.offset
"""


def _mypy(core: CoreInstall, project: Path, cache: str) -> subprocess.CompletedProcess[str]:
    return _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--python-executable",
            str(core.python),
            "--cache-dir",
            str(project / cache),
            "--no-color-output",
            "app.py",
        ],
        timeout=600,
        cwd=project,
    )


def test_mypy_in_a_downstream_project_sees_runstates_types(
    core: CoreInstall, tmp_path: Path
) -> None:
    project = tmp_path / "downstream"
    project.mkdir()
    (project / "app.py").write_text(DOWNSTREAM)
    typed = _mypy(core, project, ".cache-typed")
    errors = [line for line in typed.stdout.splitlines() if ": error:" in line]
    assert errors == [
        'app.py:10: error: Incompatible return value type (got "int", expected "str")'
        "  [return-value]"
    ], typed.stdout + typed.stderr

    (core.site_packages / "runstate" / "py.typed").unlink()  # as the wheel was before
    try:
        untyped = _mypy(core, project, ".cache-typed")
    finally:
        (core.site_packages / "runstate" / "py.typed").touch()
    assert "missing library stubs or py.typed marker" in untyped.stdout, untyped.stdout
    assert "Incompatible return value" not in untyped.stdout
