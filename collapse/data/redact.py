"""Secrets and personal data: found by pattern and replaced by placeholders.

Runs on the human corpus before anything is hashed, split, tokenized or
saved, so a key or an address in the source never reaches a tokenizer
vocabulary, a model, a sample or a saved dataset. Each kind is replaced by a
placeholder that keeps the code's shape (a string literal stays a string
literal):

=============  =================  =================================================
kind           placeholder        what is matched
=============  =================  =================================================
private_key    ``<KEY>``          PEM blocks ``-----BEGIN ... PRIVATE KEY-----`` to
                                  their END line whose body is key data (base64
                                  lines, in one string or several, and PEM
                                  headers); a BEGIN line without such a block:
                                  that header, and the key data lines right
                                  after it (a key cut off), nothing else
aws_key        ``<KEY>``          AWS access key ids (``AKIA``/``ASIA``/... + 16)
github_token   ``<KEY>``          ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` + 36,
                                  ``github_pat_...``
slack_token    ``<KEY>``          ``xoxa-``/``xoxb-``/``xoxp-``/``xoxo-``/``xoxr-``/
                                  ``xoxs-`` tokens, Slack webhook URLs
google_key     ``<KEY>``          ``AIza`` + 35 (Google API keys)
stripe_key     ``<KEY>``          ``sk_live_``/``rk_live_``/``pk_live_`` keys
jwt            ``<KEY>``          three base64url parts, the first two ``eyJ...``
secret         ``<KEY>``          the value of an assignment or keyword/dict entry
                                  whose name says key/secret/token/password
                                  (``api_key = "..."``, ``"token": "..."``,
                                  ``os.environ["API_KEY"] = "..."``,
                                  ``token: str = "..."``) when the
                                  value is 16+ characters without spaces, mixes
                                  letters and digits and has Shannon entropy of at
                                  least 3 bits per character
email          ``<EMAIL>``        ``local@domain.tld`` addresses
ipv4           ``<IP_ADDRESS>``   dotted quads with valid octets (0-255, no leading
                                  zeros) not inside a longer dotted number
                                  (``3.11.7.1.2``) nor after a letter or ``v``
                                  (``v1.2.3.4``), and not on a line that names a
                                  version
ipv6           ``<IP_ADDRESS>``   what :mod:`ipaddress` accepts as an IPv6 address,
                                  with at least three non-empty groups (so slices
                                  such as ``a[::2]`` or ``a[1::2]`` never match)
=============  =================  =================================================

Emails and IP addresses are looked for only inside string literals and
comments when the text is Python source that parses (found with
:mod:`tokenize`): in code, ``x@self.weight`` is a matrix product, not an
address. Text that does not parse (prose, a fragment) is searched whole.
The pipeline's ``redact`` step drops a row that parsed before redaction
and no longer does (reason ``redaction_broke_syntax``; see :func:`parses`).

What is *not* redacted, on purpose and the same way everywhere (the stdlib's
own examples included): addresses that identify no one. An IP address is
kept when :mod:`ipaddress` says it is not globally reachable (loopback
``127.0.0.1``/``::1``, private ranges, link-local, multicast, the
documentation ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32, and unspecified ``0.0.0.0``/``::``).
An email address is kept when its domain is reserved for documentation or
testing by RFC 2606/6761 (``example.com``/``.org``/``.net``, ``*.example``,
``*.test``, ``*.invalid``, ``*.localhost``, ``localhost``). Everything else
that matches is replaced: the stdlib's real maintainer addresses such as
``guido@python.org`` become ``<EMAIL>``.
"""

from __future__ import annotations

import ast
import bisect
import io
import ipaddress
import math
import re
import tokenize
import warnings
from collections import Counter

__all__ = ["KINDS", "PLACEHOLDERS", "redact", "Redactor", "parses"]

PLACEHOLDERS = {
    "private_key": "<KEY>", "aws_key": "<KEY>", "github_token": "<KEY>", "slack_token": "<KEY>",
    "google_key": "<KEY>", "stripe_key": "<KEY>", "jwt": "<KEY>", "secret": "<KEY>",
    "email": "<EMAIL>", "ipv4": "<IP_ADDRESS>", "ipv6": "<IP_ADDRESS>",
}
KINDS = tuple(PLACEHOLDERS)

_PEM_BEGIN = r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
_PEM_END = r"-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
# What lies between BEGIN and END in a key written into source: base64, PEM headers, line breaks,
# \n escapes, and the glue of string pieces (quotes, a prefix, '+', a continuation backslash).
# Spaces only at a line's ends or next to a quote or '+': code between two markers
# (``x = "-----BEGIN ..."`` ... ``y = "-----END ..."``) is no key body. Atomic: linear time.
_PEM_BODY = (r"(?>(?:(?:Proc-Type|DEK-Info|Version|Comment|Hash|Charset):(?:(?!-----)[^\r\n\"'\\])*"
             r"|[A-Za-z0-9+/=\"']|\\[nr]|\\?\r?\n|(?<=[\n\"'+])[ \t]+|[ \t]+(?=[\r\n\"'+\\]))*)")
