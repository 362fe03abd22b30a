"""Attempts and what users saw: a failure the SDK retried within its client session is a
failed attempt but no outcome; the report shows both failure rates."""

from __future__ import annotations

import dataclasses
from typing import Any

from traffic import Traffic

from gateway.analysis.html_report import render_html
from gateway.analysis.observations import RETRY_GAP_S, retried_attempts
from gateway.analysis.text_report import render_text
from gateway.outcomes.record import OutcomeRecord

CLOSED = ("Error", "upstream_close_1011")


def failure(traffic: Traffic, variant: str, at: int, client_session: str | None) -> OutcomeRecord:
    """A failed attempt (its own session id) of `client_session`."""
    record = traffic.failure(variant, at, *CLOSED)
    record = dataclasses.replace(record, client_session=client_session, unit=f"u-{client_session}")
    traffic.records[-1] = record
    return record


def success(traffic: Traffic, variant: str, at: int, client_session: str | None) -> OutcomeRecord:
    """An attempt of `client_session` that recognised an utterance."""
    return traffic.utterance(variant, at, client_session=client_session, unit=f"u-{client_session}")


def sdk_session(traffic: Traffic, variant: str, at: int, name: str, failures: int) -> None:
    """One SDK recognition: `failures` failed attempts, then (below 5) a successful one."""
    for attempt in range(failures):
        failure(traffic, variant, at + attempt, name)
    if failures < 5:
        success(traffic, variant, at + failures, name)


def custom(report: dict[str, Any]) -> dict[str, Any]:
    return {v["name"]: v for v in report["phases"][0]["variants"]}["custom"]


def test_retried_failures_are_failed_attempts_but_not_errors_users_saw() -> None:
    traffic = Traffic()
    sdk_session(traffic, "custom", 0, "c1", failures=2)  # recovered on the 3rd attempt
    sdk_session(traffic, "custom", 10, "c2", failures=5)  # gave up: its user saw an error
    sdk_session(traffic, "custom", 20, "c3", failures=0)
    variant = custom(traffic.report())
    failures = variant["failures"]
    assert (failures["attempts"]["count"], failures["attempts"]["total"]) == (7, 9)
    assert (failures["client_sessions"]["count"], failures["client_sessions"]["total"]) == (1, 3)
    assert failures["retried"] == 2
    assert failures["client_sessions"]["rate"] == 1 / 3
    low, high = failures["attempts"]["ci"]
    assert low < 7 / 9 < high
    # The outcomes are what users saw: 2 results and 1 error, not 6 more errors.
    assert variant["outcomes"] == 3
    assert variant["rates"]["error"]["count"] == 1
    assert variant["sessions"] == 9  # every attempt is a gateway session


def test_without_client_sessions_every_failure_is_an_error_users_saw() -> None:
    """Version-2 records, or a client that sends no connection id: nothing to group."""
    traffic = Traffic()
    sdk_session(traffic, "custom", 0, "c1", failures=2)
    traffic.records = [dataclasses.replace(r, client_session=None) for r in traffic.records]
    failures = custom(traffic.report())["failures"]
    assert failures["attempts"]["count"] == failures["client_sessions"]["count"] == 2
    assert failures["retried"] == 0


def test_a_later_attempt_long_after_the_failure_is_no_retry() -> None:
    traffic = Traffic()
    failure(traffic, "custom", 0, "c1")
    success(traffic, "custom", int(RETRY_GAP_S) + 1, "c1")
    failure(traffic, "custom", 1000, "c2")
    success(traffic, "custom", 1000 + int(RETRY_GAP_S), "c2")
    assert retried_attempts(traffic.records) == {traffic.records[2].session_id}


def test_a_failure_recorded_after_its_retry_began_is_still_retried() -> None:
    """Attempts are ordered by their first record; the failed one's last may come later."""
    traffic = Traffic()
    first = success(traffic, "custom", 0, "c1")
    success(traffic, "custom", 5, "c1")
    late = failure(traffic, "custom", 6, "c1")
    traffic.records[-1] = dataclasses.replace(late, session_id=first.session_id)
    assert retried_attempts(traffic.records) == {first.session_id}


def test_a_retry_served_by_control_counts_for_the_assigned_variant() -> None:
    """The challenger's attempt failed, the retry failed over to control: its user got
    results, so the client session (assigned to the challenger) did not fail."""
    traffic = Traffic()
    failure(traffic, "custom", 0, "c1")
    success(traffic, "base", 1, "c1")
    traffic.records[-1] = dataclasses.replace(traffic.records[-1], failover_from="custom")
    traffic.utterance("base", 2)  # a phase needs an outcome to be reported
    variant = custom(traffic.report())
    assert variant["failed_over"] == 1
    failures = variant["failures"]
    assert (failures["attempts"]["count"], failures["attempts"]["total"]) == (1, 1)
    assert (failures["client_sessions"]["count"], failures["client_sessions"]["total"]) == (0, 1)


def test_the_error_guardrail_judges_what_users_saw() -> None:
    """Half of the challenger's first attempts fail and the SDK retries each: users see no
    errors and the guardrail is ok. Counting attempts, it would have regressed."""
    traffic = Traffic()
    traffic.ab(40, base_error=0.3, custom_error=0.05)
    for index in range(40):
        sdk_session(traffic, "custom", 100 + 10 * index, f"c{index}", failures=index % 2)

    def error_guardrail(report: dict[str, Any]) -> str:
        [comparison] = report["phases"][0]["comparisons"]
        return {g["metric"]: g["status"] for g in comparison["guardrails"]}["error_rate"]

    report = traffic.report()
    failures = custom(report)["failures"]
    assert failures["attempts"]["count"] == 20
    assert failures["client_sessions"]["count"] == 0
    assert error_guardrail(report) == "ok"
    traffic.records = [dataclasses.replace(r, client_session=None) for r in traffic.records]
    assert error_guardrail(traffic.report()) == "regressed"


def test_the_terminal_and_html_reports_show_both_rates() -> None:
    traffic = Traffic()
    sdk_session(traffic, "custom", 0, "c1", failures=2)
    sdk_session(traffic, "base", 10, "b1", failures=0)
    report = traffic.report()
    text = render_text(report)
    assert "failed attempts [95% CI]" in text
    assert "failed as users saw [95% CI]" in text
    [row] = [line for line in text.splitlines() if line.startswith("custom ") and "66.7%" in line]
    assert "0.0%" in row
    html = render_html(report)
    assert 'data-table="failures"' in html
    assert "Failed as users saw" in html
    # A report of an older schema without the block renders without the table.
    for variant in report["phases"][0]["variants"]:
        del variant["failures"]
    assert "failed attempts" not in render_text(report)
    assert 'data-table="failures"' not in render_html(report)
