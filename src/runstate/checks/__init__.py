"""``runstate check``: the article's five launch checks, run against a live deployment.

A synthetic run (id ``check-<time>-<hex>``, agent ``runstate-check``) goes through a real
agent process that is killed mid-step and restarted, waits for an approval, is approved,
and runs a step twice; its side effects go to a counting service the check starts on
127.0.0.1. Then the check searches every place a run's data lands for the run's fake
personal data, and sizes the storage tiers from measured record sizes:

1. restart mid-task (:mod:`.scenario`);
2. pause at approval, visible within 10 s (:mod:`.scenario`);
3. the same step twice makes one side effect (:mod:`.scenario`);
4. where personal data sits: clear, masked or absent per place (:mod:`.personal_data`);
5. the volume estimate per tier (:mod:`.volume`).

This package sits on the retention layer and uses the agent SDK (``runstate.agents``, the
same layer): a check of the whole deployment needs both. The synthetic run's agent and
its counting side-effect service are the stand-ins of :mod:`runstate.testing`.
"""

from runstate.checks.deployment import CheckedDeployment, LaunchCheckConfig
from runstate.checks.personal_data import Exposure, Place
from runstate.checks.results import CheckResult, LaunchReport, NotRun, Verdict
from runstate.checks.runner import CHECK_NAMES, run_launch_checks
from runstate.checks.synthetic import RUN_ID_PREFIX, PiiField, pii_plan

__all__ = [
    "CHECK_NAMES",
    "RUN_ID_PREFIX",
    "CheckResult",
    "CheckedDeployment",
    "Exposure",
    "LaunchCheckConfig",
    "LaunchReport",
    "NotRun",
    "PiiField",
    "Place",
    "Verdict",
    "pii_plan",
    "run_launch_checks",
]
