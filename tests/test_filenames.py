"""tests/ mirrors gateway/: every module has its test file, or a reason here why not.

`gateway/<folder>/<name>.py` is tested in `tests/<folder>/test_<name>.py`, or in files
`tests/<folder>/test_<name>_<aspect>.py` when its tests are many. A module without one is
listed in `ELSEWHERE` with the test files that exercise it (a module that only a running
gateway or the real Speech SDK can test is tested end to end in tests/functional), or in
`NOTHING_TO_RUN` with the reason it has no behaviour of its own. Both lists are checked too:
an entry whose module or test file is gone fails, so the lists cannot rot.
"""

from __future__ import annotations

from pathlib import Path

from support import ROOT

PACKAGE = ROOT / "gateway"
TESTS = ROOT / "tests"
# Test folders that do not mirror a package folder.
NOT_MIRRORS = frozenset({"functional", "security", "bench"})

# module -> the test files that exercise it.
ELSEWHERE: dict[str, tuple[str, ...]] = {
    "analysis/engine_port.py": ("stores/test_engine.py",),
    "analysis/evidence.py": ("analysis/test_decision_multiple.py", "analysis/test_report.py"),
    "analysis/html_plots.py": ("analysis/test_html_report.py",),
    "analysis/observations.py": ("analysis/test_report.py", "analysis/test_report_attempts.py"),
    "analysis/paired.py": ("analysis/test_decision_shadow.py",),
    "analysis/planner.py": ("tools/test_plan.py", "analysis/test_report.py"),
    "analysis/report_fields.py": ("analysis/test_html_report.py",),
    "analysis/svg.py": ("analysis/test_html_report.py",),
    "analysis/text_report.py": ("analysis/test_report.py", "tools/test_analyze.py"),
    "analysis/timeline.py": ("analysis/test_report.py", "analysis/test_html_report.py"),
    "config/backends.py": ("config/test_gateway.py",),
    "config/experiments.py": ("config/test_gateway.py", "config/test_capture_settings.py"),
    "config/gateway_config.py": ("config/test_gateway.py", "config/test_capture_settings.py"),
    "config/limits.py": ("server/test_admission.py", "functional/test_limits.py"),
    "config/secrets.py": ("config/test_settings.py", "functional/test_gateway_secrets.py"),
    "control/model.py": ("config/test_gateway.py", "control/test_assignment.py"),
    "control/routing.py": ("functional/test_gateway_assignment.py", "security/test_unit_ids.py"),
    "emulator/decoding.py": ("emulator/test_recognizer_pool.py",),
    "emulator/engines.py": ("functional/test_sdk_emulator.py",),
    "emulator/faults.py": ("functional/test_emulator_faults.py",),
    "emulator/models.py": ("emulator/test_language_model.py", "functional/test_sdk_accuracy.py"),
    "emulator/recognition.py": ("emulator/test_instant.py", "emulator/test_usp_session.py"),
    "emulator/recognizer_worker.py": ("emulator/test_recognizer_pool.py",),
    "emulator/rest.py": ("functional/test_rest_emulator.py",),
    "emulator/server.py": ("functional/test_sdk_emulator.py", "security/test_path_traversal.py"),
    "emulator/app_state.py": ("functional/test_sdk_emulator.py",),
    "server/admin/auth.py": ("security/test_key_comparison.py", "functional/test_labels_api.py"),
    "server/admin/control.py": ("functional/test_admin_control.py",),
    "server/admin/labels.py": ("functional/test_labels_api.py",),
    "server/app.py": ("functional/test_readyz.py", "functional/test_gateway_relay.py"),
    "server/relay/rest.py": ("functional/test_gateway_rest.py", "security/test_rest_fuzz.py"),
    "server/relay/shadow.py": ("functional/test_gateway_shadow.py",),
    "server/relay/upstream.py": ("functional/test_handshake_fidelity.py",),
    "server/relay/usp.py": ("functional/test_gateway_relay.py", "security/test_relay_fuzz.py"),
    "server/serve.py": ("functional/test_drain.py",),
    "server/sessions.py": ("server/test_admission.py", "server/test_metrics.py"),
    "session/turns.py": ("session/test_relay.py",),
    "stats/multiplicity.py": ("analysis/test_decision_multiple.py", "stats/test_planning.py"),
    "stores/factory.py": ("functional/test_gateway_redis.py", "tools/test_analyze.py"),
    "stores/file_label_store.py": ("stores/test_label_store.py", "stores/test_store_errors.py"),
    "stores/files.py": ("stores/test_jsonl_sink.py", "stores/test_label_store.py"),
    "stores/keys.py": ("stores/test_redis_sink.py", "stores/test_label_store.py"),
    "stores/jsonl_lines.py": ("stores/test_engine.py",),
    "stores/redis_client.py": ("stores/test_redis_sink.py", "stores/test_store_errors.py"),
    "stores/redis_label_store.py": ("stores/test_label_store.py", "stores/test_store_errors.py"),
    "stores/redis_sink_script.py": (
        "stores/test_redis_sink_retention.py",
        "stores/test_redis_sink_export_guard.py",
    ),
    "tools/demo.py": ("functional/test_demo.py",),
    "tools/http_call.py": ("tools/test_admin_cli.py", "functional/test_replay.py"),
    "tools/local_services.py": ("functional/test_demo.py", "functional/test_gateway_redis.py"),
    "tools/replay.py": ("functional/test_replay.py",),
    "tools/replay_http.py": ("functional/test_replay.py",),
    "tools/speech_client.py": ("functional/test_sdk_emulator.py",),
    "tools/usp_client.py": (
        "functional/test_admin_api.py",
        "functional/test_gateway_assignment.py",
    ),
}
# module -> why it has nothing to run on its own.
NOTHING_TO_RUN: dict[str, str] = {
    "analysis/model.py": "the analysis's value types",
    "constants.py": "two shared names",
    "control/ports.py": "protocols and a value type",
    "errors.py": "the exception classes; each is raised and checked where it is used",
    "event_loop.py": "chooses uvloop when installed; every served test runs on it",
    "outcomes/ports.py": "protocols",
}


