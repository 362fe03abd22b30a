"""The Dockerfile, checked without a Docker engine: its stages and instructions are parsed,
then its build is done the same way in a temporary directory (a wheel of the project and
of every dependency, installed into a fresh virtualenv with no index), the image's exact
command is run from there, and the HEALTHCHECK's command must pass against it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import Marker
from support import ROOT

from gateway.tools.local_services import free_port

DOCKERFILE = ROOT / "Dockerfile"
PIP_TIMEOUT_S = 900


@dataclass
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} is not in exec (JSON) form"
        return [str(item) for item in value]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"{len(found)} {keyword} instructions in stage {self.name}"
        return found[0]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for item in shlex.split(instruction.args):
                key, sep, value = item.partition("=")
                assert sep, f"ENV {item!r}: use the KEY=VALUE form"
                values[key] = value
        return values


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions by stage; comments dropped and continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
            continue
        assert stages, f"{keyword} before the first FROM"
        stages[-1].instructions.append(Instruction(keyword, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """The (sources, destination) of a stage's COPY instructions from the build context."""
    found = []
    for instruction in stage.all("COPY"):
        if instruction.args.startswith("--from"):
            continue
        *sources, destination = instruction.args.split()
        found.append((sources, destination))
    return found


def test_two_slim_stages_and_a_non_root_final_image(stages: list[Stage]) -> None:
    """A build stage makes the wheels; the final stage, on python:3.11-slim as well, takes
    only the wheels from it and runs as a numeric non-root user that it creates."""
    assert len(stages) == 2
    build, final = stages
    assert build.name == "build"
    assert {build.base, final.base} == {"python:3.11-slim"}
    # The build installs the lock files, hash-checked, and nothing else.
    (run_build,) = build.all("RUN")
    assert [step.strip() for step in run_build.args.split(" && ")] == [
        "pip install --no-cache-dir --require-hashes -r requirements/build.txt",
        "pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements/runtime.txt",
        "pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .",
    ]
    assert (["requirements"], "./requirements") in copies(build)
    assert [i.args for i in final.all("COPY") if i.args.startswith("--from")] == [
        "--from=build /wheels /wheels"
    ]
    user = final.one("USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user}: numeric, so that runAsNonRoot can check it"
    assert int(uid) != 0, f"USER {user}: not root"
    assert gid == "" or int(gid) != 0
    assert any(f"--uid {uid}" in i.args for i in final.all("RUN")), "the user is created"
    # Nothing runs as root after USER: every instruction that follows is not a RUN.
    after_user = final.instructions[final.instructions.index(final.one("USER")) :]
    assert not [i for i in after_user if i.keyword == "RUN"]


def test_the_image_serves_the_example_config_and_checks_health(stages: list[Stage]) -> None:
    """ENTRYPOINT is the console script, CMD runs `serve` (one process, `--workers 1`) with
    the example configuration, the gateway listens on all interfaces inside the container on
    its exposed port, and the HEALTHCHECK asks /healthz."""
    final = stages[-1]
    assert final.one("ENTRYPOINT").exec_form() == ["speech-gateway"]
    assert final.one("CMD").exec_form() == ["serve", "--workers", "1"]
    env = final.env()
    assert env["SPEECH_GATEWAY_CONFIG"] == "/app/config/gateway.toml"
    assert final.one("WORKDIR").args == "/app"
    assert (["config"], "./config") in copies(final)
    assert env["SPEECH_GATEWAY_GATEWAY__HOST"] == "0.0.0.0"
    port = tomllib.loads((ROOT / "config" / "gateway.toml").read_text())["gateway"]["port"]
    assert str(port) in final.one("EXPOSE").args.split()
    assert "/healthz" in healthcheck_command(final)
    assert final.one("STOPSIGNAL").args == "SIGTERM"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "speech-gateway" in scripts


def run(command: list[str], what: str, **kwargs: object) -> None:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}); the image's build would fail the same "
            f"way, or this machine cannot reach the package index:\n"
            f"$ {shlex.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_pin(filename: str) -> tuple[str, str]:
    """(name, version) of a wheel's file name."""
    name, version = filename.split("-")[:2]
    return _canonical(name), version


