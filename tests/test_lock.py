"""The lock files (requirements/*.txt, made by scripts/update-deps) against pyproject.toml:
made from today's ranges, every direct dependency pinned inside its range, every pin with
hashes, and the runtime and dev locks in agreement. A range changed in pyproject.toml
without a refresh fails here and in `scripts/lock.py check`, naming the command to run."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from support import ROOT

LOCK_SCRIPT = ROOT / "scripts" / "lock.py"
LOCKS = ("build.txt", "runtime.txt", "dev.txt")


def _lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_script", LOCK_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _entries(lock: str) -> list[tuple[str, str, str, list[str]]]:
    """(name, version, marker, hashes) of every requirement of a lock file."""
    entries: list[tuple[str, str, str, list[str]]] = []
    for line in (ROOT / "requirements" / lock).read_text(encoding="utf-8").splitlines():
        stripped = line.strip().removesuffix("\\").strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash="):
            entries[-1][3].append(stripped.removeprefix("--hash="))
            continue
        assert not line.startswith(" "), f"{lock}: unexpected line {line!r}"
        requirement, _, marker = stripped.partition(";")
        name, sep, version = requirement.strip().partition("==")
        assert sep, f"{lock}: {requirement!r} is not pinned with =="
        entries.append((_canonical(name), version, marker.strip(), []))
    return entries


def _pins_here(lock: str) -> dict[str, str]:
    """The version each package of a lock has on this Python and platform."""
    return {
        name: version
        for name, version, marker, _ in _entries(lock)
        if not marker or Marker(marker).evaluate()
    }


def test_the_locks_match_pyproject() -> None:
    _lock_module().check()


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_is_exact_and_hash_checked(lock: str) -> None:
    entries = _entries(lock)
    assert entries
    for name, _, _, hashes in entries:
        assert hashes, f"{lock}: {name} has no hash"
        assert all(h.startswith("sha256:") and len(h) == 7 + 64 for h in hashes), name


def test_every_direct_dependency_is_pinned_inside_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = {
        "runtime.txt": project["project"]["dependencies"],
        "dev.txt": project["project"]["dependencies"]
        + project["project"]["optional-dependencies"]["dev"],
        "build.txt": project["build-system"]["requires"],
    }
    for lock, requirements in wanted.items():
        pins = _pins_here(lock)
        for text in requirements:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            name = _canonical(requirement.name)
            assert name in pins, f"{lock} does not pin {name}"
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"{lock} pins {name}=={pins[name]}, outside {requirement.specifier}"
            )


def test_the_runtime_lock_agrees_with_the_dev_lock() -> None:
    dev = _pins_here("dev.txt")
    runtime = _pins_here("runtime.txt")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_environment_has_the_locked_versions() -> None:
    """What scripts/bootstrap installed is what the dev lock says (a stale .venv is rebuilt)."""
    from importlib.metadata import distributions

    installed = {_canonical(d.metadata["Name"]): d.version for d in distributions()}
    for name, version in _pins_here("dev.txt").items():
        assert installed.get(name) == version, f"{name}: {installed.get(name)} != {version}"


def test_a_range_changed_without_a_refresh_fails_naming_the_command(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(LOCK_SCRIPT, tmp_path / "scripts" / "lock.py")
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    command = [sys.executable, str(tmp_path / "scripts" / "lock.py"), "check"]
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0

    changed = pyproject.replace('"redis>=5.0"', '"redis>=5.1"')
    assert changed != pyproject
    (tmp_path / "pyproject.toml").write_text(changed, encoding="utf-8")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("stale lock: requirements/")
    assert "no longer matches pyproject.toml" in result.stderr
    assert "run scripts/update-deps" in result.stderr
    assert len(result.stderr.splitlines()) == 1

    (tmp_path / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    (tmp_path / "requirements" / "dev.txt").unlink()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "is missing: run scripts/update-deps" in result.stderr


def test_relocking_without_upgrade_reproduces_the_locks(tmp_path: Path) -> None:
    """The locks are exactly what `scripts/update-deps` makes from today's pyproject.toml
    (the resolver, pinned by requirements/uv.txt, keeps every pin that is still allowed)."""
    tools = tmp_path / "uv"
    subprocess.run([sys.executable, "-m", "venv", str(tools)], check=True)
    uv_lock = str(ROOT / "requirements" / "uv.txt")
    pip = [str(tools / "bin" / "python"), "-m", "pip"]
    subprocess.run(
        [*pip, "install", "--quiet", "--require-hashes", "-r", uv_lock],
        check=True,
        timeout=600,
    )
    copy = tmp_path / "copy"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy2(LOCK_SCRIPT, copy / "scripts" / "lock.py")
    shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
    shutil.copytree(ROOT / "requirements", copy / "requirements")
    subprocess.run(
        [sys.executable, str(copy / "scripts" / "lock.py"), "compile", str(tools / "bin" / "uv")],
        check=True,
        timeout=600,
    )
    for lock in LOCKS:
        made = (copy / "requirements" / lock).read_text(encoding="utf-8")
        assert made == (ROOT / "requirements" / lock).read_text(encoding="utf-8"), lock
