"""Secrets and personal data: found by pattern and replaced by placeholders.

Runs on the human corpus before anything is hashed, split, tokenized or
saved, so a key or an address in the source never reaches a tokenizer
vocabulary, a model, a sample or a saved dataset. Each kind is replaced by a
placeholder that keeps the code's shape (a string literal stays a string
literal):

=================  =================  =================================================
kind               placeholder        what is matched
=================  =================  =================================================
private_key        ``<KEY>``          PEM blocks ``-----BEGIN ... PRIVATE KEY-----`` to
                                      their END line whose body is key data (base64
                                      lines, in one string or several, and PEM
                                      headers); a BEGIN line without such a block:
                                      that header, and the key data lines right
                                      after it (a key cut off), nothing else
aws_key            ``<KEY>``          AWS access key ids (``AKIA``/``ASIA``/... + 16)
github_token       ``<KEY>``          ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` + 36,
                                      ``github_pat_...``
slack_token        ``<KEY>``          ``xoxa-``/``xoxb-``/``xoxp-``/``xoxo-``/``xoxr-``/
                                      ``xoxs-`` tokens, Slack webhook URLs
google_key         ``<KEY>``          ``AIza`` + 35 (Google API keys)
stripe_key         ``<KEY>``          ``sk_live_``/``rk_live_``/``pk_live_`` keys
npm_token          ``<KEY>``          ``npm_`` + 36 (npm access tokens)
jwt                ``<KEY>``          ``eyJ...`` header and ``eyJ...`` payload, with the
                                      signature if any (unsigned ``alg: none`` tokens too)
secret             ``<KEY>``          the value of an assignment or keyword/dict entry
                                      whose name says key/secret/token/password
                                      (``api_key = "..."``, ``"token": "..."``,
                                      ``os.environ["API_KEY"] = "..."``,
                                      ``token: str = "..."``) when the
                                      value is 16+ characters without spaces, mixes
                                      letters and digits and has Shannon entropy of at
                                      least 3 bits per character
password           ``<KEY>``          any quoted value assigned, compared, passed or
                                      defaulted to a password-like name (its last part
                                      ``password``/``passwd``/``pass``/``passphrase``/
                                      ``pwd``/``pw``/...: ``password = "hunter2"``,
                                      ``DB_PASS = "..."``, ``def f(pw="...")``,
                                      ``login(password="...")``, ``"password": "..."``,
                                      ``if x.passphrase == "..."``), short and
                                      low-entropy ones included; not a placeholder
url_credentials    ``<KEY>``          the password of ``scheme://user:PASSWORD@host``
                                      (empty user too: ``redis://:pw@host``; in
                                      f-strings, a literal password, not a ``{field}``)
auth_header        ``<KEY>``          ``Bearer <token>`` anywhere; ``Basic``/``Token``
                                      credentials right after an ``Authorization`` name
phrase_secret      ``<KEY>``          in comments, docstrings and strings: the value
                                      after "the password/passphrase/passcode/secret/
                                      api key/access token is|was|:|=": a quoted value,
                                      or one word that mixes letters with digits or
                                      symbols ("the password is required" stays)
detect_secrets     ``<KEY>``          every value Yelp's detect-secrets reports
                                      (:mod:`collapse.data.scanner`: keyword,
                                      base64/hex high entropy, basic auth, AWS, Azure,
                                      Artifactory, Cloudant, Discord, GitHub, GitLab,
                                      IBM, JWT, Mailchimp, npm, OpenAI, private key,
                                      PyPI, SendGrid, Slack, Softlayer, Square, Stripe,
                                      Telegram, Twilio), everywhere it occurs in the
                                      text's strings and comments
email              ``<EMAIL>``        ``local@domain.tld`` addresses
ipv4               ``<IP_ADDRESS>``   dotted quads with valid octets (0-255, no leading
                                      zeros) not inside a longer dotted number
                                      (``3.11.7.1.2``) nor after a letter or ``v``
                                      (``v1.2.3.4``); on a line that names a version,
                                      only quads with a part of 100 or more (a version
                                      such as ``3.11.7.1`` stays, ``151.101.12.34`` goes)
ipv6               ``<IP_ADDRESS>``   what :mod:`ipaddress` accepts as an IPv6 address,
                                      with at least three non-empty groups (so slices
                                      such as ``a[::2]`` or ``a[1::2]`` never match)
=================  =================  =================================================

Keys split over adjacent string literals (``("AKIAQ3EG" "RUQX5JXZT4NB")``,
pieces on several lines) are found by joining each run of literals (after the
code before it on its line, so the name rules still apply) and scanning the
result; each piece's part of a key becomes ``<KEY>``. When several rules find
overlapping spans they are merged into one placeholder, counted once under
the kind listed first above.

The ``source`` column (file path and line span) is redacted too, searched
whole (:func:`redact_source`): an email address in a file name becomes
``<EMAIL>`` in the training sets, the dropped-rows record and everything
that cites a source.

Not secrets (left alone by the password, URL, header and phrase rules, and by
the scanner's values): empty and blank values; one character repeated
(``"*"``, ``"***"``, ``"xxxx"``); templates and format fields (``{pw}``,
``<password>``, ``${PASSWORD}``, ``$PW``, ``%s``, ``%(password)s``); the words
``password``/``passwd``/``pass``/``pw``/``pwd``/``secret``/``token``/``key``
(with ``my``/``your``/``db``/``admin``... in front), ``none``/``null``/
``true``/``false``/``changeme``/``redacted``; prompts and messages (ending in
``:``, ``?``, ``>`` or ``...``, or naming a password: ``"Password: "``); and
anything not a quoted literal, such as ``password = getpass.getpass()``.
The scanner's high-entropy hits that read as test data are skipped as well
(:func:`collapse.data.scanner.looks_like_test_data`).

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

import bisect
import io
import ipaddress
import math
import re
import tokenize
from collections import Counter
from typing import Iterator

from collapse.syntax import parses

__all__ = ["KINDS", "PLACEHOLDERS", "redact", "redact_source", "Redactor", "parses"]

PLACEHOLDERS = {
    "private_key": "<KEY>", "aws_key": "<KEY>", "github_token": "<KEY>", "slack_token": "<KEY>",
    "google_key": "<KEY>", "stripe_key": "<KEY>", "npm_token": "<KEY>", "jwt": "<KEY>", "secret": "<KEY>",
    "password": "<KEY>", "url_credentials": "<KEY>", "auth_header": "<KEY>", "phrase_secret": "<KEY>",
    "detect_secrets": "<KEY>",
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
    ("npm_token", re.compile(r"\bnpm_[A-Za-z0-9]{36}(?![A-Za-z0-9])")),
    # header.payload[.signature]: the signature may be empty (alg "none") or short
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?")),
]
# Cheap scans that must hit before the full patterns run (most code holds no secret at all).
_TOKEN_TRIGGER = re.compile(r"AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA|gh[pousr]_|github_pat_|xox|hooks\.slack|AIza|k_live_|npm_|eyJ")
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


# ---- rules of our own, next to detect-secrets (see the module docstring) ----
# scheme://user:PASSWORD@host, the user part possibly empty (redis://:pw@host) or an f-string field.
_URL_CRED = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]{1,20}://(?P<user>[^\s:/?#@'\"\\]{0,64}):(?P<value>[^\s/?#@'\"\\]{1,128})@")
# Bearer tokens anywhere; Basic/Token credentials after an Authorization header name.
_AUTH = r"\b(?P<scheme>bearer|basic|token)[ \t]+(?P<value>[a-z0-9._~+/\-]{8,}=*)"
_AUTH_NAME = re.compile(r"(?i)authori[sz]ation")
# A password-like name: any hit of these is looked at more closely (:func:`_password_name`).
_PW_HIT = re.compile(r"[Pp][Aa][Ss][Ss]|[Pp][Ww]|[Cc][Oo][Nn][Tt][Rr][Aa][Ss][Ee]")
_PW_WORDS = frozenset({"pass", "passwd", "password", "passwords", "passphrase", "passcode", "pwd", "pw", "passwort",
                       "contrasena", "contraseña", "dbpass", "dbpassword"})
# After the name: a closing subscript/quote, an annotation, then = == != or : and a quoted value.
_AFTER_NAME = re.compile(r"""(?:['"]?\])?['"]?[ \t]*(?::[ \t]*[\w.\[\], |]{0,40}?[ \t]*(?==))?(?:==|!=|=|:)[ \t]*"""
                         r"""[rRbBuUfF]{0,2}(?P<q>['"])(?P<value>[^'"\n\\]{0,256})(?P=q)""")
# "the password is ...", "passphrase: ...", "api key = ..." in comments, docstrings and strings.
_PHRASE = (
    r"\b(?:pass(?:word|phrase|code)|pwd|secret(?:[ _]key)?|api[ _-]?key|(?:access|auth|api)[ _-]?token)"
    r"(?:[ \t]+(?:is|was|will[ \t]+be|should[ \t]+be)[ \t]+|[ \t]*[:=][ \t]*)"
    r"""(?:(?P<q>[`'"])(?P<quoted>[^`'"\n]{1,128})(?P=q)|(?P<bare>[^\s`'"]{1,128}))""")
# Both are searched in the lowercased text (fast: no IGNORECASE), or case-insensitively when
# lowercasing changed the text's length (a few non-ASCII letters); values are read from the text.
_AUTH_LOW, _AUTH_CI = re.compile(_AUTH), re.compile(_AUTH, re.IGNORECASE)
_PHRASE_LOW, _PHRASE_CI = re.compile(_PHRASE), re.compile(_PHRASE, re.IGNORECASE)
# Values that say nothing secret: templates, format fields, masks, the names themselves.
_PLACEHOLDER = re.compile(
    r"""(?ix)\{[^{}]*\}|<[^<>]*>|\$\{[^}]*\}|\$\w+|%(?:\([^)]*\))?[sdr]|(.)\1*
    |(?:(?:your|my|the|some|db|new|old|user|admin)[_-]?)?(?:pass(?:word|wd|phrase)?|pwd|pw|secret|token|key)s?
    |none|null|nil|true|false|empty|redacted|hidden|placeholder|changeme""")
# Adjacent string literals ("abc" "def", or across a line break in parentheses): joined before scanning.
# Only where both sides of the seam are key characters (prose split over literals has a space there).
# (The four key characters before the seam are checked in Python: a leading lookbehind would make
# the search try every position.)
_ADJACENT = re.compile(r"""['"](?:[ \t]+|[ \t]*\\?\r?\n[ \t]*)[rRbBuUfF]{0,2}['"][A-Za-z0-9_\-+/=]{4}""")
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+/=")


def _adjacent(text: str) -> bool:
    """Whether ``text`` has two string literals side by side with key characters on both sides."""
    if "'" not in text and '"' not in text:
        return False
    return any(m.start() >= 4 and _KEY_CHARS.issuperset(text[m.start() - 4:m.start()])
               for m in _ADJACENT.finditer(text))
#: Priority of the kinds when spans overlap (the first listed names the merged span).
_KEY_ORDER = ("aws_key", "github_token", "slack_token", "google_key", "stripe_key", "npm_token", "jwt", "secret",
              "url_credentials", "auth_header", "password", "phrase_secret", "detect_secrets")


def _placeholder(value: str) -> bool:
    v = value.strip()
    return not v or _PLACEHOLDER.fullmatch(v) is not None


def _password_name(name: str) -> bool:
    """Whether an identifier (or dict key) names a password: its last part is a password word
    (``password``, ``DB_PASS``, ``adminPassword``, ``pw``, ``passwd2``), not e.g. ``password_prompt``."""
    parts = re.split(r"[_.\- ]+|(?<=[a-z])(?=[A-Z])", name.strip("'\""))
    last = parts[-1].lower().rstrip("0123456789") if parts else ""
    return last in _PW_WORDS


def _prompt(value: str) -> bool:
    """A message rather than a password: ``"Password: "``, ``"Enter the passphrase?"``, a format string."""
    v = value.strip()
    return v.endswith((":", "?", ">", "...")) or "%" in v or "{" in v or bool(re.search(r"(?i)pass(?:word|phrase)", v))


def _credential_like(value: str, scheme: str) -> bool:
    """An Authorization value rather than a word: with a digit; a Bearer value of 20+ characters;
    a Basic/Token value (after an Authorization name) in mixed case or with base64 padding."""
    if any(c.isdigit() for c in value):
        return True
    if scheme == "bearer":
        return len(value) >= 20
    return "." not in value and (value.endswith("=") or (value.lower() != value and value.upper() != value))


def _bare_secret(value: str) -> bool:
    """An unquoted word after "password is" that looks like a secret (letters with digits or
    symbols), not prose ("the password is required", "the secret is stored in ...")."""
    v = value.rstrip(".,;:)!?")
    if len(v) < 4 or _placeholder(v):
        return False
    has_alpha = any(c.isalpha() for c in v)
    has_digit = any(c.isdigit() for c in v)
    has_symbol = any(c in "!@#$%^&*~+=?-_/" for c in v)
    if re.fullmatch(r"[A-Za-z_][\w.]*(?:\(\))?", v) and not has_digit:
        return False  # an identifier or attribute (self.password)
    return has_alpha and (has_digit or has_symbol)


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


def _literal_spans(text: str) -> tuple[list[tuple[int, int]], list[list[tuple[int, int]]]] | None:
    """``(spans, runs)`` of Python source that parses, None otherwise (then the whole text counts).

    ``spans``: ``[(start, end)]`` offsets of the string literals and comments of ``text``, in
    order. ``runs``: the runs of two or more adjacent string literals (implicit concatenation),
    per run the ``(start, end)`` offsets of each piece's content, without prefix and quotes."""
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
    runs: list[list[tuple[int, int]]] = []
    run: list[tuple[int, int]] = []
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
            if depth > 0 or tok.type in (tokenize.NL, tokenize.COMMENT) or tok.type == fend:
                continue
            if tok.type == tokenize.STRING:
                a = at(tok.start)
                prefix = len(tok.string) - len(tok.string.lstrip("rRbBuUfF"))
                q = 3 if tok.string[prefix:prefix + 3] in ('"""', "'''") else 1
                run.append((a + prefix + q, a + len(tok.string) - q))
            else:
                if len(run) > 1:
                    runs.append(run)
                run = []
    except (tokenize.TokenError, SyntaxError, StopIteration):
        return None
    if len(run) > 1:
        runs.append(run)
    return spans, runs


class _Literals:
    """Whether a match lies inside a string literal or comment of the text (computed once per text).

    ``whole=True``: every position counts (text that is never Python, such as a ``source`` path).
    """

    def __init__(self, whole: bool = False) -> None:
        self._text: str | None = None
        self._spans: list[tuple[int, int]] | None = None
        self._starts: list[int] = []
        self.runs: list[list[tuple[int, int]]] = []
        self.whole = whole

    def _load(self, text: str) -> None:
        if self._text is None or self._text != text:
            got = _literal_spans(text)
            self._text, self._spans, self.runs = text, got[0] if got else None, got[1] if got else []
            self._starts = [a for a, _ in self._spans or ()]

    def contains(self, text: str, start: int, end: int) -> bool:
        if self.whole:
            return True
        self._load(text)
        if self._spans is None:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._spans[i][1] >= end

    def code(self, text: str) -> bool:
        """Whether ``text`` is Python source that parses (its literals are known)."""
        if self.whole:
            return False
        self._load(text)
        return self._spans is not None


def _names_version(text: str, pos: int, memo: dict[int, bool]) -> bool:
    """Whether the line of ``text`` holding ``pos`` names a version (looked at once per line)."""
    start = text.rfind("\n", 0, pos) + 1
    hit = memo.get(start)
    if hit is None:
        end = text.find("\n", pos)
        hit = memo[start] = _VERSION_LINE.search(text, start, end if end >= 0 else len(text)) is not None
    return hit


def _version_like(quad: str) -> bool:
    """A dotted quad that reads as a version number (every part below 100: ``3.11.7.1``)."""
    return all(len(p) <= 2 for p in quad.split("."))


Span = tuple[int, int, str]
#: Whether a :class:`Redactor` runs detect-secrets unless told otherwise.
SCANNER = True


class Redactor:
    """Replace secrets and personal data in texts; ``counts`` accumulates matches per kind.

    ``scanner``: run Yelp's detect-secrets (:mod:`collapse.data.scanner`) next to the rules here;
    off, only the rules of this module run. None: :data:`SCANNER` (on; benchmarks turn it off).
    """

    def __init__(self, scanner: bool | None = None) -> None:
        self.counts: Counter[str] = Counter({k: 0 for k in KINDS})
        self.scanner = SCANNER if scanner is None else scanner

    def __call__(self, text: str) -> str:
        return self.redact(text)

    # ------------------------------------------------------------------ key spans
    def _secret_spans(self, text: str) -> list[Span]:
        """Long high-entropy string values assigned to a key/secret/token/password name."""
        out: list[Span] = []
        for m in _LONG_QUOTED.finditer(text):
            line_start = text.rfind("\n", max(0, m.start() - _NAME_WINDOW), m.start()) + 1
            name = _SECRET_NAME.search(text, max(line_start, m.start() - _NAME_WINDOW), m.start())
            if name is None or not _SECRET_WORD.search(name["name"]) or not _looks_secret(m["value"]):
                continue
            out.append((*m.span("value"), "secret"))
        return out

    def _rule_spans(self, text: str, literals: _Literals) -> list[Span]:
        """The rules of our own: URL credentials, Authorization/Bearer values, passwords assigned to
        password-like names, "the password is ..." phrases (strings and comments only, in code)."""
        out: list[Span] = []

        def add(m: re.Match[str], group: str, kind: str) -> None:
            a, b = m.span(group)
            if literals.contains(text, a, b):
                out.append((a, b, kind))

        if "://" in text:
            for m in _URL_CRED.finditer(text):
                v = m["value"]
                if not _placeholder(v) and not (v.startswith("{") and v.endswith("}")):
                    add(m, "value", "url_credentials")
        low = text.lower()
        same = len(low) == len(text)

        def find(low_re: re.Pattern[str], ci_re: re.Pattern[str]) -> Iterator[re.Match[str]]:
            """Matches in the lowercased text (same offsets as ``text``): values are read from ``text``."""
            return low_re.finditer(low) if same else ci_re.finditer(text)

        if "bearer" in low or "basic" in low or "token" in low:
            for m in find(_AUTH_LOW, _AUTH_CI):
                v, scheme = text[m.start("value"):m.end("value")], m["scheme"].lower()
                if _placeholder(v) or not _credential_like(v, scheme):
                    continue
                if scheme != "bearer":
                    line_start = text.rfind("\n", 0, m.start()) + 1
                    if not _AUTH_NAME.search(text, max(line_start, m.start() - 40), m.start()):
                        continue
                add(m, "value", "auth_header")
        if "pass" in low or "pw" in low or "contrase" in low:
            last = -1
            for m in _PW_HIT.finditer(text):
                a, b = m.start(), m.end()
                while a > 0 and (text[a - 1].isalnum() or text[a - 1] == "_"):
                    a -= 1
                while b < len(text) and (text[b].isalnum() or text[b] == "_"):
                    b += 1
                if b <= last:
                    continue
                last = b
                if not _password_name(text[a:b]):
                    continue
                after = _AFTER_NAME.match(text, b)
                if after is None:
                    continue
                v = after["value"]
                if _placeholder(v) or _prompt(v):
                    continue
                vs, ve = after.span("value")
                if literals.contains(text, vs, ve):
                    out.append((vs, ve, "password"))
        if "pass" in low or "pwd" in low or "secret" in low or "key" in low or "token" in low:
            for m in find(_PHRASE_LOW, _PHRASE_CI):
                if m["quoted"] is not None:
                    a, b = m.span("quoted")
                    if _placeholder(text[a:b]) or _prompt(text[a:b]):
                        continue
                else:
                    bare = text[m.start("bare"):m.end("bare")]
                    if not _bare_secret(bare):
                        continue
                    a = m.start("bare")
                    b = a + len(bare.rstrip(".,;:)!?"))
                # only in prose: a comment, a docstring or a string (code has the name rule above)
                if literals.contains(text, m.start(), b):
                    out.append((a, b, "phrase_secret"))
        return out

    def _scanner_spans(self, text: str, literals: _Literals) -> list[Span]:
        """Every occurrence (in strings and comments, for code) of each value detect-secrets reports."""
        from collapse.data.scanner import get_scanner  # detect-secrets: imported when used

        out: list[Span] = []
        seen: set[str] = set()
        for d in get_scanner().scan(text):
            # Some plugin patterns run to the end of the line (npm's ``_authToken=npm_.+``): a value
            # stops at a quote, so the literal around it stays a literal.
            v = re.split(r"[\"'`]", d.value, maxsplit=1)[0].rstrip()
            if len(v) < 3 or v in seen or _placeholder(v):
                continue
            seen.add(v)
            pat = re.compile(("(?<![A-Za-z0-9])" if v[0].isalnum() else "") + re.escape(v)
                             + ("(?![A-Za-z0-9])" if v[-1].isalnum() else ""))
            for m in pat.finditer(text):
                if literals.contains(text, m.start(), m.end()):
                    out.append((m.start(), m.end(), "detect_secrets"))
        return out

    def _token_spans(self, text: str) -> list[Span]:
        out: list[Span] = []
        if _TOKEN_TRIGGER.search(text):
            for kind, pattern in _TOKENS:
                out.extend((m.start(), m.end(), kind) for m in pattern.finditer(text))
        return out

    def _key_spans(self, text: str, literals: _Literals) -> list[Span]:
        spans = self._token_spans(text)
        if _LONG_QUOTED.search(text):
            spans += self._secret_spans(text)
        spans += self._rule_spans(text, literals)
        if self.scanner:
            spans += self._scanner_spans(text, literals)
        return spans

    def _joined_spans(self, text: str, literals: _Literals) -> list[Span]:
        """Keys split over adjacent string literals: each run is joined (with the code before it on
        its line, so a name rule still sees the name) and scanned; what is found is mapped back onto
        the pieces."""
        if not _adjacent(text) or not literals.code(text):
            return []
        out: list[Span] = []
        whole = _Literals(whole=True)
        for run in literals.runs:
            line_start = text.rfind("\n", 0, run[0][0]) + 1
            head = text[line_start:run[0][0]]
            # "name = (" + "piece" "piece": the name rules want the value right after the "="
            head = re.sub(r"\([ \t]*(?=[rRbBuUfF]{0,2}['\"]+$)", "", head)
            joined = "".join(text[a:b] for a, b in run)
            if len(joined) > 4096:
                continue
            quote = head[-1] if head and head[-1] in "'\"" else '"'
            synthetic = head + joined + quote
            offsets = []  # joined position -> text position, piece by piece
            pos = 0
            for a, b in run:
                offsets.append((pos, pos + b - a, a))
                pos += b - a
            for s, e, kind in self._key_spans(synthetic, whole):
                s, e = max(s - len(head), 0), min(e - len(head), len(joined))
                if e <= s:
                    continue
                for ps, pe, ta in offsets:
                    lo, hi = max(s, ps), min(e, pe)
                    if lo < hi:
                        out.append((ta + lo - ps, ta + hi - ps, kind))
        return out

    def _replace_keys(self, text: str, spans: list[Span]) -> str:
        """Replace the merged spans by ``<KEY>``; one count per merged span, named by the kind
        listed first in ``_KEY_ORDER`` among those merged."""
        if not spans:
            return text
        order = {k: i for i, k in enumerate(_KEY_ORDER)}
        spans.sort(key=lambda t: (t[0], order.get(t[2], 99)))
        merged: list[list] = []
        for s, e, kind in spans:
            if merged and s < merged[-1][1]:
                cur = merged[-1]
                cur[1] = max(cur[1], e)
                if order.get(kind, 99) < order.get(cur[2], 99):
                    cur[2] = kind
            else:
                merged.append([s, e, kind])
        out, last = [], 0
        for s, e, kind in merged:
            out.append(text[last:s])
            out.append(PLACEHOLDERS[kind])
            self.counts[kind] += 1
            last = e
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

    def redact(self, text: str, whole: bool = False) -> str:
        """``text`` with its secrets and personal data replaced. ``whole=True``: the text is not
        code (a file name, prose): it is searched whole, never parsed."""
        counts = self.counts
        literals = _Literals(whole)
        if "PRIVATE KEY" in text:
            text = self._private_keys(text)
        spans = self._key_spans(text, literals)
        if not whole:
            spans += self._joined_spans(text, literals)
        text = self._replace_keys(text, spans)
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
                # A line that names a version keeps only the quads that read as versions.
                if (not ipaddress.IPv4Address(m[0]).is_global
                        or (_version_like(m[0]) and _names_version(m.string, m.start(), version_lines))
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


def redact(text: str, scanner: bool | None = None) -> tuple[str, dict[str, int]]:
    """``(redacted text, matches per kind)`` of one text."""
    r = Redactor(scanner)
    out = r.redact(text)
    return out, {k: v for k, v in r.counts.items() if v}


def redact_source(source: str, redactor: Redactor | None = None) -> str:
    """A provenance string (a file path and line span, a table row name) with the emails, addresses
    and keys in it replaced; the whole string is searched (it is never code)."""
    if not _SOURCE_TRIGGER.search(source):
        return source
    return (redactor or Redactor()).redact(source, whole=True)


# What a file name must hold for redact_source to look closer: an @, a dotted quad, a colon run, a
# long token (a key), or a keyword of the rules.
_SOURCE_TRIGGER = re.compile(r"@|[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]|::|[A-Za-z0-9_\-+/=]{16,}|(?i:pass|pw|secret|token|key)")
