"""Experiment state changes: validation, phases, audit entries, and the overlay on routing."""

from __future__ import annotations

import json

import pytest

from gateway.config.gateway_config import build_gateway_config
from gateway.config.settings import Settings
from gateway.control.assignment import resolve
from gateway.control.model import Client, Experiment
from gateway.control.state import (
    HEALTH_ACTOR,
    MAX_FORCED_UNITS,
    Changes,
    ExperimentState,
    apply,
    initial_state,
    layout_of,
)
from gateway.errors import ControlError

AT = "2026-11-21T10:00:00.000Z"
CLIENT = Client("app", "0" * 64)


def experiment(
    weights: tuple[float, float] = (50, 50), shadows: list[str] | None = None
) -> Experiment:
    settings = Settings.model_validate(
        {
            "gateway": {
                "backends": {
                    "alpha": {"url": "ws://127.0.0.1:1"},
                    "bravo": {"url": "ws://127.0.0.1:2"},
                },
                "experiments": [
                    {
                        "id": "ab",
                        "control": "a",
                        "variants": [
                            {"name": "a", "backend": "alpha", "weight": weights[0]},
                            {"name": "b", "backend": "bravo", "weight": weights[1]},
                        ],
                        "shadows": shadows or [],
                    }
                ],
            }
        }
    )
    return build_gateway_config(settings.gateway).experiments[0]


def changes(exp: Experiment, reason: str | None = None) -> Changes:
    return Changes(exp, "alice", AT, reason)


def test_initial_state_is_the_configuration() -> None:
    exp = experiment((30, 70))
    state = initial_state(exp)
    assert state.version == 0
    assert state.status == "running"
    assert state.weights == {"a": 30, "b": 70}
    assert state.phase == exp.phase
    assert apply(exp, state) == exp


def test_set_weights_opens_a_new_phase_and_audits_before_and_after() -> None:
    exp = experiment()
    state = initial_state(exp)
    change = changes(exp, "ramp").set_weights(state, {"b": 10, "a": 90})
    new = change.state
    assert new.version == 1
    assert new.weights == {"a": 90.0, "b": 10.0}
    assert new.phase != state.phase
    assert new.phases[0].weights == {"a": 90.0, "b": 10.0}
    assert new.phases[1].phase == state.phase
    assert (new.updated_by, new.updated_at) == ("alice", AT)
    audit = change.audit
    assert (audit.actor, audit.action, audit.reason) == ("alice", "set_weights", "ramp")
    assert audit.before["weights"] == {"a": 50.0, "b": 50.0}
    assert audit.after["weights"] == {"a": 90.0, "b": 10.0}
    assert json.loads(audit.to_json())["after"]["version"] == 1
    routed = apply(exp, new)
    assert [v.weight for v in routed.variants] == [90.0, 10.0]
    assert routed.phase == new.phase


def test_the_same_split_again_is_still_a_new_phase() -> None:
    """A return to an earlier split (after a rollback, say) never reopens the old phase."""
    exp = experiment()
    first = changes(exp).set_weights(initial_state(exp), {"b": 0}).state
    again = changes(exp).set_weights(first, {"b": 50}).state
    assert again.weights == initial_state(exp).weights
    assert len({initial_state(exp).phase, first.phase, again.phase}) == 3


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({}, "name at least one"),
        ({"c": 1}, "weights.c: not a variant"),
        ({"a": -1}, "weights.a: must be a finite number >= 0"),
        ({"a": float("nan")}, "weights.a: must be a finite number >= 0"),
        ({"a": True}, "weights.a: must be a number"),
        ({"a": "1"}, "weights.a: must be a number"),
        ({"a": 0, "b": 0}, "every weight would be zero"),
    ],
)
def test_bad_weights_are_refused_naming_the_field(weights: dict[str, object], message: str) -> None:
    exp = experiment()
    with pytest.raises(ControlError, match=message) as caught:
        changes(exp).set_weights(initial_state(exp), weights)  # type: ignore[arg-type]
    assert caught.value.status == 400


