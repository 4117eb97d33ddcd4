"""tests/conftest.py's CI rule: with CI=true a skip (in a test, a fixture, a mark or at collection) is a failure
whose message carries the skip reason; without it, a skip stays a skip; xfail is left alone either way."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
REASON = "frobnicator is not installed (apt-get install frobnicator)"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A throw-away project using this repository's tests/conftest.py as its own."""
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    unit: u\n    integration: i\n")
    return pytester


def test_skip_fails_under_ci_with_the_reason(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    project.makepyfile(f"import pytest\n\ndef test_needs_it():\n    pytest.skip({REASON!r})\n")
    monkeypatch.setenv("CI", "true")
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*CI=true: a prerequisite is missing: {REASON}*"])


def test_skip_stays_a_skip_without_ci(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    project.makepyfile(f"import pytest\n\ndef test_needs_it():\n    pytest.skip({REASON!r})\n")
    monkeypatch.delenv("CI", raising=False)
    result = project.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*{REASON}*"])
    monkeypatch.setenv("CI", "false")
    project.runpytest().assert_outcomes(skipped=1)


def test_fixture_and_mark_skips_fail_under_ci_but_xfail_does_not(
        project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    project.makepyfile(f"""
        import pytest

        @pytest.fixture
        def service():
            pytest.skip({REASON!r})

        def test_fixture(service):
            pass

        @pytest.mark.skipif(True, reason="no cross compiler")
        def test_mark():
            pass

        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert False

        def test_passes():
            pass
    """)
    monkeypatch.setenv("CI", "true")
    result = project.runpytest()
    result.assert_outcomes(passed=1, errors=2, xfailed=1)  # a failed setup is reported as an error
    result.stdout.fnmatch_lines_random([f"*CI=true: a prerequisite is missing: {REASON}*",
                                        "*CI=true: a prerequisite is missing: no cross compiler*"])


def test_module_level_skip_is_a_collection_error_under_ci(
        project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    project.makepyfile(test_whole="import pytest\npytest.skip('no GPU here', allow_module_level=True)\n"
                                  "def test_a():\n    pass\n")
    monkeypatch.setenv("CI", "true")
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*CI=true: a prerequisite is missing: no GPU here*"])
    monkeypatch.delenv("CI")
    project.runpytest().assert_outcomes(skipped=1)