def modules() -> list[str]:
    return sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name not in {"__init__.py", "__main__.py"}
    )


def own_tests(module: str) -> list[Path]:
    folder, _, file = module.rpartition("/")
    name = file.removesuffix(".py")
    here = TESTS / folder
    return sorted([*here.glob(f"test_{name}.py"), *here.glob(f"test_{name}_*.py")])


def test_every_module_has_its_tests_or_a_reason() -> None:
    missing = [m for m in modules() if not own_tests(m) and m not in ELSEWHERE | NOTHING_TO_RUN]
    assert not missing, (
        "add tests/<folder>/test_<name>.py, or list the module in ELSEWHERE or NOTHING_TO_RUN: "
        f"{missing}"
    )


def test_the_lists_name_modules_that_exist_and_lack_their_own_tests() -> None:
    listed = [*ELSEWHERE, *NOTHING_TO_RUN]
    gone = [m for m in listed if not (PACKAGE / m).is_file()]
    assert not gone, f"listed modules that no longer exist: {gone}"
    tested = [m for m in listed if own_tests(m)]
    assert not tested, f"these now have their own test file; remove them from the lists: {tested}"
    assert not set(ELSEWHERE) & set(NOTHING_TO_RUN)


def test_the_listed_test_files_exist() -> None:
    gone = [t for files in ELSEWHERE.values() for t in files if not (TESTS / t).is_file()]
    assert not gone, f"ELSEWHERE names test files that do not exist: {gone}"


def test_test_folders_mirror_package_folders() -> None:
    folders = {
        path.parent.relative_to(TESTS)
        for path in TESTS.rglob("test_*.py")
        if path.parent != TESTS and path.relative_to(TESTS).parts[0] not in NOT_MIRRORS
    }
    strays = sorted(folder.as_posix() for folder in folders if not (PACKAGE / folder).is_dir())
    assert not strays, f"test folders with no package folder of that name: {strays}"
