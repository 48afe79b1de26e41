"""A real webhook receiver on 127.0.0.1 for tests and benchmarks: answers a share of deliveries with 500, checks
every signature, records what arrived (in arrival order); can be stopped and started again on the same port.

It speaks HTTP/1.1 and keeps connections open between deliveries, as the web servers that receive webhooks do
(http.server's default, HTTP/1.0, makes every delivery connect anew and start a thread). Stopping it closes the
open connections too: a stopped receiver answers nothing."""
from __future__ import annotations

import json
import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness.server import free_port


class Receiver:
    def __init__(self, secrets: dict[str, str] | None = None, fail_share: float = 0.0, seed: int = 0,
                 port: int | None = None):
        """`secrets`: path -> signing secret (set when a webhook is created); `fail_share`: answers that are 500."""
        self.secrets = dict(secrets or {})
        self.fail_share = fail_share
        self.port = port or free_port()
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.got: list[dict] = []      # accepted deliveries (2xx), arrival order
        self.failed = 0                # deliveries answered 500 on purpose
        self._server: ThreadingHTTPServer | None = None
        self._conns: set[socket.socket] = set()  # the open connections, closed by stop()
        self._serving = False

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> "Receiver":
        from app.services.webhooks import verify

        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def setup(self):
                super().setup()
                with owner.lock:
                    if not owner._serving:  # accepted as stop() ran: closed at once
                        try:
                            self.connection.shutdown(socket.SHUT_RDWR)
                        except OSError:  # the client left already
                            pass
                    owner._conns.add(self.connection)

            def finish(self):
                with owner.lock:
                    owner._conns.discard(self.connection)
                super().finish()

            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner.lock:
                    fail = owner.rng.random() < owner.fail_share
                    if fail:
                        owner.failed += 1
                    else:
                        secret = owner.secrets.get(self.path, "")
                        event = json.loads(body)
                        owner.got.append({
                            "path": self.path, "id": event["id"], "type": event["type"], "event": event,
                            "header_id": self.headers.get("FaceID-Event-Id"),
                            "seq": int(self.headers["FaceID-Event-Seq"]) if self.headers.get("FaceID-Event-Seq") else None,
                            "valid": verify(secret, body, self.headers.get("FaceID-Signature", ""))})
                self.send_response(500 if fail else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._serving = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            with self.lock:
                self._serving = False
                for conn in self._conns:
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def deliveries(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [g for g in self.got if path is None or g["path"] == path]

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ReceiverProcess:
    """A Receiver in a process of its own that answers every delivery 204 and counts them (the latency benchmark:
    a receiver is another program, so its threads must not take the load generator's GIL)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.secrets: dict[str, str] = {}  # set by subscribe(); this receiver counts and does not check them
        self._proc = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> "ReceiverProcess":
        import subprocess
        import sys

        self._proc = subprocess.Popen([sys.executable, "-m", "harness.receiver", str(self.port)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the receiver process did not start")
        return self

    def stop(self) -> int:
        """Stop it; how many deliveries it accepted."""
        if self._proc is None:
            return 0
        out, _ = self._proc.communicate("", timeout=30)
        self._proc = None
        return int(json.loads(out)["deliveries"])


if __name__ == "__main__":  # python -m harness.receiver PORT: serve until stdin closes, then print the count
    import sys

    r = Receiver(port=int(sys.argv[1])).start()
    print("ready", flush=True)
    sys.stdin.read()
    r.stop()
    print(json.dumps({"deliveries": len(r.deliveries())}), flush=True)