def _locked_pins(lock: str) -> set[tuple[str, str]]:
    """(name, version) of every requirement of a lock file that applies to this Python."""
    pins = set()
    for line in (ROOT / "requirements" / lock).read_text(encoding="utf-8").splitlines():
        if not line or line[0] in " #":
            continue
        requirement, _, marker = line.removesuffix("\\").partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, _, version = requirement.strip().partition("==")
        pins.add((_canonical(name), version))
    return pins


def healthcheck_command(final: Stage) -> str:
    args = final.one("HEALTHCHECK").args
    options, sep, command = args.partition(" CMD ")
    assert sep, "HEALTHCHECK ... CMD <command>"
    assert all(option.startswith("--") for option in options.split())
    return command.strip()


def test_the_image_built_without_docker_serves_and_is_healthy(
    stages: list[Stage], tmp_path: Path
) -> None:
    """What the image does, done here: wheels of the project and its dependencies, a fresh
    virtualenv with only those (no index), the final stage's files in a work directory, the
    image's ENTRYPOINT + CMD run there with its ENV, HEALTHCHECK passing, and a clean exit
    on SIGTERM (the drain, with no sessions, is immediate)."""
    build, final = stages
    # The build stage's context files, where its WORKDIR would hold them.
    source = tmp_path / "src"
    source.mkdir()
    for sources, destination in copies(build):
        for name in sources:
            target = source / destination / (name if destination.endswith("/") else "")
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / name, target)
    wheels = tmp_path / "wheels"
    # The build stage's RUN as it is, in a fresh virtualenv standing for the base image's
    # Python, with pip's cache allowed (the image build skips it for size).
    build_venv = tmp_path / "build-venv"
    run([sys.executable, "-m", "venv", str(build_venv)], "python -m venv")
    (run_build,) = build.all("RUN")
    script = run_build.args.replace("--no-cache-dir ", "").replace("/wheels", str(wheels))
    run(
        ["/bin/sh", "-c", script],
        "the build stage's RUN",
        cwd=source,
        env={**os.environ, "PATH": f"{build_venv / 'bin'}{os.pathsep}{os.environ['PATH']}"},
    )
    assert any(w.name.startswith("speech_gateway-") for w in wheels.glob("*.whl"))
    # Exactly the runtime lock's versions were built.
    built = {_wheel_pin(w.name) for w in wheels.glob("*.whl")}
    assert {name for name, _ in built - _locked_pins("runtime.txt")} == {"speech-gateway"}
    assert _locked_pins("runtime.txt") <= built
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    run(
        [str(venv / "bin" / "pip"), "install", "--no-index", *map(str, wheels.glob("*.whl"))],
        "pip install of the wheels",
    )
    # The final stage's files and directories, in its WORKDIR.
    app = tmp_path / "app"
    app.mkdir()
    for sources, destination in copies(final):
        for name in sources:
            shutil.copytree(ROOT / name, app / destination)
    (app / "var").mkdir()
    env = {
        key: value.replace("/app/", f"{app}/")
        for key, value in final.env().items()
        if key != "PATH"
    }
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        **env,
        # As `docker run -e`: loopback only here, and a free port.
        "SPEECH_GATEWAY_GATEWAY__HOST": "127.0.0.1",
        "SPEECH_GATEWAY_GATEWAY__PORT": str(port),
    }
    command = final.one("ENTRYPOINT").exec_form() + final.one("CMD").exec_form()
    assert shutil.which(command[0], path=env["PATH"]) == str(venv / "bin" / command[0])
    check = ["/bin/sh", "-c", healthcheck_command(final)]
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(command, cwd=app, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (
                f"{shlex.join(command)} exited with {process.returncode}:\n"
                + (tmp_path / "serve.log").read_text()[-3000:]
            )
            if subprocess.run(check, cwd=app, env=env, capture_output=True).returncode == 0:
                break
            assert time.monotonic() < deadline, "HEALTHCHECK never passed within 60 s"
            time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        # ... and the check fails once nothing answers.
        assert subprocess.run(check, cwd=app, env=env, capture_output=True).returncode != 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    lines = (tmp_path / "serve.log").read_text().splitlines()
    events = [json.loads(line).get("event") for line in lines if line.startswith("{")]
    assert "gateway_ready" in events
    assert "drain_sessions_done" in events