_PEM = re.compile(rf"(?P<begin>{_PEM_BEGIN})(?P<body>{_PEM_BODY}){_PEM_END}")
# A BEGIN line with no block: the lines (or \n-separated pieces) of key data right after it.
_PEM_SEP = r"""(?:\\[nr])*(?:["'][ \t]*\+?[ \t]*\\?)?(?:\r?\n[ \t]*)?(?:[rbuRBU]{0,2}["'])?"""
_PEM_LONE = re.compile(rf"{_PEM_BEGIN}(?P<data>(?>(?:{_PEM_SEP}[A-Za-z0-9+/=]{{20,}}(?![A-Za-z0-9+/=]))*))")
_KEY_DATA = re.compile(r"[A-Za-z0-9+/=]{20,}")
_TOKENS: list[tuple[str, re.Pattern[str]]] = [
    ("aws_key", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])")),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b")),
    ("slack_token", re.compile(r"\bxox[aboprs]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+")),
    ("google_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])")),
    ("stripe_key", re.compile(r"\b[srp]k_live_[0-9A-Za-z]{16,}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
]
# Cheap scans that must hit before the full patterns run (most code holds no secret at all).
_TOKEN_TRIGGER = re.compile(r"AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA|gh[pousr]_|github_pat_|xox|hooks\.slack|AIza|k_live_|eyJ")
_LONG_QUOTED = re.compile(r"""(?P<q>['"])(?P<value>[^'"\s\\]{16,})(?P=q)""")
# what precedes the value: name = "...", name: "...", name="..." (keyword), "name": "..." (dict entry)
# ... also a subscript (os.environ["API_KEY"] = "...") and an annotation (token: str = "...").
_SECRET_NAME = re.compile(r"""(?<![\w.-])(?P<name>[\w.-]+)(?:['"]?\])?['"]?[ \t]*"""
                          r"""(?::[ \t]*[\w.\[\], |'"]*?[ \t]*(?==))?(?:=|:|=>)[ \t]*[rbuf]{0,2}\Z""", re.IGNORECASE)
#: How far before a quoted value its name is looked for (bounded: a long line of strings stays linear).
_NAME_WINDOW = 128
_SECRET_WORD = re.compile(r"(?i)api[_-]?key|apikey|secret|token|passw(?:or)?d|access[_-]?key|private[_-]?key|auth[_-]?key|credential")
_EMAIL_TRIGGER = re.compile(r"[\w.%+-]@[A-Za-z0-9]")
_IPV4_TRIGGER = re.compile(r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]")
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24})(?![\w-])"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.\w)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:|(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?![\w:])")
_VERSION_LINE = re.compile(r"(?i)version|__version__|\bver\b|release|\bpython\s*[0-9]")
_RESERVED_DOMAINS = ("example.com", "example.org", "example.net", "localhost")
_RESERVED_TLDS = ("example", "test", "invalid", "localhost")


def _entropy(s: str) -> float:
    """Shannon entropy of the characters of ``s``, in bits per character."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _looks_secret(value: str) -> bool:
    has_alpha = any(c.isalpha() for c in value)
    has_digit = any(c.isdigit() for c in value)
    return has_alpha and has_digit and _entropy(value) >= 3.0 and not value.startswith(("<", "%", "{", "$"))


def _reserved_email(domain: str) -> bool:
    d = domain.lower()
    return d in _RESERVED_DOMAINS or d.endswith(tuple("." + r for r in _RESERVED_DOMAINS)) or d.rsplit(".", 1)[-1] in _RESERVED_TLDS


def parses(text: str) -> bool:
    """Whether ``text`` is Python source that compiles to a syntax tree."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _literal_spans(text: str) -> list[tuple[int, int]] | None:
    """``[(start, end)]`` offsets of the string literals and comments of ``text``, in order,
    when it is Python source that parses; None when it is not (then the whole text counts)."""
    if not parses(text):
        return None
    lines = io.StringIO(text).readlines()
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def at(pos: tuple[int, int]) -> int:
        return starts[pos[0] - 1] + pos[1] if pos[0] - 1 < len(starts) else len(text)

    fstart, fend = getattr(tokenize, "FSTRING_START", -1), getattr(tokenize, "FSTRING_END", -1)
    spans: list[tuple[int, int]] = []
    depth, open_at = 0, 0
    try:
        for tok in tokenize.generate_tokens(iter(lines).__next__):
            if tok.type == fstart:  # Python 3.12+: an f-string is several tokens
                if depth == 0:
                    open_at = at(tok.start)
                depth += 1
            elif tok.type == fend:
                depth -= 1
                if depth == 0:
                    spans.append((open_at, at(tok.end)))
            elif depth == 0 and tok.type in (tokenize.STRING, tokenize.COMMENT):
                spans.append((at(tok.start), at(tok.end)))
    except (tokenize.TokenError, SyntaxError, StopIteration):
        return None
    return spans


