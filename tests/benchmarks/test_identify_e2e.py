"""The end-to-end identification benchmark (benchmarks/identify_e2e.py) against a real server: its figures
stay where docs/benchmarks.md says."""
from __future__ import annotations

import pytest

from harness import running
from benchmarks import identify_e2e

pytestmark = [pytest.mark.faces, pytest.mark.slow]


def test_lfw_identification_end_to_end(tmp_path, faces):
    """Enroll 100 LFW people, identify another image of each, and 100 never-enrolled people."""
    with running(tmp_path / "e2e.db") as server:
        result = identify_e2e.run(server.url, n=100)
    assert result["people_enrolled"] == 100, result["enroll_failures"]
    assert result["rank1"] >= 0.94, result
    assert result["unknown_rejected"] >= 0.90, result
