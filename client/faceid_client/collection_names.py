"""The one rule for collection names, shared by the client (a name goes into the URL path, so it is checked
before any request) and `faceid keys new --collections`. Standard library only."""
from __future__ import annotations

import re

DEFAULT_COLLECTION = "default"  # always exists; the routes without a /collections/{name} prefix address it
COLLECTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def check_collection_name(name: object) -> str:
    """`name` if it is a collection name (lower-case letters, digits, `_` and `-`, 1 to 63 characters, starting
    with a letter or digit); ValueError saying so otherwise."""
    if not isinstance(name, str) or COLLECTION_NAME.fullmatch(name) is None:
        raise ValueError(f"{str(name)[:70]!r} is not a collection name: 1 to 63 characters among a-z, 0-9, _ and -, "
                         "starting with a letter or digit")
    return name
