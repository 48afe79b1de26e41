"""The image and `docker-compose up`, built and run for real on a Docker engine (skipped, saying why, without one).

The compose file is run with `-f docker/compose.yml`: Debian's docker-compose 1.29 cannot read the root
compose.yml's `include:`. Each test uses its own compose project and removes its containers and volumes."""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import tarfile
import time

import httpx
import pytest

from harness import REPO, free_port
from tests.docker.conftest import docker, has_image
from training.datasets import faces_dir

pytestmark = [pytest.mark.slow, pytest.mark.docker]

COMPOSE = REPO / "docker" / "compose.yml"
HEALTHY_TIMEOUT_S = 300  # the compose healthcheck probes every 30 s; a loaded machine loads the model slowly
FACEID_UID = "10001"
CONVERTING = re.compile(r"converting \S+ from")  # model.weights.fetch's log line


def faces():
    root = faces_dir()
    if not (root / "photos").is_dir():
        pytest.skip(f"face photos not found at {root} (set FACEID_FACES_DIR to the shared faces folder)")
    return root


def photo(root, name: str, i: int):
    return sorted((root / "photos" / name).glob("*.jpg"))[i]


class Project:
    """One `docker-compose -p <unique> -f docker/compose.yml` project; FACEID_* of the caller's environment
    are left out so that only the compose file's defaults and `env` apply."""

    def __init__(self, env: dict[str, str], overrides: tuple = ()):
        self.name = f"faceidtest{os.getpid()}{secrets.token_hex(3)}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FACEID_")} | env
        self.files = [arg for path in (COMPOSE, *overrides) for arg in ("-f", str(path))]

    def __call__(self, *args: str, timeout_s: float = 300) -> str:
        proc = subprocess.run(["docker-compose", "-p", self.name, *self.files, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout_s)
        assert proc.returncode == 0, f"docker-compose {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        return proc.stdout

    def container(self, service: str) -> str:
        return self("ps", "-q", service).strip()

    def url(self, service: str, index: int = 1) -> str:
        return "http://" + self("port", f"--index={index}", service, "8000").strip()


def wait_healthy(container: str, timeout_s: float = HEALTHY_TIMEOUT_S) -> float:
    """Seconds from now until the image's own healthcheck says healthy; fails when the container stops."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        state = docker("inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", container).stdout.split()
        if state == ["running", "healthy"]:
            return time.monotonic() - started
        assert state[0] in ("created", "running"), docker("logs", "--tail", "80", container).stderr
        time.sleep(1)  # polling the engine, not ordering: the deadline decides
    raise AssertionError(f"not healthy after {timeout_s} s: {docker('logs', '--tail', '80', container).stderr}")


def logs(container: str) -> str:
    proc = docker("logs", container)
    return proc.stdout + proc.stderr


def identify(url: str, path) -> list[tuple[str, str | None]]:
    r = httpx.post(f"{url}/identify", files={"file": (path.name, path.read_bytes())}, timeout=120)
    assert r.status_code == 200, r.text
    return [(f["status"], (f["identity"] or {}).get("label")) for f in r.json()["faces"]]


def test_compose_up_enrolls_identifies_and_keeps_the_gallery(cpu_image):
    root = faces()
    port = free_port()
    project = Project({"FACEID_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        project("up", "-d", "--no-build", "api")
        api = project.container("api")
        wait_healthy(api)
        print(f"compose up -> healthy: {time.monotonic() - started:.1f} s; image {cpu_image}")
        # the server process (PID 1: the entrypoint execs uvicorn) runs as the image's non-root user
        status = docker("exec", api, "cat", "/proc/1/status").stdout
        assert f"Uid:\t{FACEID_UID}\t" in status, status
        assert "uvicorn" in docker("exec", api, "cat", "/proc/1/cmdline").stdout
        for name in ("Angelina_Jolie", "Matt_Damon"):
            img = photo(root, name, 0)
            r = httpx.post(f"{url}/enroll", data={"label": name}, files={"files": (img.name, img.read_bytes())},
                           timeout=120)
            assert r.status_code == 201, r.text
        assert identify(url, photo(root, "Matt_Damon", 1)) == [("match", "Matt_Damon")]
        bad = httpx.post(f"{url}/identify", files={"file": ("a.jpg", b"not an image")}, timeout=30)
        assert 400 <= bad.status_code < 500, bad.text
        first_logs = logs(api)

        project("down")  # containers and network go; the named volumes stay
        started = time.monotonic()
        project("up", "-d", "--no-build", "api")
        api2 = project.container("api")
        assert api2 != api
        wait_healthy(api2)
        print(f"second compose up -> healthy: {time.monotonic() - started:.1f} s")
        assert httpx.get(f"{url}/ready", timeout=10).json()["faces"] == 2
        assert identify(url, photo(root, "Angelina_Jolie", 1)) == [("match", "Angelina_Jolie")]
        # the weights were converted at build time: no start converts them again
        for text in (first_logs, logs(api2)):
            assert not CONVERTING.search(text) and "Traceback" not in text, text[-3000:]
    finally:
        project("down", "-v", "--remove-orphans")
    assert not [v for v in docker("volume", "ls", "-q").stdout.split() if v.startswith(project.name)]


def test_image_starts_with_no_network(cpu_image):
    """No network at all (not even loopback to the host): the weights are in the image and nothing is fetched."""
    name = f"faceidtest{os.getpid()}{secrets.token_hex(3)}"
    docker("run", "-d", "--name", name, "--network", "none", "--health-interval", "2s",
           "-e", "FACEID_ALLOW_NO_AUTH_IN_CONTAINER=true", cpu_image["image"])
    try:
        seconds = wait_healthy(name)
        print(f"offline start -> healthy: {seconds:.1f} s")
        text = logs(name)
        assert not CONVERTING.search(text) and "Traceback" not in text, text[-3000:]
        assert docker("exec", name, "id", "-u").stdout.strip() == FACEID_UID
    finally:
        docker("rm", "-f", "-v", name, check=False)


def test_image_holds_only_what_runs(cpu_image, tmp_path):
    """The image's files: the service, its venv and its weights; no tests, no .venv, no face photos, no wheels."""
    name = f"faceidtest{os.getpid()}{secrets.token_hex(3)}"
    docker("create", "--name", name, cpu_image["image"])
    try:
        with subprocess.Popen(["docker", "export", name], stdout=subprocess.PIPE) as proc:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                files = [m.name for m in tar]
        assert proc.returncode == 0
    finally:
        docker("rm", "-f", "-v", name, check=False)
    ours = [f for f in files if f.startswith("opt/faceid/")]
    top = {f.split("/")[2] for f in ours if f.count("/") >= 2}
    assert top <= {"app", "model", "training", "docker", "torch", "alembic.ini"}, top
    assert "opt/faceid/torch/checkpoints/20180408-102900-casia-webface-converted.pt" in files
    assert "opt/faceid/torch/checkpoints/mtcnn-pnet-rnet-onet-converted.pt" in files
    assert any(f.startswith("opt/venv/lib/python3.11/site-packages/torch/") for f in files)
    banned = ("tests/", ".venv/", "wheels/", ".git/", ".torch/", "datasets/", "/faces/", "/lfw/")
    outside_packages = [f for f in files if not f.startswith(("opt/venv/", "usr/", "var/", "etc/"))]
    assert not [f for f in outside_packages if any(b in f"/{f}" for b in banned)]
    photos = {p.name for p in faces_dir().rglob("*.jpg")} if faces_dir().is_dir() else set()
    images = [f for f in files if f.lower().endswith((".jpg", ".jpeg")) and not f.startswith("opt/venv/")]
    assert not images, images[:20]
    assert not photos & {f.rsplit("/", 1)[-1] for f in files}
    assert not [f for f in files if f.startswith(("data/", "checkpoints/")) and f.count("/") > 1]


def test_compose_postgres_profile_replicas_share_one_gallery(cpu_image, tmp_path):
    """PostgreSQL + pgvector and two API replicas from the compose file: a face enrolled through one replica is
    identified through the other. The replicas' ports are published by an override (the profile reaches them
    through nginx only); the `lb` service itself is not run here (see docs/docker.md)."""
    pg_image = os.environ.get("FACEID_POSTGRES_IMAGE") or "local/pgvector:pg18"
    if not has_image(pg_image):
        pytest.skip(f"no PostgreSQL + pgvector image {pg_image}: Docker Hub's pgvector/pgvector cannot be pulled "
                    f"here; make one with .ci/docker-postgres")
    root = faces()
    override = tmp_path / "publish-replicas.yml"
    override.write_text('services:\n  api-pg:\n    ports: ["127.0.0.1::8000"]\n')
    project = Project({"FACEID_POSTGRES_IMAGE": pg_image}, overrides=(override,))
    try:
        # compose waits for the postgres healthcheck (pg_isready) before it starts the replicas
        project("up", "-d", "--no-build", "--scale", "api-pg=2", "postgres", "api-pg", timeout_s=600)
        replicas = project("ps", "-q", "api-pg").split()
        assert len(replicas) == 2
        for replica in replicas:
            wait_healthy(replica)
        first, second = project.url("api-pg", 1), project.url("api-pg", 2)
        assert first != second
        img = photo(root, "Matt_Damon", 0)
        r = httpx.post(f"{first}/enroll", data={"label": "Matt_Damon"}, files={"files": (img.name, img.read_bytes())},
                       timeout=120)
        assert r.status_code == 201, r.text
        assert httpx.get(f"{second}/ready", timeout=10).json()["faces"] == 1
        assert identify(second, photo(root, "Matt_Damon", 1)) == [("match", "Matt_Damon")]
    finally:
        project("down", "-v", "--remove-orphans")
