"""Tests for gateway.control.assignment: buckets, ranges, vectors, split quality, stickiness,
phases, forcing and shadows."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.control.assignment import (
    assign,
    bucket,
    choose,
    edges,
    phase_id,
    resolve,
    shadow_variants,
)
from gateway.control.model import Backend, Client, Experiment, Targeting, Variant
from gateway.errors import AuthError

VECTORS = Path(__file__).with_name("assignment_vectors.json")
BACKEND = Backend("local", "ws://127.0.0.1:5000")
UNITS = 10_000


def load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]
    return vectors


def make_experiment(
    weights: Sequence[float], seed: str = "exp", shadows: tuple[str, ...] = ()
) -> Experiment:
    variants = tuple(
        Variant(f"v{index}", BACKEND, None, float(weight)) for index, weight in enumerate(weights)
    )
    return Experiment(
        id="exp",
        seed=seed,
        control="v0",
        variants=variants,
        shadows=shadows,
        targeting=Targeting(),
        phase=phase_id(variants),
    )


def random_units(seed: int, count: int = UNITS) -> list[str]:
    rng = random.Random(seed)
    return [f"unit-{rng.getrandbits(64):016x}" for _ in range(count)]


def chi2_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for chi-square with integer df, by the closed-form series."""
    half = statistic / 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= half / k
            total += term
        return math.exp(-half) * total
    total = math.erfc(math.sqrt(half))
    term = math.sqrt(half) / math.gamma(1.5)
    for k in range(1, (df + 1) // 2):
        total += math.exp(-half) * term
        term *= half / (k + 0.5)
    return total


def chisquare_p(observed: Sequence[int], expected_shares: Sequence[float]) -> float:
    """Goodness-of-fit p-value of observed counts against expected shares."""
    n = sum(observed)
    statistic = sum(
        (seen - n * share) ** 2 / (n * share)
        for seen, share in zip(observed, expected_shares, strict=True)
    )
    return chi2_sf(statistic, len(observed) - 1)


def reference_bucket(seed: str, unit_id: str) -> float:
    """The documented algorithm, written out independently of the implementation."""
    digest = hashlib.sha256(seed.encode() + b"\x1f" + unit_id.encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2**53


@pytest.mark.parametrize(
    ("statistic", "df", "p"),
    [
        (3.841459, 1, 0.05),
        (10.827566, 1, 0.001),
        (5.991465, 2, 0.05),
        (13.815511, 2, 0.001),
        (7.814728, 3, 0.05),
        (9.487729, 4, 0.05),
    ],
)
def test_chi2_helper_matches_tables(statistic: float, df: int, p: float) -> None:
    """The test's chi-square tail agrees with published critical values."""
    assert chi2_sf(statistic, df) == pytest.approx(p, rel=1e-4)


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: f"{v['seed']}/{v['unit_id'][:12]}")
def test_vectors(vector: dict[str, Any]) -> None:
    """Every vector's bucket and variant index are reproduced exactly."""
    assert bucket(vector["seed"], vector["unit_id"]) == vector["bucket"]
    assert choose(vector["weights"], vector["bucket"]) == vector["variant_index"]
    experiment = make_experiment(vector["weights"], seed=vector["seed"])
    assert assign(experiment, vector["unit_id"]) == experiment.variants[vector["variant_index"]]


def test_vectors_cover_the_hard_cases() -> None:
    """The vectors include empty, non-ASCII and long unit ids and zero weights."""
    vectors = load_vectors()
    units = [vector["unit_id"] for vector in vectors]
    assert len(vectors) >= 30
    assert "" in units
    assert any(not unit.isascii() for unit in units)
    assert any(len(unit) >= 1000 for unit in units)
    assert any(0.0 in vector["weights"] for vector in vectors)


@pytest.mark.parametrize(
    ("seed", "unit_id"),
    [("exp-1", "user-1"), ("exp-1", ""), ("banking-ab", "用户-42"), ("s", "x" * 5000)],
)
def test_bucket_matches_independent_hashlib(seed: str, unit_id: str) -> None:
    """bucket() is the top 53 bits of SHA-256(seed, U+001F, unit) over 2**53."""
    assert bucket(seed, unit_id) == reference_bucket(seed, unit_id)


@given(st.text(), st.text())
def test_bucket_in_unit_interval_and_exact(seed: str, unit_id: str) -> None:
    """A bucket is in [0, 1), a multiple of 2**-53, and the same on every call."""
    value = bucket(seed, unit_id)
    assert 0.0 <= value < 1.0
    assert (value * 2**53).is_integer()
    assert bucket(seed, unit_id) == value


def test_bucket_never_raises_on_lone_surrogates() -> None:
    """An undecodable unit id (lone surrogate) still gets a stable bucket."""
    assert bucket("exp", "bad\udc80id") == bucket("exp", "bad\udc80id")


def test_bucket_separates_seed_and_unit() -> None:
    """Moving characters between seed and unit id changes the bucket."""
    assert bucket("ab", "c") != bucket("a", "bc")


def test_edges_are_cumulative_shares_ending_at_one() -> None:
    """Edges are running sums over the total; the last is exactly 1.0."""
    assert edges([50, 50]) == (0.5, 1.0)
    assert edges([90, 10]) == (0.9, 1.0)
    assert edges([1, 0, 3]) == (0.25, 0.25, 1.0)
    assert edges([0.1, 0.2, 0.7])[-1] == 1.0
    assert edges([1, 1, 1])[-1] == 1.0


@pytest.mark.parametrize("weights", [[], [0, 0], [0.0]])
def test_edges_refuse_zero_total(weights: list[float]) -> None:
    """Weights that give no variant any traffic are an error, not an equal split."""
    with pytest.raises(ValueError, match="positive"):
        edges(weights)


@pytest.mark.parametrize(
    ("weights", "point", "index"),
    [
        ([1, 1], 0.0, 0),
        ([1, 1], math.nextafter(0.5, 0.0), 0),
        ([1, 1], 0.5, 1),  # exactly on the edge: the next range
        ([1, 1], math.nextafter(1.0, 0.0), 1),
        ([1, 3], 0.25, 1),
        ([1, 0, 1], 0.5, 2),  # the zero-weight range is empty
        ([0, 1], 0.0, 1),
        ([1, 0], math.nextafter(1.0, 0.0), 0),
        ([1, 2, 1], 0.75, 2),
    ],
)
def test_choose_range_boundaries(weights: list[float], point: float, index: int) -> None:
    """Ranges are half-open [start, end): a point on an edge goes to the next range."""
    assert choose(weights, point) == index


def test_choose_refuses_points_outside_unit_interval() -> None:
    """A point of 1.0 or more lies in no range."""
    with pytest.raises(ValueError, match="not in"):
        choose([1, 1], 1.0)


def test_zero_weight_variant_never_assigned() -> None:
    """A variant with weight zero gets no unit at all."""
    experiment = make_experiment([1, 0, 1])
    assigned = {assign(experiment, unit).name for unit in random_units(7, 2000)}
    assert assigned == {"v0", "v2"}


def test_assign_is_deterministic() -> None:
    """The same unit gets the same variant from equal configurations built separately."""
    units = random_units(11, 500)
    first, second = make_experiment([30, 70]), make_experiment([30, 70])
    assert [assign(first, unit) for unit in units] == [assign(second, unit) for unit in units]


@pytest.mark.parametrize(("weights", "sample_seed"), [([50, 50], 1), ([90, 10], 2), ([1, 1, 1], 3)])
def test_split_matches_weights(weights: list[float], sample_seed: int) -> None:
    """10,000 seeded random units split as the weights say (chi-square p > 0.001)."""
    experiment = make_experiment(weights)
    counts = Counter(assign(experiment, unit).name for unit in random_units(sample_seed))
    observed = [counts[variant.name] for variant in experiment.variants]
    total = sum(weights)
    assert chisquare_p(observed, [weight / total for weight in weights]) > 0.001


def test_buckets_are_uniform() -> None:
    """Buckets of 10,000 units fill ten equal bins evenly (chi-square p > 0.001)."""
    bins = Counter(int(bucket("exp", unit) * 10) for unit in random_units(4))
    assert chisquare_p([bins[index] for index in range(10)], [0.1] * 10) > 0.001


def test_weight_change_moves_only_the_changed_interval() -> None:
    """50/50 to 60/40 moves exactly the units with bucket in [0.5, 0.6), all from v1 to v0."""
    before, after = make_experiment([50, 50]), make_experiment([60, 40])
    units = random_units(5)
    moved = [unit for unit in units if assign(before, unit).name != assign(after, unit).name]
    assert moved == [unit for unit in units if 0.5 <= bucket("exp", unit) < 0.6]
    assert all(assign(before, unit).name == "v1" for unit in moved)
    assert all(assign(after, unit).name == "v0" for unit in moved)
    assert 0.08 * UNITS < len(moved) < 0.12 * UNITS


def test_different_seeds_decorrelate() -> None:
    """Assignments under two seeds are independent (2x2 chi-square test, p > 0.001)."""
    first, second = make_experiment([50, 50], seed="a"), make_experiment([50, 50], seed="b")
    table = Counter(
        (assign(first, unit).name, assign(second, unit).name) for unit in random_units(6)
    )
    n = sum(table.values())
    rows = {name: table[(name, "v0")] + table[(name, "v1")] for name in ("v0", "v1")}
    cols = {name: table[("v0", name)] + table[("v1", name)] for name in ("v0", "v1")}
    statistic = sum(
        (table[(row, col)] - rows[row] * cols[col] / n) ** 2 / (rows[row] * cols[col] / n)
        for row in rows
        for col in cols
    )
    assert chi2_sf(statistic, 1) > 0.001
    agree = sum(count for (row, col), count in table.items() if row == col)
    assert abs(agree / n - 0.5) < 0.03


def test_phase_id_stable_and_weight_sensitive() -> None:
    """The same split gives the same phase; a weight, name, order or model change another."""
    base = make_experiment([50, 50]).variants
    assert phase_id(base) == phase_id(make_experiment([50.0, 50.0]).variants)
    assert phase_id(base).startswith("p-")
    assert len(phase_id(base)) == 12
    others = {
        phase_id(make_experiment([60, 40]).variants),
        phase_id(make_experiment([50, 50.000001]).variants),
        phase_id(make_experiment([1, 1]).variants),
        phase_id(tuple(reversed(base))),
        phase_id((base[0], Variant("challenger", BACKEND, None, 50.0))),
        phase_id((base[0], Variant(base[1].name, BACKEND, "another-model", 50.0))),
    }
    assert phase_id(base) not in others
    assert len(others) == 6


def test_phase_id_is_pinned() -> None:
    """The phase of a known split never changes across releases."""
    assert phase_id(make_experiment([50, 50]).variants) == PINNED_PHASE


def test_phase_id_treats_negative_zero_as_zero() -> None:
    """-0.0 and 0.0 are the same weight and the same phase."""
    assert phase_id(make_experiment([1, 0.0]).variants) == phase_id(
        make_experiment([1, -0.0]).variants
    )


def test_resolve_assigns_when_not_forced() -> None:
    """Without a forced name, resolve is assign and reports not forced."""
    experiment = make_experiment([50, 50])
    client = Client("app", "0" * 64)
    assert resolve(experiment, "user-1", None, client) == (assign(experiment, "user-1"), False)


def test_resolve_forces_for_permitted_client() -> None:
    """A client with can_force gets the named variant whatever its bucket."""
    experiment = make_experiment([100, 0])
    qa = Client("qa", "0" * 64, can_force=True)
    assert resolve(experiment, "user-1", "v1", qa) == (experiment.variants[1], True)


def test_resolve_refuses_force_without_permission() -> None:
    """A client without can_force that forces gets AuthError, even for a bad name."""
    experiment = make_experiment([50, 50])
    app = Client("app", "0" * 64)
    with pytest.raises(AuthError):
        resolve(experiment, "user-1", "v1", app)
    with pytest.raises(AuthError):
        resolve(experiment, "user-1", "no-such-variant", app)


def test_resolve_unknown_forced_variant_is_key_error() -> None:
    """A permitted client forcing an unknown name gets KeyError (HTTP 400 at the edge)."""
    experiment = make_experiment([50, 50])
    qa = Client("qa", "0" * 64, can_force=True)
    with pytest.raises(KeyError):
        resolve(experiment, "user-1", "v9", qa)


def test_shadow_variants_exclude_the_primary() -> None:
    """Shadows are the configured ones in order, never the session's own variant."""
    experiment = make_experiment([1, 1, 1], shadows=("v2", "v1"))
    names = [variant.name for variant in shadow_variants(experiment, experiment.variants[0])]
    assert names == ["v2", "v1"]
    names = [variant.name for variant in shadow_variants(experiment, experiment.variants[1])]
    assert names == ["v2"]


PINNED_PHASE = "p-9ed3ec2ac8"  # [["v0", 50.0, BACKEND, null], ["v1", 50.0, BACKEND, null]]
