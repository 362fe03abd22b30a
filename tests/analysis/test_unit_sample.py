"""The error analysis's sample of units: whole units, about the share asked for, the same
units in Python and in SQL."""

from __future__ import annotations

import duckdb

from gateway.analysis.unit_sample import UnitSample, sampled, unit_key
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource


def record(unit: str, role: Role = Role.PRIMARY) -> OutcomeRecord:
    return OutcomeRecord(
        kind=Kind.UTTERANCE,
        experiment="e",
        phase="p",
        variant="v",
        backend="b",
        role=role,
        client="c",
        unit=unit,
        unit_source=UnitSource.CANARY if role is Role.CANARY else UnitSource.QUERY,
        session_id="s",
        protocol=Protocol.USP,
        status="Success",
        utterance_index=0,
    )


def test_no_sample_while_everything_fits() -> None:
    assert UnitSample.for_labelled(20_000, 20_000) is None
    assert UnitSample.for_labelled(0, 1) is None


def test_the_share_of_units_kept_is_the_share_asked_for() -> None:
    sample = UnitSample.for_labelled(100_000, 20_000)
    assert sample is not None
    assert sample.share == 0.2
    units = [f"{i:032x}" for i in range(20_000)]
    kept = sum(sample.keeps(unit) for unit in units)
    assert abs(kept / len(units) - 0.2) < 0.02  # 0.2 ± 3.5 standard errors


def test_whole_units_and_every_canary_are_kept() -> None:
    sample = UnitSample.for_labelled(1_000, 100)
    assert sample is not None
    records = [record(f"u{i % 50}") for i in range(500)] + [record("item", Role.CANARY)]
    found = sampled(records, sample)
    units = {r.unit for r in found if r.role is Role.PRIMARY}
    assert units
    assert len(units) < 50
    for unit in units:  # all ten records of each kept unit
        assert sum(r.unit == unit for r in found) == 10
    assert any(r.role is Role.CANARY for r in found)


def test_sql_chooses_the_same_units() -> None:
    units = [f"unit-{i}" for i in range(500)] + ["ünïcode", ""]
    con = duckdb.connect()
    keys = dict(
        con.execute("SELECT u, substr(md5(u), 1, 8) FROM unnest(?) AS t(u)", [units]).fetchall()
    )
    assert keys == {unit: unit_key(unit) for unit in units}
