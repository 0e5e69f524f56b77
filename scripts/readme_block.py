"""Rewrite one generated block of the README: the text between two HTML comment markers.

Used by ``scripts/quickstart_results.py`` and ``scripts/findings_readme.py``;
``check=True`` compares instead of writing (exit status 1 when the README differs).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def write_block(name: str, text: str, check: bool, source: str) -> int:
    """Put ``text`` between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``; 2 when the markers are missing."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = README.read_text()
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pat.search(old):
        print(f"README.md has no {begin} … {end} block", file=sys.stderr)
        return 2
    new = pat.sub(lambda _: f"{begin}\n{text}\n{end}", old)
    if check:
        if new != old:
            print(f"README.md's {name} block differs from {source}", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0