class _Literals:
    """Whether a match lies inside a string literal or comment of the text (computed once per text)."""

    def __init__(self) -> None:
        self._text: str | None = None
        self._spans: list[tuple[int, int]] | None = None
        self._starts: list[int] = []

    def contains(self, text: str, start: int, end: int) -> bool:
        if self._text is None or self._text != text:
            self._text, self._spans = text, _literal_spans(text)
            self._starts = [a for a, _ in self._spans or ()]
        if self._spans is None:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._spans[i][1] >= end


def _names_version(text: str, pos: int, memo: dict[int, bool]) -> bool:
    """Whether the line of ``text`` holding ``pos`` names a version (looked at once per line)."""
    start = text.rfind("\n", 0, pos) + 1
    hit = memo.get(start)
    if hit is None:
        end = text.find("\n", pos)
        hit = memo[start] = _VERSION_LINE.search(text, start, end if end >= 0 else len(text)) is not None
    return hit


class Redactor:
    """Replace secrets and personal data in texts; ``counts`` accumulates matches per kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter({k: 0 for k in KINDS})

    def __call__(self, text: str) -> str:
        return self.redact(text)

    def _secrets(self, text: str) -> str:
        """Replace long high-entropy string values assigned to a key/secret/token/password name."""
        out, last = [], 0
        for m in _LONG_QUOTED.finditer(text):
            line_start = text.rfind("\n", max(0, m.start() - _NAME_WINDOW), m.start()) + 1
            name = _SECRET_NAME.search(text, max(line_start, m.start() - _NAME_WINDOW), m.start())
            if name is None or not _SECRET_WORD.search(name["name"]) or not _looks_secret(m["value"]):
                continue
            self.counts["secret"] += 1
            out.append(text[last : m.start("value")])
            out.append(PLACEHOLDERS["secret"])
            last = m.end("value")
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _private_keys(self, text: str) -> str:
        key = PLACEHOLDERS["private_key"]

        def block(m: re.Match[str]) -> str:
            if _KEY_DATA.search(m["body"]) is None:  # markers without key data between them
                return m[0]
            self.counts["private_key"] += 1
            return key

        def lone(m: re.Match[str]) -> str:
            self.counts["private_key"] += 1
            return key + _KEY_DATA.sub(key, m["data"])

        return _PEM_LONE.sub(lone, _PEM.sub(block, text))

    def redact(self, text: str) -> str:
        counts = self.counts
        literals = _Literals()
        if "PRIVATE KEY" in text:
            text = self._private_keys(text)
        if _TOKEN_TRIGGER.search(text):
            for kind, pattern in _TOKENS:
                text, n = pattern.subn(PLACEHOLDERS[kind], text)
                counts[kind] += n
        if _LONG_QUOTED.search(text):
            text = self._secrets(text)
        if "@" in text and _EMAIL_TRIGGER.search(text):
            def email(m: re.Match[str]) -> str:
                if _reserved_email(m["domain"]) or not literals.contains(m.string, m.start(), m.end()):
                    return m[0]
                counts["email"] += 1
                return PLACEHOLDERS["email"]

            text = _EMAIL.sub(email, text)

        if _IPV4_TRIGGER.search(text):
            version_lines: dict[int, bool] = {}

            def ipv4(m: re.Match[str]) -> str:
                if (not ipaddress.IPv4Address(m[0]).is_global or _names_version(m.string, m.start(), version_lines)
                        or not literals.contains(m.string, m.start(), m.end())):
                    return m[0]
                counts["ipv4"] += 1
                return PLACEHOLDERS["ipv4"]

            text = _IPV4.sub(ipv4, text)

        if "::" in text or text.count(":") >= 7:
            def ipv6(m: re.Match[str]) -> str:
                # Slices (a[::2], a[1::3]) and short forms parse as addresses too:
                # at least three non-empty groups are required.
                if sum(1 for g in m[0].split(":") if g) < 3:
                    return m[0]
                try:
                    addr = ipaddress.IPv6Address(m[0])
                except ValueError:
                    return m[0]
                if not addr.is_global or not literals.contains(m.string, m.start(), m.end()):
                    return m[0]
                counts["ipv6"] += 1
                return PLACEHOLDERS["ipv6"]

            text = _IPV6.sub(ipv6, text)
        return text


def redact(text: str) -> tuple[str, dict[str, int]]:
    """``(redacted text, matches per kind)`` of one text."""
    r = Redactor()
    out = r.redact(text)
    return out, {k: v for k, v in r.counts.items() if v}
