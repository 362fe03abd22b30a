"""Assignment: which variant a unit gets, as pure functions of the configuration.

Every replica computes the same answer from the same configuration with no shared state,
on any platform and Python version: the hash is SHA-256, never `hash()`, and the float
arithmetic is spelled out so that another language reproduces it bit for bit
(`docs/assignment.md`, vectors in `tests/control/assignment_vectors.json`).

    bucket(seed, unit)  = top 53 bits of SHA-256(UTF-8(seed + "\\x1f" + unit)) / 2**53
    edges(weights)      = running sums of the weights, each divided by the total
    choose(weights, b)  = the first index i with b < edges[i]

The I/O layer supplies the unit id (query parameter, header, else the connection id) and
the forced variant; `resolve` is the one call it makes per session.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from gateway.control.model import Client, Experiment, Variant
from gateway.errors import AuthError

SEPARATOR = "\x1f"  # ASCII unit separator between seed and unit id
_BITS = 53  # a double holds every 53-bit integer exactly, so the bucket is exact and < 1


def bucket(seed: str, unit_id: str) -> float:
    """The unit's position in [0, 1) for this seed, uniform and the same everywhere.

    The top 53 bits of the first 8 bytes of the digest (big-endian) over 2**53: dividing
    the full 64 bits by 2**64 would round the largest values up to exactly 1.0.
    """
    # surrogatepass: a lone surrogate (undecodable input) hashes instead of raising.
    data = f"{seed}{SEPARATOR}{unit_id}".encode("utf-8", "surrogatepass")
    top = int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> (64 - _BITS)
    return top / (1 << _BITS)


def edges(weights: Sequence[float]) -> tuple[float, ...]:
    """The upper end of each variant's range in [0, 1): running sums over the total.

    The last edge is exactly 1.0 (a finite positive total divided by itself), and a
    zero-weight variant's range is empty (its edge equals the previous one).
    """
    running: list[float] = []
    total = 0.0
    for weight in weights:
        total += weight
        running.append(total)
    if not total > 0.0:
        raise ValueError("the total weight must be positive")
    return tuple(end / total for end in running)


def choose(weights: Sequence[float], point: float) -> int:
    """The index of the range that holds `point`; ranges are half-open, [start, end), so a
    point exactly on an edge belongs to the next non-empty range."""
    for index, end in enumerate(edges(weights)):
        if point < end:
            return index
    raise ValueError(f"point {point!r} is not in [0, 1)")


def assign(experiment: Experiment, unit_id: str) -> Variant:
    """The unit's variant: its bucket under the experiment's seed, placed in the weight
    ranges (config order). Validation guarantees a positive total weight."""
    weights = [variant.weight for variant in experiment.variants]
    return experiment.variants[choose(weights, bucket(experiment.seed, unit_id))]


def phase_id(variants: Sequence[Variant], epoch: int | str = 0) -> str:
    """A short fingerprint of what each variant is and gets, in order, e.g. "p-3f2a9c01b7".

    It covers each variant's name, weight, backend and custom endpoint id: a weight change,
    or a new model behind the same variant name, opens a new phase, so analysts never mix
    outcomes of two different splits or models. The configured split (epoch 0) always gives
    the same phase, so replicas agree without talking to each other. A change made through
    the control plane passes its state version (and a random part) as `epoch`: going back
    to an earlier split
    (say after a rollback) opens a new phase rather than reopening the old one, whose
    outcomes belong to another period. Weights are encoded as Python's shortest round-trip
    float repr, -0.0 as 0.0.
    """
    entries = [[v.name, float(v.weight) + 0.0, v.backend.name, v.endpoint_id] for v in variants]
    content: object = entries if epoch == 0 else {"variants": entries, "epoch": epoch}
    canonical = json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "p-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:10]


def resolve(
    experiment: Experiment, unit_id: str, forced: str | None, client: Client
) -> tuple[Variant, bool]:
    """The session's variant and whether it was forced.

    `forced` is the value of the force parameter (`gw-variant`), None when absent; without
    it, a unit that an admin forced (`Experiment.forced_units`) gets its variant. A client
    without `can_force` that sends it gets AuthError (before the name is looked at, so that
    variant names are not revealed); an unknown name raises KeyError, which the I/O layer
    answers with HTTP 400 (WebSocket: before the upgrade).
    """
    if forced is None:
        pinned = experiment.forced_units.get(unit_id)
        if pinned is not None:
            return experiment.variant(pinned), True
        return assign(experiment, unit_id), False
    if not client.can_force:
        raise AuthError(f"client {client.name!r} may not force a variant")
    return experiment.variant(forced), True


def shadow_variants(experiment: Experiment, primary: Variant) -> tuple[Variant, ...]:
    """The variants that shadow a session served by `primary`: the configured shadows,
    in order, less the primary itself."""
    return tuple(experiment.variant(name) for name in experiment.shadows if name != primary.name)