def test_pause_sends_everyone_to_control_and_resume_restores_the_weights() -> None:
    exp = experiment((20, 80))
    paused = changes(exp).pause(initial_state(exp)).state
    assert paused.status == "paused"
    assert paused.weights == {"a": 20, "b": 80}  # kept
    assert paused.effective_weights() == {"a": 1.0, "b": 0.0}
    assert all(resolve(apply(exp, paused), f"u{i}", None, CLIENT)[0].name == "a" for i in range(50))
    # Weights set while paused are kept for the resume, and open no phase meanwhile.
    reweighted = changes(exp).set_weights(paused, {"b": 50}).state
    assert reweighted.phase == paused.phase
    resumed = changes(exp).resume(reweighted).state
    assert resumed.status == "running"
    assert resumed.effective_weights() == {"a": 20.0, "b": 50.0}
    assert resumed.phase not in (paused.phase, initial_state(exp).phase)


def test_status_transitions_that_make_no_sense_are_conflicts() -> None:
    exp = experiment()
    state = initial_state(exp)
    with pytest.raises(ControlError) as caught:
        changes(exp).resume(state)
    assert caught.value.status == 409
    stopped = changes(exp).stop(state, "b").state
    for attempt in (
        lambda: changes(exp).pause(stopped),
        lambda: changes(exp).stop(stopped, None),
        lambda: changes(exp).set_weights(stopped, {"a": 1}),
        lambda: changes(exp).force(stopped, "u", "a"),
    ):
        with pytest.raises(ControlError) as caught:
            attempt()
        assert caught.value.status == 409


def test_stop_serves_one_variant_without_shadows() -> None:
    exp = experiment(shadows=["b"])
    stopped = changes(exp).stop(initial_state(exp), "b").state
    routed = apply(exp, stopped)
    assert routed.shadows == ()
    assert routed.status == "stopped"
    assert all(resolve(routed, f"u{i}", None, CLIENT)[0].name == "b" for i in range(50))
    with pytest.raises(ControlError, match="serve: 'z' is not a variant"):
        changes(exp).stop(initial_state(exp), "z")


def test_forced_units_get_their_variant_and_are_marked_forced() -> None:
    exp = experiment((100, 0))
    state = changes(exp).force(initial_state(exp), "qa-user", "b").state
    assert state.phase == initial_state(exp).phase  # forcing leaves the split alone
    routed = apply(exp, state)
    assert resolve(routed, "qa-user", None, CLIENT) == (routed.variant("b"), True)
    assert resolve(routed, "someone", None, CLIENT) == (routed.variant("a"), False)
    unforced = changes(exp).unforce(state, "qa-user").state
    assert unforced.forced == {}
    with pytest.raises(ControlError) as caught:
        changes(exp).unforce(unforced, "qa-user")
    assert caught.value.status == 404


@pytest.mark.parametrize(
    ("unit", "variant", "message"),
    [
        ("", "a", "unit: must be"),
        ("x" * 257, "a", "unit: must be"),
        ("u\n", "a", "unit: must be"),
        ("u", "z", "variant: 'z' is not"),
    ],
)
def test_bad_forced_units_are_refused(unit: str, variant: str, message: str) -> None:
    exp = experiment()
    with pytest.raises(ControlError, match=message):
        changes(exp).force(initial_state(exp), unit, variant)


def test_forced_units_are_bounded() -> None:
    exp = experiment()
    state = initial_state(exp)
    state = ExperimentState(
        **{
            **{f: getattr(state, f) for f in state.__dataclass_fields__},
            "forced": {f"u{i}": "a" for i in range(MAX_FORCED_UNITS)},
        }
    )
    with pytest.raises(ControlError, match="at most"):
        changes(exp).force(state, "one-more", "b")
    assert changes(exp).force(state, "u1", "b").state.forced["u1"] == "b"  # a replacement


