"""The one rule for identity labels, shared by the server (every path that takes a label) and the client (an
archive's labels are compared as the server stores them). Standard library only."""
from __future__ import annotations

import unicodedata

MAX_LABEL_CHARS = 200
# Control (Cc), format (Cf: zero-width space, bidi overrides, BOM), surrogates, line/paragraph separators:
# invisible or layout-changing, so "Bush" and "Bush\u200b" would be two identities that look the same.
_FORBIDDEN_IN_LABELS = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def normalize_label(value: object) -> str:
    """The one rule for identity labels on every path (multipart and JSON enroll, rename): Unicode NFC
    (so composed and decomposed "José" are one identity), surrounding whitespace stripped, 1 to 200
    characters, no control, format or separator characters. Raises ValueError saying why."""
    if not isinstance(value, str):
        raise ValueError("the label must be a string")
    label = unicodedata.normalize("NFC", value).strip()
    if not label:
        raise ValueError("the label is empty")
    if len(label) > MAX_LABEL_CHARS:
        raise ValueError(f"the label is longer than {MAX_LABEL_CHARS} characters")
    bad = next((c for c in label if unicodedata.category(c) in _FORBIDDEN_IN_LABELS), None)
    if bad is not None:
        raise ValueError(f"the label contains the control or invisible character U+{ord(bad):04X}")
    return label
