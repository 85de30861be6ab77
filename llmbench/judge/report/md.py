"""Markdown's text rules (GitHub-flavoured): escaping, and pipe tables.

Every string that comes from results (labels, reasons, host names) is escaped:
a reason such as ``<script>`` or ``a | b`` must not change the page. Kept apart
from the report's frames so that ``compare``'s CI summary does not load pandas.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence, Set

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def escape(text: object) -> str:
    """Text that renders as itself inside a Markdown table cell."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))
    return escaped.replace("\r", "").replace("\n", "<br>")


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Set[int] = frozenset()
) -> str:
    """A pipe table; cells are escaped here, so pass plain text."""
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = [
        "| " + " | ".join(escape(h) for h in header) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
