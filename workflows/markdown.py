"""Text for the Markdown the Temporal UI renders (current and static details)."""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


def text(value: object) -> str:
    """``value`` as literal text: no character of it starts emphasis, a link, HTML or a table,
    and it stays on one line (a message may hold newlines)."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
