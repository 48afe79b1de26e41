"""Publishing a fine-tuned checkpoint to a keyed server: training.main sends the API key (regression: it
used to call the swap endpoint without one, so every keyed server answered 401)."""
from __future__ import annotations

import json
import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from training.main import build_parser, publish

KEY = "admin-key-for-the-test"


class _SwapEndpoint(BaseHTTPRequestHandler):
    """POST /admin/model the way a keyed faceid server answers it: 401 without the key, else 202."""
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append((self.path, self.headers.get("x-api-key"), body))
        ok = self.path == "/admin/model" and self.headers.get("x-api-key") == KEY
        payload = {"state": "reembedding", "candidate_name": body["checkpoint"]} if ok else \
            {"error": {"code": "unauthorized", "message": "a valid X-API-Key header is required"}}
        data = json.dumps(payload).encode()
        self.send_response(202 if ok else 401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _SwapEndpoint.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SwapEndpoint)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_publish_sends_the_api_key_from_the_flag(server, tmp_path, monkeypatch):
    monkeypatch.delenv("FACEID_API_KEY", raising=False)
    args = build_parser().parse_args(["--rootdir", str(tmp_path), "--publish-url", server, "--api-key", KEY])
    result = publish(args, tmp_path / "finetuned.pt")
    assert result == {"state": "reembedding", "candidate_name": "finetuned.pt"}
    assert _SwapEndpoint.seen == [("/admin/model", KEY, {"checkpoint": "finetuned.pt"})]


def test_publish_reads_the_api_key_from_the_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEID_API_KEY", KEY)
    args = build_parser().parse_args(["--rootdir", str(tmp_path), "--publish-url", server])
    assert publish(args, tmp_path / "ft.pt")["candidate_name"] == "ft.pt"


def test_publish_without_a_key_is_refused_by_a_keyed_server(server, tmp_path, monkeypatch):
    monkeypatch.delenv("FACEID_API_KEY", raising=False)
    args = build_parser().parse_args(["--rootdir", str(tmp_path), "--publish-url", server])
    with pytest.raises(urllib.error.HTTPError) as info:
        publish(args, tmp_path / "ft.pt")
    assert info.value.code == 401
    assert _SwapEndpoint.seen[0][1] is None
