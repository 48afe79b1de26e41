"""`pip install .` gives a working `faceid` command in a fresh virtual environment.

Offline and quick: the wheel is built without build isolation (setuptools of this interpreter), installed
with --no-deps into a new venv, and the venv finds the dependencies through a .pth line pointing at this
interpreter's site-packages (appended after the venv's own, so `app` comes from the wheel, not the repo)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _names(lines) -> set[str]:
    return {re.split(r"[=<>~!\[; ]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.strip().startswith(("#", "-"))}


def test_pyproject_depends_on_what_requirements_txt_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _names(project["dependencies"]) == _names((REPO / "requirements.txt").read_text().splitlines())
    assert project["scripts"]["faceid"] == "app.cli:main"


@pytest.mark.slow
def test_pip_install_gives_a_working_faceid_command(tmp_path):
    src = tmp_path / "src"  # a clean copy: building must not leave build/ or *.egg-info in the repo
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("app", "model", "training"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(src)], check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("faceid-*.whl"))

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=600)

    work = tmp_path / "elsewhere"  # not the repository: only the installed package can answer
    work.mkdir()
    faceid = env_dir / "bin" / "faceid"
    out = subprocess.run([str(faceid), "--help"], cwd=work, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for cmd in ("serve", "enroll", "identify", "verify", "export", "import", "weights", "keys"):
        assert cmd in out.stdout
    # the package data came along: Alembic migrations run from the installed package
    check = ("import app, sqlalchemy; from app.gallery.store import make_engine, migrate; "
             "e = make_engine('sqlite:///g.db'); migrate(e); print(app.__file__); "
             "print(sorted(sqlalchemy.inspect(e).get_table_names()))")
    out = subprocess.run([str(py), "-c", check], cwd=work, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    location, tables = out.stdout.splitlines()
    assert location.startswith(str(env_dir)) and "faces" in tables and "identities" in tables
    # and every other file under app/ (web UI, migration template, ...), whatever it is
    def files(root: Path) -> set[str]:
        return {str(f.relative_to(root)) for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts}
    missing = files(src / "app") - files(Path(location).parent)
    assert not missing, missing
