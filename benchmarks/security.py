"""Security figures of the federated store (issue 14): the API fuzzed from its OpenAPI schema,
access control tried over random worlds, and the hostile inputs the suite holds.

Runs the suite's own tests with more examples than CI does (``SCOPEFLOW_FUZZ_EXAMPLES``,
``SCOPEFLOW_ACCESS_WORLDS``; defaults here 25 and 40), on SQLite and PostgreSQL, and counts:
fuzzed requests sent and 5xx answers seen (goal 0), worlds tried and access violations found
(goal 0), and the distinct bad inputs the suite sends. Writes ``results/security.json``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _common import write_result

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/storage/test_fuzz_api.py",
    "tests/storage/test_access_property.py",
    "tests/storage/test_hostile_input.py",
    "tests/storage/test_attacks.py",
]


class _Outcomes:
    """Collects each test's outcome by node id."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.outcomes[report.nodeid] = report.outcome


def main() -> None:
    os.environ.setdefault("SCOPEFLOW_FUZZ_EXAMPLES", "25")
    os.environ.setdefault("SCOPEFLOW_ACCESS_WORLDS", "40")
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    outcomes = _Outcomes()
    t0 = time.perf_counter()
    pytest.main(["-q", "-p", "no:cacheprovider", "-o", "timeout=1800", *TESTS], plugins=[outcomes])
    seconds = time.perf_counter() - t0

    from tests.storage import test_access_property, test_attacks, test_fuzz_api, test_hostile_input

    def failed(prefix: str) -> list[str]:
        return [n for n, o in outcomes.outcomes.items() if prefix in n and o == "failed"]

    attack_tests = [n for n in dir(test_attacks) if n.startswith("test_")]
    hostile_tests = [n for n in dir(test_hostile_input) if n.startswith("test_") and "4xx" not in n]
    write_result(
        "security",
        {
            "databases": ["sqlite", "postgresql"],
            "fuzz_examples_per_operation": int(os.environ["SCOPEFLOW_FUZZ_EXAMPLES"]),
            "fuzzed_requests": test_fuzz_api.TALLY.requests,
            "fuzzed_5xx": len(test_fuzz_api.TALLY.server_errors),
            "fuzzed_5xx_examples": test_fuzz_api.TALLY.server_errors[:10],
            "fuzz_failures": failed("test_fuzz_api"),
            "access_worlds_tried": test_access_property.TRIED["worlds"],
            "access_user_record_checks": test_access_property.TRIED["checks"],
            "access_violations": failed("test_no_route_reaches_beyond_the_rules"),
            "distinct_bad_requests": len(test_hostile_input.BAD_INPUTS),
            "attack_and_hostile_scenarios": len(attack_tests) + len(hostile_tests),
            "other_failures": [
                n
                for n, o in outcomes.outcomes.items()
                if o == "failed" and "fuzz" not in n and "beyond" not in n
            ],
            "seconds": round(seconds, 1),
        },
    )


if __name__ == "__main__":
    main()
