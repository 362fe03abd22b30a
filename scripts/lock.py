"""The lock files in requirements/: how they are made from pyproject.toml, and whether they
still match it.

pyproject.toml keeps compatible ranges (for whoever installs speech-gateway as a library);
the locks pin every package, direct or not, to one version with the hashes of its files, so
that `scripts/test`, `scripts/demo`, CI and the Docker image install the same thing every day:

  requirements/build.txt    the build backend (pyproject's [build-system] requires)
  requirements/runtime.txt  the package's dependencies (the Docker image)
  requirements/dev.txt      the dependencies and the `dev` extra: test tools, linters, mypy

They come from uv's universal resolver (one file for every supported Python and platform,
with environment markers where versions differ), and pip installs them in hash-checking
mode, so a user needs nothing but Python. Each lock records a digest of the pyproject.toml
fields it was made from; `check` compares it with today's.

  python3 scripts/lock.py compile UV [--upgrade]   # rewrite the locks with the uv binary UV
  python3 scripts/lock.py check        # exit 1, naming the refresh command, when stale

Only the standard library: `check` runs before any virtualenv exists.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
REQUIREMENTS = ROOT / "requirements"
REFRESH_COMMAND = "scripts/update-deps"
# The oldest Python the project supports: the resolver's baseline for the universal locks.
PYTHON_VERSION = "3.11"
DIGEST_PREFIX = "# inputs-sha256: "
LOCKS = ("build.txt", "runtime.txt", "dev.txt")


class StaleLock(Exception):
    """A lock file is missing or was made from other pyproject.toml fields than today's."""


def inputs(pyproject: Path = PYPROJECT) -> dict[str, object]:
    """The pyproject.toml fields that decide what the locks hold."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data["project"]
    return {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "dev": project.get("optional-dependencies", {}).get("dev", []),
        "build-system": data.get("build-system", {}).get("requires", []),
        "python-version": PYTHON_VERSION,
    }


def digest(pyproject: Path = PYPROJECT) -> str:
    canonical = json.dumps(inputs(pyproject), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line.removeprefix(DIGEST_PREFIX).strip()
        if line and not line.startswith("#"):
            break
    return None


def check(pyproject: Path = PYPROJECT, requirements: Path = REQUIREMENTS) -> None:
    """Raise StaleLock when a lock is missing or does not match pyproject.toml."""
    expected = digest(pyproject)
    for name in LOCKS:
        lock = requirements / name
        if not lock.is_file():
            raise StaleLock(f"{lock.relative_to(ROOT)} is missing: run {REFRESH_COMMAND}")
        if recorded_digest(lock) != expected:
            raise StaleLock(
                f"{lock.relative_to(ROOT)} no longer matches pyproject.toml (its dependencies,"
                f" dev extra or build requirements changed since the lock was made):"
                f" run {REFRESH_COMMAND}"
            )


def _compile(
    uv: str, sources: list[str], output: Path, extra: list[str], upgrade: bool, stdin: str = ""
) -> None:
    command = [
        uv,
        "pip",
        "compile",
        *sources,
        *extra,
        "--universal",
        "--python-version",
        PYTHON_VERSION,
        "--generate-hashes",
        *(["--upgrade"] if upgrade else []),
        "--quiet",
        "--custom-compile-command",
        REFRESH_COMMAND,
        "--output-file",
        str(output),
    ]
    subprocess.run(command, cwd=ROOT, check=True, input=stdin, text=True)
    lines = output.read_text(encoding="utf-8").splitlines(keepends=True)
    # After uv's two header lines: what the lock was made from.
    lines.insert(2, f"{DIGEST_PREFIX}{digest()}\n")
    output.write_text("".join(lines), encoding="utf-8")


def compile_locks(uv: str, upgrade: bool) -> None:
    """Write the three locks. A version already pinned stays while pyproject.toml allows it,
    unless `upgrade`: then every package moves to the newest version allowed. The runtime
    lock is constrained by the dev lock, so the two never pin different versions."""
    REQUIREMENTS.mkdir(exist_ok=True)
    build_requires = inputs()["build-system"]
    assert isinstance(build_requires, list)
    build_in = "".join(f"{r}\n" for r in build_requires)
    _compile(uv, ["-"], REQUIREMENTS / "build.txt", [], upgrade, stdin=build_in)
    _compile(uv, ["pyproject.toml"], REQUIREMENTS / "dev.txt", ["--extra", "dev"], upgrade)
    dev_lock = str((REQUIREMENTS / "dev.txt").relative_to(ROOT))
    _compile(
        uv, ["pyproject.toml"], REQUIREMENTS / "runtime.txt", ["--constraint", dev_lock], upgrade
    )


def main(argv: list[str]) -> int:
    if len(argv) in (2, 3) and argv[0] == "compile" and argv[2:] in ([], ["--upgrade"]):
        compile_locks(argv[1], upgrade=argv[2:] == ["--upgrade"])
        return 0
    if argv == ["check"]:
        try:
            check()
        except StaleLock as exc:
            print(f"stale lock: {exc}", file=sys.stderr)
            return 1
        return 0
    print("usage: scripts/lock.py compile UV [--upgrade] | check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
