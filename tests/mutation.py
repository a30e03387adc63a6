"""``make mutation``: mutmut over the modules that keep the promises, and a score per module.

Which modules and which tests are ``[tool.mutmut]`` in ``pyproject.toml``; docs/testing.md says
why those, what the last run scored and why each surviving mutant is left alive. Run from the
repository root::

    python -m tests.mutation                         # every listed module
    python -m tests.mutation runstate.agents.steps   # one or more modules
    python -m tests.mutation --report                # the scores of the last run, again
    python -m tests.mutation NAME ...                # only these mutants (names as it prints)

Each run starts from an empty ``mutants/`` folder (mutmut's cache keeps results of files it no
longer copies, which would score old code). mutmut runs in this process: mutmut 3.7 reads
``item._nodeid``, which pytest 9 renamed, and mutmut 3.8 cannot be installed beside
faust-streaming (click), so the attribute is given back here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

MUTANTS = Path("mutants")
#: mutmut's exit codes, as its ``status_by_exit_code`` reads them.
_STATUS = {
    0: "survived",
    1: "killed",
    3: "killed",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    37: "caught by type check",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
}


@dataclass(frozen=True, slots=True)
class ModuleScore:
    """How the mutants of one module fared."""

    module: str
    statuses: Counter[str]
    survivors: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def detected(self) -> int:
        """Killed by a test, or by the timeout (a mutant that loops is caught, too)."""
        return self.statuses["killed"] + self.statuses["timeout"]

    @property
    def score(self) -> float:
        """The share of mutants detected; 1.0 for a module with no mutants."""
        return self.detected / self.total if self.total else 1.0


def status_of(exit_code: int | None) -> str:
    """mutmut's name for a mutant's exit code (None: not run)."""
    if exit_code is None:
        return "not checked"
    return _STATUS.get(exit_code, "suspicious")


def module_of(meta: Path, root: Path = MUTANTS) -> str:
    """``mutants/src/runstate/runs/reducer.py.meta`` -> ``runstate.runs.reducer``."""
    relative = meta.relative_to(root / "src").with_suffix("").with_suffix("")
    return ".".join(relative.parts)


def scores(root: Path = MUTANTS, modules: list[str] | None = None) -> list[ModuleScore]:
    """Every mutated module's score from mutmut's ``.meta`` files, by module name."""
    out = []
    for meta in sorted(root.glob("src/**/*.py.meta")):
        module = module_of(meta, root)
        if modules and module not in modules:
            continue
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        statuses = Counter(status_of(code) for code in codes.values())
        survivors = tuple(sorted(k for k, code in codes.items() if status_of(code) == "survived"))
        out.append(ModuleScore(module, statuses, survivors))
    return out


def report(results: list[ModuleScore], *, min_score: float) -> int:
    """Print the table and the survivors; 1 when a module scored below ``min_score``."""
    print(f"\n{'module':<34} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8}"
          f" {'no tests':>8} {'score':>6}")  # fmt: skip
    low = []
    for r in results:
        s = r.statuses
        print(
            f"{r.module:<34} {r.total:>7} {s['killed']:>6} {s['timeout']:>7} {s['survived']:>8}"
            f" {s['no tests']:>8} {r.score:>6.1%}"
        )
        others = {
            k: v for k, v in s.items() if k not in ("killed", "timeout", "survived", "no tests")
        }
        if others:
            print(f"{'':<34} also: {others}")
        if r.score < min_score:
            low.append(r.module)
    for r in results:
        if r.survivors:
            print(f"\nsurvivors in {r.module} (`mutmut show NAME` shows the change):")
            for name in r.survivors:
                print(f"  {name}")
    if low:
        print(f"\nbelow {min_score:.0%}: {', '.join(low)} (see docs/testing.md)")
        return 1
    return 0


def _give_pytest_9_the_attribute_mutmut_reads() -> None:
    from _pytest.nodes import Node

    if not hasattr(Node, "_nodeid"):
        Node._nodeid = property(lambda node: node.nodeid)  # type: ignore[attr-defined]


def run(modules: list[str], *, max_children: int) -> None:
    """One mutmut run over ``modules`` (every listed module when empty), from scratch."""
    shutil.rmtree(MUTANTS, ignore_errors=True)
    os.environ.setdefault("RUNSTATE_HYPOTHESIS_PROFILE", "mutation")
    # No mutated module is an archive backend: one backend is enough of an oracle.
    os.environ.setdefault("RUNSTATE_ARCHIVE_BACKENDS", "local")
    _give_pytest_9_the_attribute_mutmut_reads()
    from mutmut.__main__ import cli

    names = [m if "__mutmut_" in m else f"{m}.*" for m in modules]
    try:
        cli.main(["run", "--max-children", str(max_children), *names], standalone_mode=False)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "modules", nargs="*", help="runstate.runs.reducer, or a mutant's name (default: all)"
    )
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--min-score", type=float, default=0.9)
    parser.add_argument("--report", action="store_true", help="only report the last run")
    args = parser.parse_args(argv)
    if not args.report:
        run(args.modules, max_children=args.max_children)
    modules = sorted({m.split(".x")[0] if "__mutmut_" in m else m for m in args.modules})
    return report(scores(modules=modules or None), min_score=args.min_score)


if __name__ == "__main__":
    sys.exit(main())