def test_rollback_zeroes_the_challenger_once() -> None:
    exp = experiment()
    state = initial_state(exp)
    change = Changes(exp, "guardrail", AT, "error rate").rollback(
        state, ["b"], {"phase": state.phase}
    )
    assert change is not None
    assert change.state.weights == {"a": 50.0, "b": 0.0}
    assert change.audit.action == "rollback"
    assert change.audit.detail == {"variants": ["b"], "phase": state.phase}
    assert Changes(exp, "guardrail", AT, None).rollback(change.state, ["b"], {}) is None


def test_rollback_of_the_only_weighted_variant_gives_control_the_traffic() -> None:
    exp = experiment((0, 100))
    change = Changes(exp, "guardrail", AT, None).rollback(initial_state(exp), ["b"], {})
    assert change is not None
    assert change.state.effective_weights() == {"a": 1.0, "b": 0.0}


def test_reason_is_bounded() -> None:
    with pytest.raises(ControlError, match="reason"):
        changes(experiment(), "x" * 501)


def test_state_documents_round_trip_and_refuse_garbage() -> None:
    exp = experiment()
    state = changes(exp).force(changes(exp).pause(initial_state(exp)).state, "u", "b").state
    assert ExperimentState.from_json(state.to_json()) == state
    for bad in ("{}", "[]", "not json", json.dumps({**json.loads(state.to_json()), "status": "x"})):
        with pytest.raises(ValueError, match="not an experiment state"):
            ExperimentState.from_json(bad)


def test_layout_changes_with_variants_but_not_weights() -> None:
    assert layout_of(experiment((1, 2))) == layout_of(experiment((3, 4)))
    other = experiment()
    renamed = other.__class__(
        **{**{f: getattr(other, f) for f in other.__dataclass_fields__}, "control": "b"}
    )
    assert layout_of(renamed) != layout_of(other)


def three_way(holdout_share: float = 0.05) -> Experiment:
    settings = Settings.model_validate(
        {
            "gateway": {
                "backends": {"alpha": {"url": "ws://127.0.0.1:1"}},
                "experiments": [
                    {
                        "id": "abc",
                        "control": "a",
                        "holdout_share": holdout_share,
                        "variants": [
                            {"name": n, "backend": "alpha", "weight": w}
                            for n, w in (("a", 40), ("b", 30), ("c", 30))
                        ],
                    }
                ],
            }
        }
    )
    return build_gateway_config(settings.gateway).experiments[0]


def test_ship_gives_the_variant_all_but_the_holdout_in_a_new_phase() -> None:
    exp = three_way()
    state = initial_state(exp)
    change = changes(exp, "b wins").ship(state, "b", 0.1)
    new = change.state
    assert new.weights == {"a": 0.1, "b": 0.9, "c": 0.0}
    assert new.phase != state.phase
    assert new.phases[0].weights == {"a": 0.1, "b": 0.9, "c": 0.0}
    assert change.audit.action == "ship"
    assert change.audit.detail == {
        "variant": "b",
        "holdout": 0.1,
        "weights": {"a": 0.1, "b": 0.9, "c": 0.0},
    }
    routed = apply(exp, new)
    assert [v.weight for v in routed.variants] == [0.1, 0.9, 0.0]
    # Shipping again with the same split is a new period all the same.
    assert changes(exp).ship(new, "b", 0.1).state.phase != new.phase


def test_ship_defaults_to_the_configured_holdout_and_resumes_a_paused_experiment() -> None:
    exp = three_way(holdout_share=0.2)
    paused = changes(exp).pause(initial_state(exp)).state
    shipped = changes(exp).ship(paused, "c").state
    assert (shipped.status, shipped.serving) == ("running", None)
    assert shipped.effective_weights() == {"a": 0.2, "b": 0.0, "c": 0.8}


