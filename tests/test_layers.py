"""The package's layers import only downward: {cli, console} -> checks -> testing -> {retention,
agents, runtime} -> {runs, crypto} -> streams -> schemas (``testing``: the demo's and the launch
checks' stand-ins, which no production layer may import); the root modules (errors,
settings, durations, identity) are for everyone, and ``python -m runstate`` (``__main__``)
starts the CLI.

The run domain (``runs``: state, reducer, codec, views, deadlines) sits beside the runtime,
not in it: the agent SDK, retention, replay and the launch checks depend on it and never on
``runtime``. It imports no Kafka client, no RocksDB and no runtime library, so the same
reducer serves the live processor, replay and the tests.

faust-streaming and aiokafka are gone (issue 10): no module of the package, the tests or
the benchmarks imports them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "runstate"

#: What each layer may import besides itself and the root modules.
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "streams": {"schemas"},
    "runs": {"schemas"},
    # Per-subject encryption of personal fields: the SDK seals, the query API and replay open.
    "crypto": {"streams", "schemas"},
    "runtime": {"runs", "crypto", "streams", "schemas"},
    "retention": {"runs", "crypto", "streams", "schemas"},
    "agents": {"runs", "crypto", "streams", "schemas"},
    # Stand-ins for the demo, the launch checks and the tests (the effects service, the
    # example agent): above the SDK, so no production layer can reach them.
    "testing": {"agents", "runs", "crypto", "streams", "schemas"},
    "checks": {"testing", "retention", "agents", "runs", "crypto", "streams", "schemas"},
    # The operator console: a top layer like the CLI, over the query client (runs) and
    # the dead-letter topic's reader (streams); never the runtime.
    "console": {"runs", "streams", "schemas"},
    "cli": {
        "console",
        "checks",
        "testing",
        "retention",
        "agents",
        "runtime",
        "runs",
        "crypto",
        "streams",
        "schemas",
    },
}
ROOT_MODULES = {"errors", "settings", "durations", "identity"}


#: Third-party modules the run domain must never import (Kafka clients, stores, runtimes).
RUNTIME_LIBRARIES = {"confluent_kafka", "rocksdict", "faust", "mode", "aiokafka", "aiohttp"}


def _third_party_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _imports(path: Path) -> set[str]:
    """The runstate subpackages or root modules ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "runstate" and len(parts) > 1:
                found.add(parts[1])
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    if rel.parts == ("__main__.py",):
        layer, allowed = "__main__", {"cli"}
    elif len(rel.parts) == 1:  # a root module: only other root modules
        layer, allowed = rel.stem, set(ROOT_MODULES)
    else:
        layer = rel.parts[0]
        allowed = ALLOWED[layer] | ROOT_MODULES | {layer}
    wrong = _imports(path) - allowed
    assert not wrong, f"{rel} ({layer}) imports {sorted(wrong)}"


def test_every_subpackage_has_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(ALLOWED), packages - set(ALLOWED)


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "runs").rglob("*.py")),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_the_run_domain_imports_no_runtime(path: Path) -> None:
    wrong = _third_party_imports(path) & RUNTIME_LIBRARIES
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"


#: Retired with the faust processor; nothing may bring them back.
RETIRED = {"faust", "mode", "aiokafka"}


def _python_files() -> list[Path]:
    return sorted(
        p for folder in ("src", "tests", "benchmarks") for p in (ROOT / folder).rglob("*.py")
    )


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_imports_faust_or_aiokafka(path: Path) -> None:
    wrong = _third_party_imports(path) & RETIRED
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


#: Layers that must work without the runtime: the agent SDK, retention (with replay), checks.
WITHOUT_RUNTIME = ("agents", "retention", "checks")


@pytest.mark.parametrize(
    "path",
    sorted(p for layer in WITHOUT_RUNTIME for p in (PACKAGE / layer).rglob("*.py")),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_the_sdk_retention_and_replay_do_not_import_the_runtime(path: Path) -> None:
    assert "runtime" not in _imports(path), f"{path.relative_to(PACKAGE)} imports runstate.runtime"


#: Libraries of the optional roles (extras ``processor``, ``archive``, ``s3``): the core
#: install (events, producer SDK, agent SDK, query client) has none of them.
ROLE_LIBRARIES = {"rocksdict", "aiohttp", "boto3", "botocore", "yaml"}
#: Layers of the core install.
CORE_LAYERS = ("schemas", "streams", "runs", "agents")


@pytest.mark.parametrize(
    "path",
    sorted(
        [p for layer in CORE_LAYERS for p in (PACKAGE / layer).rglob("*.py")]
        + [PACKAGE / f"{m}.py" for m in ROOT_MODULES]
    ),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_the_core_imports_no_library_of_an_extra(path: Path) -> None:
    wrong = _third_party_imports(path) & ROLE_LIBRARIES
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"


def _import_time_names(path: Path) -> set[str]:
    """Modules ``path`` imports when it is imported: not inside functions, nor under
    ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)

    visit(ast.parse(path.read_text(), str(path)).body)
    return found


#: What a command module may import only inside the command that needs it, so that
#: ``runstate --help`` and the core's commands work without the extras.
LAZY_IN_THE_CLI = ROLE_LIBRARIES | {
    "runstate.runtime",
    "runstate.retention",
    "runstate.checks",
    "runstate.console",
    "jinja2",
    "prometheus_client",
}


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "cli").rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_commands_import_their_roles_libraries_only_when_run(path: Path) -> None:
    names = _import_time_names(path)
    wrong = {n for n in names for lazy in LAZY_IN_THE_CLI if n == lazy or n.startswith(lazy + ".")}
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)} at import time"
