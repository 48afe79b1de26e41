"""Re-export: the real-server harness lives in `harness` (shared with the tests)."""
from harness import REPO, Server, database_url, free_port, running  # noqa: F401
