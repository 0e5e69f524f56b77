"""Licenses of source files: detection, SPDX expressions and the allow-list.

A file's license, in order of precedence:

1. an ``SPDX-License-Identifier:`` line in its first 30 lines (any comment
   style); the expression is kept as written, with ids normalized to their
   canonical SPDX spelling (``mit`` → ``MIT``, ``GPL-2.0+`` →
   ``GPL-2.0-or-later``);
2. otherwise the source's own rule: the standard library is ``PSF-2.0``
   (the Python Software Foundation License Version 2, under which the whole
   CPython distribution is released; the few files with their own SPDX
   header, such as ``tomllib``'s MIT, keep theirs), an installed
   distribution's license comes from its metadata (:func:`distribution_license`),
   and a directory tree uses the nearest license file: ``LICENSE``,
   ``LICENCE``, ``COPYING``, ``UNLICENSE`` (any case, with any extension or
   suffix such as ``LICENSE.txt``, ``LICENSE-MIT``) in the file's directory
   or the closest one above it, up to the source root (or, when the root
   lies inside a git checkout, up to that checkout's root), never past the
   root of a checkout (a directory holding ``.git``): a checkout nested in
   the tree (``vendor/foo/.git``) without a license file of its own is
   unknown, not its host's license. Several license files in one directory
   combine with ``AND``: every one must be allowed;
3. otherwise the license is unknown (``None``).

License files are identified from their text by characteristic phrases
(:func:`identify_text`): MIT, MIT-0, Apache-2.0, BSD-2-Clause,
BSD-3-Clause, BSD-4-Clause, 0BSD, ISC, Zlib, Unlicense, CC0-1.0, PSF-2.0, MPL-2.0,
EPL-2.0, GPL-2.0/3.0, LGPL-2.1/3.0 and AGPL-3.0 (``-only`` unless the text
is too short to say; the GNU texts do not say "or later" themselves).

An expression is allowed (:func:`allowed`) when the allow-list accepts it:
``A OR B`` when either side is, ``A AND B`` when both are, ``A WITH
exception`` when ``A`` is. Allow-list entries are SPDX ids or shell globs
(``BSD-*``), compared case-insensitively.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

__all__ = [
    "DEFAULT_ALLOWED", "STDLIB_LICENSE", "UNKNOWN", "NOASSERTION", "spdx_header", "normalize_expression",
    "identify_text", "allowed", "license_ids", "LicenseFinder", "distribution_license", "is_license_file",
]

#: The license of the CPython standard library.
STDLIB_LICENSE = "PSF-2.0"
#: The label of files whose license could not be determined.
UNKNOWN = "unknown"
#: The SPDX keyword for "no license is asserted": rows of tabular sources and synthetic samples.
NOASSERTION = "NOASSERTION"

#: Permissive licenses: what ``data.licenses_allowed`` holds by default.
DEFAULT_ALLOWED = ["PSF-2.0", "Python-2.0", "MIT", "MIT-0", "Apache-2.0", "BSD-*", "0BSD", "ISC", "Zlib",
                   "Unlicense", "CC0-1.0"]

_CANONICAL = [
    "0BSD", "AFL-3.0", "AGPL-3.0-only", "AGPL-3.0-or-later", "Apache-1.1", "Apache-2.0", "Artistic-2.0",
    "BSD-1-Clause", "BSD-2-Clause", "BSD-3-Clause", "BSD-3-Clause-Clear", "BSD-4-Clause", "BSL-1.0", "CC-BY-4.0",
    "CC0-1.0", "CNRI-Python", "EPL-1.0", "EPL-2.0", "EUPL-1.2", "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only",
    "GPL-3.0-or-later", "HPND", "ISC", "LGPL-2.0-only", "LGPL-2.0-or-later", "LGPL-2.1-only", "LGPL-2.1-or-later",
    "LGPL-3.0-only", "LGPL-3.0-or-later", "MIT", "MIT-0", "MPL-1.1", "MPL-2.0", "NCSA", "OpenSSL", "PSF-2.0",
    "Python-2.0", "Unicode-DFS-2016", "Unicode-3.0", "Unlicense", "UPL-1.0", "WTFPL", "X11", "Zlib", "ZPL-2.1",
]
_BY_LOWER = {s.lower(): s for s in _CANONICAL}
# Deprecated SPDX ids and common names (License metadata, trove classifiers) → SPDX id.
_ALIASES = {
    "gpl-2.0": "GPL-2.0-only", "gpl-2.0+": "GPL-2.0-or-later", "gpl-3.0": "GPL-3.0-only", "gpl-3.0+": "GPL-3.0-or-later",
    "lgpl-2.1": "LGPL-2.1-only", "lgpl-2.1+": "LGPL-2.1-or-later", "lgpl-3.0": "LGPL-3.0-only",
    "lgpl-3.0+": "LGPL-3.0-or-later", "agpl-3.0": "AGPL-3.0-only", "lgpl-2.0": "LGPL-2.0-only",
    "mit license": "MIT", "the mit license": "MIT", "mit-license": "MIT", "expat": "MIT",
    "apache": "Apache-2.0", "apache 2.0": "Apache-2.0", "apache-2": "Apache-2.0", "apache 2": "Apache-2.0",
    "apache license 2.0": "Apache-2.0", "apache license, version 2.0": "Apache-2.0", "apache license version 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0", "apache license": "Apache-2.0", "asl 2.0": "Apache-2.0",
    "apache software license 2.0": "Apache-2.0",
    "bsd": "BSD-3-Clause", "bsd license": "BSD-3-Clause", "new bsd": "BSD-3-Clause", "new bsd license": "BSD-3-Clause",
    "modified bsd": "BSD-3-Clause", "bsd-3": "BSD-3-Clause", "3-clause bsd": "BSD-3-Clause", "bsd 3-clause": "BSD-3-Clause",
    "bsd-2": "BSD-2-Clause", "simplified bsd": "BSD-2-Clause", "2-clause bsd": "BSD-2-Clause", "bsd 2-clause": "BSD-2-Clause",
    "isc license": "ISC", "isc license (iscl)": "ISC", "psf": "PSF-2.0", "psf license": "PSF-2.0", "psfl": "PSF-2.0",
    "python software foundation license": "PSF-2.0", "python software foundation": "PSF-2.0", "psf-2.0": "PSF-2.0",
    "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0", "mpl 2.0": "MPL-2.0", "mpl-2": "MPL-2.0",
    "gnu general public license v2 (gplv2)": "GPL-2.0-only", "gnu general public license v3 (gplv3)": "GPL-3.0-only",
    "gnu general public license v2 or later (gplv2+)": "GPL-2.0-or-later",
    "gnu general public license v3 or later (gplv3+)": "GPL-3.0-or-later",
    "gnu lesser general public license v2 (lgplv2)": "LGPL-2.0-only",
    "gnu lesser general public license v3 (lgplv3)": "LGPL-3.0-only",
    "gnu lesser general public license v2 or later (lgplv2+)": "LGPL-2.0-or-later",
    "gnu lesser general public license v3 or later (lgplv3+)": "LGPL-3.0-or-later",
    "gnu affero general public license v3": "AGPL-3.0-only",
    "gnu affero general public license v3 or later (agplv3+)": "AGPL-3.0-or-later",
    "gplv2": "GPL-2.0-only", "gplv3": "GPL-3.0-only", "gplv2+": "GPL-2.0-or-later", "gplv3+": "GPL-3.0-or-later",
    "lgplv3": "LGPL-3.0-only", "lgplv2+": "LGPL-2.0-or-later", "lgplv3+": "LGPL-3.0-or-later",
    "the unlicense": "Unlicense", "the unlicense (unlicense)": "Unlicense",
    "cc0 1.0 universal (cc0 1.0) public domain dedication": "CC0-1.0", "zlib license": "Zlib",
    "zlib/libpng license": "Zlib", "boost software license 1.0 (bsl-1.0)": "BSL-1.0",
    "eclipse public license 2.0 (epl-2.0)": "EPL-2.0", "historical permission notice and disclaimer (hpnd)": "HPND",
    "universal permissive license (upl)": "UPL-1.0", "mit no attribution license (mit-0)": "MIT-0",
    "the mit license (mit)": "MIT", "mit/x11": "MIT", "3-clause bsd license": "BSD-3-Clause",
    "2-clause bsd license": "BSD-2-Clause", "bsd-3-clause license": "BSD-3-Clause",
}

_SPDX_LINE = re.compile(r"SPDX-License-Identifier:\s*(?P<expr>[^\n\r]*)")
_EXPR_TOKEN = re.compile(r"\(|\)|[A-Za-z0-9.+:_-]+")


def _norm_id(token: str) -> str:
    low = token.lower()
    if low in _BY_LOWER:
        return _BY_LOWER[low]
    if low in _ALIASES:
        return _ALIASES[low]
    if low.startswith("licenseref-") or low.startswith("documentref-"):
        return token
    return token


def normalize_expression(expr: str) -> str:
    """An SPDX expression with canonical ids and operators (``mit or apache-2.0`` → ``MIT OR Apache-2.0``).

    Whole-string names that are not expressions (``MIT License``, ``Apache
    Software License``) map to their id.
    """
    expr = expr.strip()
    low = expr.lower().strip(" .")
    if low in _ALIASES:
        return _ALIASES[low]
    out = []
    for tok in _EXPR_TOKEN.findall(expr):
        up = tok.upper()
        out.append(up if up in ("AND", "OR", "WITH") else tok if tok in "()" else _norm_id(tok))
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def spdx_header(text: str, max_lines: int = 30) -> str | None:
    """The expression of an ``SPDX-License-Identifier:`` line in the first ``max_lines`` lines, normalized."""
    head = "\n".join(text.split("\n", max_lines)[:max_lines])
    m = _SPDX_LINE.search(head)
    if not m:
        return None
    expr = re.split(r"\*/|-->|\"\"\"|'''", m["expr"])[0].strip().rstrip("#;,").strip()
    return normalize_expression(expr) if expr else None


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower())


_PSF_TITLE = "python software foundation license version 2"
# CPython's own LICENSE (and its copies) opens with the history of the software, which quotes the GPL,
# before the PSF license itself.
_CPYTHON_OPENING = "a history of the software"


# (id, phrases that must all occur in the head). Of the fingerprints that match, the one whose first
# phrase occurs earliest wins (a license's own title comes before the licenses it mentions: MPL-2.0
# names the GNU licenses in its definitions); on a tie the earlier entry wins, so specific texts come first.
_FINGERPRINTS: list[tuple[str, tuple[str, ...]]] = [
    ("MPL-2.0", ("mozilla public license", "2 0")),
    ("EPL-2.0", ("eclipse public license", "2 0")),
    ("AGPL-3.0-only", ("gnu affero general public license", "version 3")),
    ("LGPL-2.1-only", ("gnu lesser general public license", "version 2 1")),
    ("LGPL-3.0-only", ("gnu lesser general public license", "version 3")),
    ("LGPL-2.0-only", ("gnu library general public license", "version 2")),
    ("GPL-3.0-only", ("gnu general public license", "version 3")),
    ("GPL-2.0-only", ("gnu general public license", "version 2")),
    ("PSF-2.0", (_PSF_TITLE,)),
    ("Apache-2.0", ("apache license", "version 2 0")),
    ("PSF-2.0", ("psf license agreement", "python software foundation")),
    ("Unlicense", ("this is free and unencumbered software released into the public domain",)),
    ("CC0-1.0", ("cc0 1 0 universal",)),
    ("CC0-1.0", ("creative commons", "cc0")),
    ("MIT-0", ("permission is hereby granted free of charge to any person obtaining a copy",
               "to permit persons to whom the software is furnished to do so"), ),
    ("BSD-4-Clause", ("redistribution and use in source and binary forms", "all advertising materials mentioning")),
    ("BSD-3-Clause", ("redistribution and use in source and binary forms", "endorse or promote products")),
    ("BSD-2-Clause", ("redistribution and use in source and binary forms",)),
    ("0BSD", ("permission to use copy modify and or distribute this software for any purpose with or without fee is hereby granted",)),
    ("ISC", ("permission to use copy modify and distribute this software for any purpose with or without fee is hereby granted",)),
    ("Zlib", ("this software is provided as is without any express or implied warranty", "altered source versions must be plainly marked")),
    ("BSL-1.0", ("boost software license",)),
]
_MIT_NOTICE = "the above copyright notice and this permission notice shall be included"
_ISC_NOTICE = "provided that the above copyright notice and this permission notice appear in all copies"


#: Characters (after squashing) of a license file that say which license it is: the primary license
#: comes first, third-party notices and the GNU texts' "how to apply" appendix come later.
HEAD_CHARS = 4000


def identify_text(text: str) -> str | None:
    """The SPDX id of a license text, or None when it is not recognized.

    Only the head of the text (:data:`HEAD_CHARS`) is matched, where the
    primary license of a file is (third-party notices appended further down
    say nothing about it), and of the licenses found there the one named
    first wins. CPython's own ``LICENSE`` (it opens with "A. HISTORY OF THE
    SOFTWARE", which quotes the GPL) is PSF-2.0 when the PSF license follows.
    A short text that is just a license name or id (``MIT``, ``BSD
    License``, ``Apache-2.0``) is mapped like an expression.
    """
    squashed = _squash(text)
    if not squashed.strip():
        return None
    if len(text) < 120:
        expr = normalize_expression(text.strip().splitlines()[0])
        if all(t in ("AND", "OR", "WITH", "(", ")") or t in _BY_LOWER.values() for t in _EXPR_TOKEN.findall(expr)):
            return expr
    head = squashed[:HEAD_CHARS]
    if head.lstrip().startswith(_CPYTHON_OPENING) and _PSF_TITLE in squashed:
        return "PSF-2.0"
    best: tuple[int, str] | None = None
    for spdx, phrases in _FINGERPRINTS:
        if all(p in head for p in phrases):
            at = head.index(phrases[0])
            if best is None or at < best[0]:
                best = (at, spdx)
    if best is None:
        return None
    spdx = best[1]
    if spdx == "MIT-0":
        return "MIT" if _MIT_NOTICE in squashed else "MIT-0"
    if spdx in ("0BSD", "ISC"):
        # ISC wording with "and/or" and the notice clause is ISC; 0BSD drops the clause.
        return "ISC" if _ISC_NOTICE in squashed else "0BSD"
    if spdx.endswith("-only") and "or at your option any later version" in head:
        return spdx.replace("-only", "-or-later")
    return spdx


def license_ids(expr: str) -> list[str]:
    """The license ids of an expression (operators, exceptions and parentheses removed)."""
    toks = _EXPR_TOKEN.findall(expr)
    out, skip = [], False
    for t in toks:
        if skip:
            skip = False
            continue
        if t.upper() == "WITH":
            skip = True
        elif t.upper() not in ("AND", "OR") and t not in "()":
            out.append(t)
    return out


def _allowed_id(spdx: str, allow: tuple[str, ...]) -> bool:
    low = spdx.lower()
    return any(fnmatch.fnmatchcase(low, a.lower()) for a in allow)


def allowed(expr: str | None, allow: Iterable[str] | None) -> bool:
    """Whether an SPDX expression is acceptable under an allow-list (None: everything, unknown included)."""
    if allow is None:
        return True
    if expr is None or expr == UNKNOWN:
        return False
    allow = tuple(allow)
    toks = _EXPR_TOKEN.findall(expr)
    pos = 0

    def parse_or() -> bool:
        nonlocal pos
        ok = parse_and()
        while pos < len(toks) and toks[pos].upper() == "OR":
            pos += 1
            ok = parse_and() or ok
        return ok

    def parse_and() -> bool:
        nonlocal pos
        ok = parse_atom()
        while pos < len(toks) and toks[pos].upper() == "AND":
            pos += 1
            ok = parse_atom() and ok
        return ok

    def parse_atom() -> bool:
        nonlocal pos
        if pos >= len(toks):
            return False
        t = toks[pos]
        pos += 1
        if t == "(":
            ok = parse_or()
            if pos < len(toks) and toks[pos] == ")":
                pos += 1
            return ok
        if pos < len(toks) and toks[pos].upper() == "WITH":
            pos += 2  # the exception narrows nothing we decide on
        return _allowed_id(t, allow)

    try:
        ok = parse_or()
    except RecursionError:
        return False
    return ok and pos == len(toks)


_LICENSE_FILE = re.compile(r"^(?:LICEN[CS]E|COPYING|UNLICENSE)(?:[-._].*)?$", re.IGNORECASE)


def is_license_file(name: str) -> bool:
    return bool(_LICENSE_FILE.match(name)) and not name.lower().endswith((".py", ".pyc", ".html"))


@lru_cache(maxsize=4096)
def _identify_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read(256 * 1024).decode("utf-8", errors="replace")
    except OSError:
        return UNKNOWN
    return identify_text(text) or UNKNOWN


def _dir_license(directory: Path) -> str | None:
    """The license of the license files directly in ``directory`` (AND of several), or None if there are none."""
    try:
        names = sorted(n for n in (p.name for p in directory.iterdir()) if is_license_file(n) and (directory / n).is_file())
    except OSError:
        return None
    if not names:
        return None
    ids = sorted({_identify_file(str(directory / n)) for n in names})
    if UNKNOWN in ids:
        return UNKNOWN
    return ids[0] if len(ids) == 1 else " AND ".join(f"({i})" if " " in i else i for i in ids)


class LicenseFinder:
    """Nearest-license-file lookup under one source root, memoized per directory.

    The search stops at ``root``, or at the root of the git checkout that
    contains ``root`` when there is one (a directory holding ``.git``), and
    never goes above the root of any checkout on the way: a nested checkout
    without a license file of its own is unknown (None).
    """

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        top = self.root
        for d in [self.root, *self.root.parents]:
            if (d / ".git").exists():
                top = d
                break
        self.top = top
        self._memo: dict[Path, str | None] = {}

    def __call__(self, path: Path) -> str | None:
        return self.find(Path(path).parent)

    def find(self, directory: Path) -> str | None:
        if directory in self._memo:
            return self._memo[directory]
        found = _dir_license(directory)
        if (found is None and directory != self.top and self.top in directory.parents
                and not (directory / ".git").exists()):
            found = self.find(directory.parent)
        self._memo[directory] = found
        return found


def distribution_license(dist) -> str | None:
    """The license of an installed distribution (``importlib.metadata.Distribution``).

    In order: the ``License-Expression`` field (PEP 639); its own license
    files (``LICENSE*``/``LICENCE*``/``COPYING*`` directly in its
    ``.dist-info`` or ``.dist-info/licenses``; the notices of bundled
    third-party code in subfolders are not its license), identified from
    their text, when every one of them is recognized; the ``License ::``
    classifiers (``BSD License`` counts as BSD-3-Clause, the usual variant;
    several classifiers combine with ``OR``, as packaging tools read them);
    the free-text ``License`` field. None when none of them says.
    """
    meta = dist.metadata
    expr = meta.get("License-Expression")
    if expr and expr.strip():
        return normalize_expression(expr)
    found_ids: list[str | None] = []
    for f in dist.files or []:
        parts = Path(str(f)).parts
        own = (len(parts) == 2 and parts[0].endswith(".dist-info")) or (
            len(parts) == 3 and parts[0].endswith(".dist-info") and parts[1] == "licenses")
        if not own or not is_license_file(parts[-1]):
            continue
        try:
            found_ids.append(identify_text(dist.locate_file(f).read_text(errors="replace")))
        except (OSError, ValueError):
            found_ids.append(None)
    if found_ids and all(found_ids):
        ids = sorted(set(found_ids))  # type: ignore[arg-type]
        return ids[0] if len(ids) == 1 else " AND ".join(f"({i})" if " " in i else i for i in ids)
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    found = []
    for c in classifiers:
        if c.lower() in ("osi approved", "other/proprietary license", "dfsg approved"):
            continue
        e = identify_text(c)
        if e:
            found.append(e)
    if found:
        found = sorted(set(found))
        return found[0] if len(found) == 1 else " OR ".join(found)
    lic = meta.get("License")
    if lic and lic.strip() and lic.strip().upper() != "UNKNOWN":
        return identify_text(lic)
    return None
