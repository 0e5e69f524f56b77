"""Whether a text is Python source: the one parse check of the toolkit.

The syntax gate, the ``syntax_valid`` metric, redaction (a replacement must
not break a row that parsed), the parse-rate check of ``collapse pretrain``,
the syntactic-diversity metrics and the scripts and benchmarks all ask the
same question, so they ask it here: generated code is only parsed, never run.
"""

from __future__ import annotations

import ast
import warnings

__all__ = ["parse_tree", "parses"]


def parse_tree(text: str) -> ast.Module | None:
    """The syntax tree of ``text``, or None when it is not Python source.

    Besides :class:`SyntaxError`, :func:`ast.parse` raises ValueError (a null
    byte), RecursionError and MemoryError (deeply nested generated code); all
    mean "does not parse". Warnings (invalid escape sequences and the like, common
    in generated code) are silenced: they do not make a text fail."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


def parses(text: str) -> bool:
    """Whether ``text`` is Python source that compiles to a syntax tree."""
    return parse_tree(text) is not None
