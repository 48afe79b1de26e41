"""A real Docker engine for the tests marked `docker`: the engine, the base image and the CPU image, or a skip
that says which of them is missing. `.ci/run` installs docker.io, docker-compose and debootstrap, starts dockerd
and makes the base image (`.ci/docker-base`); `FACEID_DOCKER_BASE` names another base."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from harness import REPO

IMAGE = "faceid:cpu"  # the compose file's image name: `docker-compose up --no-build` runs what the test built
BUILD_STAGE = "faceid:cpu-build"  # the Dockerfile's build stage (venv + converted weights), kept as the cache
LOCAL_BASE = "local/python:3.11-bookworm"  # what .ci/docker-base makes from Debian's archive
PUBLIC_BASE = "python:3.11-slim-bookworm"  # the Dockerfile's default
BUILD_TIMEOUT_S = 45 * 60  # a cold build on a loaded 2-core machine; a cached one takes under a minute


def docker(*args: str, timeout_s: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def has_image(name: str) -> bool:
    return docker("image", "inspect", name, check=False).returncode == 0


@pytest.fixture(scope="session")
def engine() -> None:
    for exe, package in (("docker", "docker.io"), ("docker-compose", "docker-compose")):
        if shutil.which(exe) is None:
            pytest.skip(f"{exe} is not installed (Debian package {package}; .ci/run installs it as root)")
    proc = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout_s=30)
    if proc.returncode != 0:
        pytest.skip(f"no Docker engine answers (dockerd not running, or not allowed to this user): "
                    f"{proc.stderr.strip()[-300:]}")


@pytest.fixture(scope="session")
def base_image(engine) -> str:
    name = os.environ.get("FACEID_DOCKER_BASE") or (LOCAL_BASE if has_image(LOCAL_BASE) else PUBLIC_BASE)
    if not has_image(name) and docker("pull", name, check=False, timeout_s=600).returncode != 0:
        pytest.skip(f"base image {name} is neither here nor pullable: make one with .ci/docker-base (as root)")
    return name


def image_id(name: str) -> str | None:
    proc = docker("image", "inspect", "--format", "{{.Id}}", name, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture(scope="session")
def cpu_image(base_image) -> dict:
    """The CPU image built from this checkout (layers cached by the engine: a second run rebuilds only what
    changed). From the wheelhouse `wheels/` when there is one (`pip download -r requirements.txt -d wheels/`),
    else from the package index. The build stage is tagged too (BUILD_STAGE), so that what a rebuild replaces
    can be removed here instead of piling up as untagged images. Returns the build's figures."""
    wheelhouse = any((REPO / "wheels").glob("*.whl"))
    before = {name: image_id(name) for name in (BUILD_STAGE, IMAGE)}
    args = ["build", "-q", "-f", "docker/Dockerfile", "--build-arg", f"BASE={base_image}",
            "--build-arg", f"WHEELHOUSE={int(wheelhouse)}"]
    started = time.monotonic()
    # The classic builder: what docker-compose 1.29 uses too, and it needs no buildx plugin.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    docker(*args, "--target", "build", "-t", BUILD_STAGE, ".", cwd=REPO, env=env, timeout_s=BUILD_TIMEOUT_S)
    docker(*args, "-t", IMAGE, ".", cwd=REPO, env=env, timeout_s=BUILD_TIMEOUT_S)
    build_s = time.monotonic() - started
    for name, old in before.items():
        if old and old != image_id(name):
            docker("rmi", old, check=False)  # still used by a container elsewhere: left, nothing fails
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    return {"image": IMAGE, "base": base_image, "wheelhouse": wheelhouse, "build_s": build_s, "size_bytes": size}
