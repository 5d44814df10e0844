"""Every test carries exactly one tier, ``unit`` or ``integration``.

The tiers are defined in tests/conftest.py; ``make test-fast`` runs the unit tier. Slow tests and
tests that ask for a trained root are integration tests, never unit tests.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.common import PROJECT_ROOT

# Integration: run alone, this module collects the suite in a pytest subprocess.
pytestmark = pytest.mark.integration

BAD = "(not unit and not integration) or (unit and integration) or (slow and not integration)"
"""Tests with no tier or both, or slow but not integration."""


def _bad_in_the_suite() -> list[str]:
    """The node ids of the whole suite that ``-m BAD`` selects (collected in a subprocess)."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["-m", BAD, "tests"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode in (0, 5), out.stdout + out.stderr  # 5: nothing selected
    return [line for line in out.stdout.splitlines() if "::" in line]


def _bad(item: pytest.Item) -> bool:
    names = {m.name for m in item.iter_markers()}
    tiers = names & {"unit", "integration"}
    return len(tiers) != 1 or ("slow" in names and "integration" not in names)


def test_every_test_has_exactly_one_tier(request: pytest.FixtureRequest) -> None:
    """The tests this session collected (all of them under ``make test``: no extra cost); run
    alone, the whole suite's, collected in a subprocess."""
    items = request.session.items
    if all(item.path == request.path for item in items):
        bad = _bad_in_the_suite()
    else:
        bad = [item.nodeid for item in items if _bad(item)]
    assert bad == [], "tests without exactly one of unit/integration (tests/conftest.py):\n" + (
        "\n".join(bad)
    )


def test_tests_that_train_or_run_a_subprocess_are_integration(
    request: pytest.FixtureRequest,
) -> None:
    """A test asking for a fixture of ``conftest.INTEGRATION_FIXTURES`` (it trains, or runs a
    subprocess or git), even through another fixture, must carry the integration tier itself:
    nothing marks it behind its back."""
    import conftest

    wrong = [
        item.nodeid
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and conftest.INTEGRATION_FIXTURES & set(item.fixturenames)
        and not item.get_closest_marker("integration")
    ]
    assert wrong == [], "tests using a training/subprocess fixture but not integration:\n" + (
        "\n".join(wrong)
    )


def test_tiers_are_registered(pytestconfig: pytest.Config) -> None:
    """Registered in pyproject.toml: ``pytest --markers`` lists them; a typo draws a warning."""
    registered = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert registered >= {"unit", "integration", "slow"}
