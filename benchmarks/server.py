"""Re-export: the real-server harness lives in `app.testing` (shared with the tests)."""
from app.testing import REPO, Server, database_url, free_port, running  # noqa: F401