@pytest.mark.parametrize(
    ("variant", "holdout", "message", "status"),
    [
        ("a", 0.05, "variant: 'a' is the control", 400),
        ("z", 0.05, "variant: 'z' is not a variant", 400),
        ("b", 0.0, "holdout: must be a share above 0 and at most 0.5", 400),
        ("b", 0.51, "holdout: must be a share above 0 and at most 0.5", 400),
        ("b", -0.1, "holdout: must be a share above 0", 400),
        ("b", float("nan"), "holdout: must be a share above 0", 400),
        ("b", True, "holdout: must be a number", 400),
        ("b", 10**400, "holdout: must be a share above 0", 400),
    ],
)
def test_bad_ships_are_refused(variant: str, holdout: float, message: str, status: int) -> None:
    exp = three_way()
    with pytest.raises(ControlError, match=message) as caught:
        changes(exp).ship(initial_state(exp), variant, holdout)
    assert caught.value.status == status


def test_a_stopped_experiment_is_neither_shipped_nor_given_a_new_phase() -> None:
    exp = three_way()
    stopped = changes(exp).stop(initial_state(exp), None).state
    for attempt in (
        lambda: changes(exp).ship(stopped, "b", 0.1),
        lambda: changes(exp).new_phase(stopped, {"why": "model"}),
    ):
        with pytest.raises(ControlError, match="is stopped") as caught:
            attempt()
        assert caught.value.status == 409


def test_new_phase_keeps_the_weights_and_opens_a_phase() -> None:
    exp = experiment((30, 70))
    state = initial_state(exp)
    detail = {"variant": "b", "old_model": "m1", "new_model": "base"}
    change = Changes(exp, HEALTH_ACTOR, AT, "model changed").new_phase(state, detail)
    new = change.state
    assert new.weights == state.weights
    assert new.effective_weights() == state.effective_weights()
    assert new.phase != state.phase
    assert [p.phase for p in new.phases] == [new.phase, state.phase]
    assert (change.audit.action, change.audit.actor) == ("new_phase", "health")
    assert change.audit.detail == detail
    assert apply(exp, new).phase == new.phase


def test_health_alert_is_audited_without_touching_the_split_or_phase() -> None:
    exp = experiment()
    stopped = changes(exp).stop(initial_state(exp), "b").state
    for state in (initial_state(exp), stopped):
        change = Changes(exp, HEALTH_ACTOR, AT, None).health_alert(state, {"kind": "x"})
        new = change.state
        assert new.version == state.version + 1
        assert (new.phase, new.phases) == (state.phase, state.phases)
        assert (new.weights, new.status, new.serving) == (
            state.weights,
            state.status,
            state.serving,
        )
        assert change.audit.action == "health_alert"
        assert change.audit.detail == {"kind": "x"}


def test_each_phase_remembers_the_action_that_opened_it() -> None:
    exp = three_way()
    state = initial_state(exp)
    assert state.phases[0].origin is None  # the configured phase
    weighted = changes(exp).set_weights(state, {"a": 2.0}).state
    shipped = changes(exp).ship(weighted, "b", 0.1).state
    assert [entry.origin for entry in shipped.phases] == ["ship", "set_weights", None]
    assert ExperimentState.from_json(shipped.to_json()) == shipped
    assert shipped.phases[0].to_dict()["origin"] == "ship"


def test_states_stored_before_phases_had_an_origin_still_load() -> None:
    exp = three_way()
    stored = json.loads(changes(exp).ship(initial_state(exp), "b", 0.1).state.to_json())
    for entry in stored["phases"]:
        del entry["origin"]
    loaded = ExperimentState.from_json(json.dumps(stored))
    assert [entry.origin for entry in loaded.phases] == [None, None]
    stored["phases"][0]["origin"] = "teleport"
    with pytest.raises(ValueError, match="not an experiment state"):
        ExperimentState.from_json(json.dumps(stored))
