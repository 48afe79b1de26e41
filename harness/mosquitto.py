"""A real Mosquitto broker on 127.0.0.1 (Debian's `mosquitto`, which .ci/run installs) for tests and benchmarks:
persistence on (retained messages and sessions survive `stop()` + `start()`), a password file when a user is
given. `binary()` is None when it is not installed (tests skip, saying so)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from harness.server import free_port


def binary() -> str | None:
    return shutil.which("mosquitto", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))


class Mosquitto:
    def __init__(self, folder: Path, port: int | None = None, user: str | None = None, password: str | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.user, self.password = user, password
        self.proc: subprocess.Popen | None = None
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {self.folder}/",
                 "autosave_interval 1", f"log_dest file {self.folder / 'mosquitto.log'}"]
        if os.geteuid() == 0:  # as root it would switch to the `mosquitto` user, who cannot read our folder
            lines.append("user root")
        if user:
            pw = self.folder / "passwd"
            pw.write_text(f"{user}:{password}\n")
            pw.chmod(0o600)
            subprocess.run([shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-U", str(pw)], check=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = self.folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"mqtt://{auth}127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20) -> "Mosquitto":
        self.proc = subprocess.Popen([binary(), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited with {self.proc.returncode}")
                time.sleep(0.05)
        raise TimeoutError("mosquitto did not listen in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: it saves retained messages and sessions first
            self.proc.wait(timeout=20)
