"""Key guesses meet the rate limit on every route that tells a valid key from an invalid one, /metrics and
/ready included; refusals are counted under their route in /metrics (in process: TestClient, real service over
fake networks, the `limits` library's memory storage)."""
from __future__ import annotations

import re

from app.core.security import ApiKey, hash_key
from tests.app.test_routes import make_client, store  # noqa: F401 - fixtures

KEYS = [ApiKey(name="ops", sha256=hash_key("ops-key"), scopes=["read"])]


def test_guessing_keys_on_metrics_and_ready_meets_429(store, tmp_path):  # noqa: F811
    c, service = make_client(store, tmp_path, api_keys=KEYS, rate_limit="4/minute")
    try:
        statuses = [c.get(url, headers={"X-API-Key": f"guess-{i}"}).status_code
                    for i in range(4) for url in ("/metrics", "/ready")]
        assert 429 in statuses and statuses[:4] == [401, 200, 401, 200], statuses
        assert all(s == 429 for s in statuses[4:]), statuses
        # an unkeyed readiness or liveness probe (an orchestrator's) is not limited
        assert {c.get(url).status_code for url in ("/ready", "/health") for _ in range(10)} == {200}
    finally:
        service.close()


def _count(text: str, route: str, status: str) -> float:
    found = re.search(r'faceid_requests_total\{method="POST",route="%s",status="%s"\} ([0-9.e+]+)'
                      % (re.escape(route), status), text)
    return float(found.group(1)) if found else 0.0


def test_refused_keys_are_counted_under_their_route(store, tmp_path):  # noqa: F811
    c, service = make_client(store, tmp_path, api_keys=KEYS)
    try:
        ops = {"X-API-Key": "ops-key"}
        before = c.get("/metrics", headers=ops).text
        assert c.post("/enroll", data={"label": "x"}).status_code == 401
        assert c.post("/enroll", data={"label": "x"}, headers=ops).status_code == 403
        after = c.get("/metrics", headers=ops).text
        assert _count(after, "/enroll", "401") == _count(before, "/enroll", "401") + 1
        assert _count(after, "/enroll", "403") == _count(before, "/enroll", "403") + 1
        assert _count(after, "unmatched", "401") == _count(before, "unmatched", "401")
    finally:
        service.close()
