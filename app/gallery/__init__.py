"""The gallery: SQLAlchemy models and store (the truth), and the in-memory vector index (a cache)."""
