"""benchmarks/events.py's delivery run, small: a real server killed with -9 half-way and started again, a real
receiver failing 30 % of its answers and stopped for a while: every event delivered, in order, signed."""
from __future__ import annotations

import pytest

from benchmarks import events

pytestmark = [pytest.mark.faces, pytest.mark.slow]


def test_every_event_delivered_through_a_kill_and_a_flaky_receiver(tmp_path, faces):
    result = events.delivery(requests=40, fail_share=0.3, subscriptions=2, db=tmp_path / "g.db", drain_timeout_s=120)
    assert result["answered"] == 40 and result["identify_events_expected"] >= 30, result
    assert result["receiver_answers_failed"] > 0, result
    for path, sub in result["subscriptions"].items():
        assert sub["missing_identify_events"] == 0, (path, result)
        assert sub["enroll_events"] == result["enrolled"], (path, result)
        assert sub["order_kept"] and sub["signatures_valid"] and sub["event_id_header_matches_body"], (path, sub)


def test_the_worker_run_delivers_every_event_and_reports_its_cpu(tmp_path):
    result = events.worker(seconds=2, rate=10, webhooks=2, tmp=tmp_path, mqtt_url=None)
    assert result["events"] >= 19 and result["webhook_deliveries"] == 2 * result["events"], result
    assert result["cpu_s"]["worker"] > 0 and result["worker_cpu_ms_per_event"] > 0, result
