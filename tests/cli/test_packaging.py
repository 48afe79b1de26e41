"""The two distributions: `pip install ./client` gives the `faceid` command without torch (a fresh venv, a real
server), and `pip install ./client .` gives the server with the same command and its package data.

The server test is offline and quick: both wheels are built without build isolation (setuptools of this
interpreter), installed with --no-deps into a new venv, and the venv finds the dependencies through a .pth line
pointing at this interpreter's site-packages (appended after the venv's own, so `app` and `faceid_client` come
from the wheels, not the repo). The client test installs from the package index like a user (skips, saying
why, where no index answers)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

from harness import running

REPO = Path(__file__).resolve().parents[2]
SERVER_ONLY = {"torch", "torchvision", "numpy", "fastapi", "uvicorn", "sqlalchemy", "alembic", "onnxruntime",
               "pillow", "psycopg"}


def _names(lines) -> set[str]:
    return {re.split(r"[=<>~!\[; ]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.strip().startswith(("#", "-"))}


def _project(path: Path) -> dict:
    return tomllib.loads(path.read_text())["project"]


def test_pyproject_depends_on_what_requirements_txt_pins():
    server, client = _project(REPO / "pyproject.toml"), _project(REPO / "client" / "pyproject.toml")
    pinned = _names((REPO / "requirements.txt").read_text().splitlines())
    # the client is not on an index: requirements-dev.txt installs it from ./client, the Dockerfile copies it
    assert _names(server["dependencies"]) == pinned | {"faceid-client"}
    assert "-e ./client" in (REPO / "requirements-dev.txt").read_text().splitlines()
    assert _names(client["dependencies"]) <= pinned  # tested at the versions requirements.txt pins
    assert not _names(client["dependencies"]) & SERVER_ONLY
    assert server["scripts"]["faceid"] == client["scripts"]["faceid"] == "faceid_client.cli:main"


def _wheel(tmp_path: Path, project: Path, parts: tuple[str, ...]) -> Path:
    """A wheel built from a clean copy of `project` (building must not leave build/ or *.egg-info in the repo)."""
    src = tmp_path / f"src-{project.name}"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(project / name, src / name)
    for pkg in parts:
        shutil.copytree(project / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(src)], check=True, capture_output=True, timeout=600)
    name = tomllib.loads((project / "pyproject.toml").read_text())["project"]["name"].replace("-", "_")
    return next(wheels.glob(f"{name}-*.whl"))


@pytest.mark.slow
def test_pip_install_gives_a_working_faceid_command(tmp_path):
    wheels = [_wheel(tmp_path, REPO / "client", ("faceid_client",)),
              _wheel(tmp_path, REPO, ("app", "model", "training"))]
    src = tmp_path / f"src-{REPO.name}"

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", *map(str, wheels)],
                   check=True, capture_output=True, timeout=600)

    work = tmp_path / "elsewhere"  # not the repository: only the installed packages can answer
    work.mkdir()
    faceid = env_dir / "bin" / "faceid"
    out = subprocess.run([str(faceid), "--help"], cwd=work, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for cmd in ("serve", "enroll", "identify", "verify", "export", "import", "weights", "keys"):
        assert cmd in out.stdout
    # the server-side commands find the installed server (a process of their own: the client imports none of it)
    out = subprocess.run([str(faceid), "weights", "list"], cwd=work, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "casia-webface" in out.stdout, out.stderr
    # the package data came along: Alembic migrations run from the installed package
    check = ("import app, faceid_client, sqlalchemy; from app.gallery.store import make_engine, migrate; "
             "e = make_engine('sqlite:///g.db'); migrate(e); print(app.__file__); print(faceid_client.__file__); "
             "print(sorted(sqlalchemy.inspect(e).get_table_names()))")
    out = subprocess.run([str(py), "-c", check], cwd=work, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    location, client_location, tables = out.stdout.splitlines()
    assert location.startswith(str(env_dir)) and client_location.startswith(str(env_dir))
    assert "faces" in tables and "identities" in tables
    # and every other file under app/ (web UI, migration template, ...), whatever it is
    def files(root: Path) -> set[str]:
        return {str(f.relative_to(root)) for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts}
    missing = files(src / "app") - files(Path(location).parent)
    assert not missing, missing


def _size_mb(root: Path) -> float:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


@pytest.mark.slow
def test_the_client_installs_without_torch_and_talks_to_a_real_server(tmp_path):
    """Acceptance 5 of issue 28: a fresh venv, `pip install ./client` as a user would (from the index), no torch;
    `faceid --help` and `faceid status` against a real server work; `faceid serve` says what to install."""
    env_dir = tmp_path / "client-venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, capture_output=True, timeout=300)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip"]
    src = tmp_path / "client"  # a copy: the build must not write into the repository
    shutil.copytree(REPO / "client", src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = subprocess.run([*pip, "install", "-q", str(src)], capture_output=True, text=True, timeout=900)
    if out.returncode and re.search(r"No matching distribution|Could not find a version|NewConnectionError|"
                                    r"Failed to establish a new connection|Network is unreachable", out.stderr):
        pytest.skip(f"no package index answers here, so the client's dependencies cannot be installed: "
                    f"{out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr

    listed = json.loads(subprocess.run([*pip, "list", "--format", "json"], check=True, capture_output=True,
                                       text=True, timeout=120).stdout)
    installed = {p["name"].lower() for p in listed}
    assert "faceid-client" in installed
    assert not installed & SERVER_ONLY, installed & SERVER_ONLY
    assert _size_mb(env_dir) < 150, f"the client venv is {_size_mb(env_dir):.0f} MB"

    work = tmp_path / "elsewhere"  # not the repository: `app` and `model` cannot be found from here
    work.mkdir()
    faceid = str(env_dir / "bin" / "faceid")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([faceid, "--help"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for cmd in ("status", "enroll", "identify", "verify", "export", "import", "serve", "keys"):
        assert cmd in out.stdout

    out = subprocess.run([faceid, "serve"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "install faceid (the server) for this" in out.stderr, out.stderr
    out = subprocess.run([faceid, "keys", "new", "--name", "door-1", "--json"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and json.loads(out.stdout)["entry"]["name"] == "door-1", out.stderr

    with running(tmp_path / "g.db") as server:
        out = subprocess.run([faceid, "status", "--url", server.url], cwd=work, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"{server.url}: ready, model ") and "0 identities, 0 faces" in out.stdout
        out = subprocess.run([faceid, "status", "--url", server.url, "--json"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=120)
        ready = json.loads(out.stdout)
        assert out.returncode == 0 and ready["identities"] == 0 and "operating_point" in ready  # passed through
