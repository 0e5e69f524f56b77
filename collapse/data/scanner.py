"""Yelp's detect-secrets, run in process, offline, on lines of code.

:class:`Scanner` holds one instance of each chosen detect-secrets plugin
(built once under :func:`detect_secrets.settings.transient_settings`) and
asks them, line by line, for the secret values in a text. It never touches
the network: plugins only verify a secret against its vendor when the
``is_ignored_due_to_verification_policies`` filter is configured, and the
scanner makes sure it is not (it removes it from detect-secrets' global
settings if some other code put it there).

Speed: asking every plugin about every line of the standard library (about
670,000 lines) takes minutes. Each plugin has a *trigger* here, a cheap
regular expression that every line the plugin can report on matches (a
necessary condition read off the plugin's own patterns: a literal prefix,
or the long run of key characters its secret needs). A coarser prefilter
that covers every trigger (runs of 20+ key characters, a few literals such
as ``://``, ``eyJ``, ``BEGIN``, quoted hex strings, and the keyword plugin's
names in the lowercased text) is searched over the whole text; only the
lines it hits (about 40,000 of the standard library's 667,000) are given to
the plugins whose own trigger hits that line. A test checks on the planted
corpus and stdlib modules that no plugin reports a line the prefilter
skipped. A plugin without a trigger here (a newer detect-secrets) runs on
every line.

Detections go through detect-secrets' own heuristic filters (sequential
strings, UUIDs, ``{templated}``/``<templated>``/``${templated}`` values,
``$``-prefixed values, indirect references such as ``secret = get_secret()``,
values without a letter, id-like names for the entropy and keyword plugins)
before they count.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any, Iterator

__all__ = ["Scanner", "Detection", "PLUGINS", "TRIGGERS", "BASE64_LIMIT", "HEX_LIMIT", "get_scanner", "looks_like_test_data"]

#: Entropy limits (bits per character) of the two high-entropy plugins. detect-secrets' defaults are
#: 4.5 and 3.0; on the standard library 3.0 flags hex test vectors and digests, see BENCHMARKS.md.
BASE64_LIMIT = 4.5
HEX_LIMIT = 3.0
_VERIFY_FILTER = "detect_secrets.filters.common.is_ignored_due_to_verification_policies"
#: The plugins used: every detect-secrets 1.5 plugin but the public-IP one (IP addresses have their
#: own rule in :mod:`collapse.data.redact`, which keeps the non-global ones and looks only in strings
#: and comments).
PLUGINS = (
    "ArtifactoryDetector", "AWSKeyDetector", "AzureStorageKeyDetector", "BasicAuthDetector", "CloudantDetector",
    "DiscordBotTokenDetector", "GitHubTokenDetector", "GitLabTokenDetector", "Base64HighEntropyString",
    "HexHighEntropyString", "IbmCloudIamDetector", "IbmCosHmacDetector", "JwtTokenDetector", "KeywordDetector",
    "MailchimpDetector", "NpmDetector", "OpenAIDetector", "PrivateKeyDetector", "PypiTokenDetector",
    "SendGridDetector", "SlackDetector", "SoftlayerDetector", "SquareOAuthDetector", "StripeDetector",
    "TelegramBotTokenDetector", "TwilioKeyDetector",
)


def _ci(word: str) -> str:
    """``word`` as a case-insensitive pattern without the (slow) IGNORECASE flag."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


def _min_length(limit: float) -> int:
    """The shortest string whose Shannon entropy can exceed ``limit`` bits per character."""
    return max(1, math.floor(2 ** limit) + 1)


_B64 = r"A-Za-z0-9+/\\_=-"
# The keyword plugin's names (detect_secrets.plugins.keyword.DENYLIST), found case-insensitively.
_KEYWORDS = ("api_?key|auth_?key|service_?key|account_?key|db_?key|database_?key|priv_?key|private_?key|client_?key"
             "|db_?pass|database_?pass|key_?pass|password|passwd|pwd|secret|contrase")
_KEYWORD_TRIGGER = "|".join(
    "".join(_ci(part) if i % 2 == 0 else "_?" for i, part in enumerate(w.split("_?"))) for w in _KEYWORDS.split("|"))

#: Per plugin, a pattern every line it can report a secret on matches (see the module docstring).
TRIGGERS: dict[str, str] = {
    "ArtifactoryDetector": r"AKC[a-zA-Z0-9]{10}|AP[\dABCDEF][a-zA-Z0-9]{8}",
    "AWSKeyDetector": r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}|(?<![0-9a-zA-Z/+])[0-9a-zA-Z/+]{40}",
    "AzureStorageKeyDetector": r"AccountKey=",
    "BasicAuthDetector": r"://",
    "CloudantDetector": r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}|(?<![a-zA-Z])[a-zA-Z]{24}",
    "DiscordBotTokenDetector": r"[MNO][a-zA-Z\d_-]{23}",
    "GitHubTokenDetector": r"gh[pousr]_",
    "GitLabTokenDetector": r"gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-|GR1348941",
    "Base64HighEntropyString": rf"""(['"])[{_B64}]{{{_min_length(BASE64_LIMIT)},}}\1""",
    "HexHighEntropyString": rf"""(['"])[0-9a-fA-F]{{{_min_length(HEX_LIMIT)},}}\1""",
    "IbmCloudIamDetector": r"(?<![a-zA-Z0-9_\-])[a-zA-Z0-9_\-]{44}",
    "IbmCosHmacDetector": r"(?<![a-fA-F0-9])[a-fA-F0-9]{32}",
    "JwtTokenDetector": r"eyJ",
    "KeywordDetector": _KEYWORD_TRIGGER,
    "MailchimpDetector": r"-us[0-9]",
    "NpmDetector": r"_authToken=",
    "OpenAIDetector": r"T3BlbkFJ",
    "PrivateKeyDetector": r"BEGIN|PuTTY",
    "PypiTokenDetector": r"pypi-AgE",
    "SendGridDetector": r"SG\.",
    "SlackDetector": rf"{_ci('xox')}|{_ci('hooks.slack')}",
    "SoftlayerDetector": r"(?<![a-zA-Z0-9])[a-zA-Z0-9]{64}",
    "SquareOAuthDetector": r"sq0csp-",
    "StripeDetector": r"k_live_",
    "TelegramBotTokenDetector": r"(?<=\d{8}):",
    "TwilioKeyDetector": r"(?:AC|SK)[a-z0-9]{32}",
}
# The coarse prefilter: every line a trigger above matches has one of these (checked by a test).
# Runs of 20+ key characters cover the long-token plugins (and the AWS key id, 20, and the quoted
# base64 strings, 23+); the rest are literals, quoted hex strings and the keyword plugin's words.
_RUN = re.compile(r"(?<![A-Za-z0-9_\-+/=\\])[A-Za-z0-9_\-+/=\\]{20}")
_LITERALS = ("://", "eyJ", "BEGIN", "PuTTY", "_authToken", "AKC", "AP", "xox", "XOX", "Xox", "xOx", "xoX", "XoX",
             "XOx", "xOX")
_LITERAL = re.compile(r"://|eyJ|BEGIN|PuTTY|_authToken|AKC|AP[\dA-F]|[xX][oO][xX]")
_KEYWORD_WORDS = ("key", "pass", "pwd", "secret", "contrase")
_KEYWORD_LOW = re.compile(_KEYWORDS)
_KEYWORD_CI = re.compile(_KEYWORDS, re.IGNORECASE)
#: Lines longer than this are scanned in overlapping windows (the keyword plugin's patterns are
#: not linear on very long lines).
_WINDOW, _OVERLAP = 2000, 400


@dataclass(frozen=True)
class Detection:
    """One secret value detect-secrets reported, the plugin's secret type and the line it is on."""

    value: str
    type: str
    line: str


class Scanner:
    """The chosen detect-secrets plugins with their triggers; :meth:`scan` lists the detections in a text."""

    def __init__(self, plugins: tuple[str, ...] = PLUGINS, base64_limit: float = BASE64_LIMIT,
                 hex_limit: float = HEX_LIMIT) -> None:
        from detect_secrets.filters import heuristic
        from detect_secrets.settings import get_plugins, transient_settings

        config: list[dict[str, Any]] = []
        for name in plugins:
            entry: dict[str, Any] = {"name": name}
            if name == "Base64HighEntropyString":
                entry["limit"] = base64_limit
            elif name == "HexHighEntropyString":
                entry["limit"] = hex_limit
            config.append(entry)
        # No filters_used beyond detect-secrets' two defaults (invalid and non-text files): above all
        # not the verification filter, whose presence makes plugins call their vendors' APIs.
        with transient_settings({"plugins_used": config, "filters_used": []}):
            self.plugins = list(get_plugins())
        self._h = heuristic
        triggers = dict(TRIGGERS)
        if base64_limit != BASE64_LIMIT:
            triggers["Base64HighEntropyString"] = rf"""(['"])[{_B64}]{{{_min_length(base64_limit)},}}\1"""
        if hex_limit != HEX_LIMIT:
            triggers["HexHighEntropyString"] = rf"""(['"])[0-9a-fA-F]{{{_min_length(hex_limit)},}}\1"""
        self._always = [p for p in self.plugins if type(p).__name__ not in triggers]
        self._triggered = [(p, re.compile(triggers[type(p).__name__])) for p in self.plugins
                           if type(p).__name__ in triggers]
        # The coarse prefilter follows the limits: shorter strings can pass a lower limit.
        self._run_re = _RUN if _min_length(base64_limit) >= 20 else re.compile(
            rf"[A-Za-z0-9_\-+/=\\]{{{_min_length(base64_limit)},}}")
        self._hex_re = re.compile(rf"""(['"])[0-9a-fA-F]{{{_min_length(hex_limit)},}}\1""")

    @staticmethod
    def _ensure_offline() -> None:
        from detect_secrets.settings import get_settings

        filters = get_settings().filters
        if _VERIFY_FILTER in filters:
            filters.pop(_VERIFY_FILTER)

    def candidate_lines(self, text: str) -> Iterator[str]:
        """The lines of ``text`` some plugin could report on (each once, in order)."""
        if self._always:
            yield from text.split("\n")
            return
        starts: set[int] = set()

        def mark(pos: int) -> None:
            starts.add(text.rfind("\n", 0, pos) + 1)

        for m in self._run_re.finditer(text):
            mark(m.start())
        if any(lit in text for lit in _LITERALS):
            for m in _LITERAL.finditer(text):
                mark(m.start())
        if "'" in text or '"' in text:
            for m in self._hex_re.finditer(text):
                mark(m.start())
        low = text.lower()
        if any(w in low for w in _KEYWORD_WORDS):
            if len(low) == len(text):
                for m in _KEYWORD_LOW.finditer(low):
                    mark(m.start())
            else:  # lower() changed the length (a few non-ASCII letters): positions differ
                for m in _KEYWORD_CI.finditer(text):
                    mark(m.start())
        for start in sorted(starts):
            end = text.find("\n", start)
            yield text[start:] if end < 0 else text[start:end]

    def scan_line(self, line: str) -> list[Detection]:
        """Every secret the plugins report on one line, after detect-secrets' heuristic filters."""
        self._ensure_offline()
        out: list[Detection] = []
        pieces = [line] if len(line) <= _WINDOW else [
            line[i:i + _WINDOW] for i in range(0, len(line) - _OVERLAP, _WINDOW - _OVERLAP)]
        for piece in pieces:
            for plugin, trigger in self._triggered:
                if trigger.search(piece) is not None:
                    out.extend(self._run(plugin, piece))
            for plugin in self._always:
                out.extend(self._run(plugin, piece))
        return out

    def scan(self, text: str) -> list[Detection]:
        """Every secret the plugins report in ``text`` (scanned line by line), less the
        high-entropy strings that read as test data (see :func:`looks_like_test_data`)."""
        out: list[Detection] = []
        digests = None
        for line in self.candidate_lines(text):
            for d in self.scan_line(line):
                if d.type in _ENTROPY_TYPES:
                    if digests is None:
                        digests = _DIGEST_CONTEXT.search(text) is not None
                    if looks_like_test_data(d.value, d.type, digests):
                        continue
                out.append(d)
        return out

    def _run(self, plugin: Any, line: str) -> Iterator[Detection]:
        from detect_secrets.plugins.base import RegexBasedDetector

        h = self._h
        found = plugin.analyze_line(filename="redact.py", line=line, line_number=0)
        for secret in found:
            value = secret.secret_value
            if not value:
                continue
            if (h.is_sequential_string(value) or h.is_potential_uuid(value) or h.is_templated_secret(value)
                    or h.is_prefixed_with_dollar_sign(value) or h.is_not_alphanumeric_string(value)
                    or h.is_likely_id_string(value, line, plugin)):
                continue
            if not isinstance(plugin, RegexBasedDetector) and h.is_indirect_reference(line):
                continue
            yield Detection(value, secret.type, line)


_ENTROPY_TYPES = ("Base64 High Entropy String", "Hex High Entropy String")
# A function that computes or checks digests or UUIDs: its hex strings are expected values, not keys.
_DIGEST_CONTEXT = re.compile(r"hashlib|hexdigest|\.digest\(|\bsha(?:1|224|256|384|512|3_\d+)\b|\bmd5\b|blake2|crc32"
                             r"|checksum|\buuid\b|UUID\(")


def looks_like_test_data(value: str, secret_type: str, digests: bool = False) -> bool:
    """Whether a high-entropy string reads as test data rather than a key: an alphabet or counting
    run (half of its neighbouring characters consecutive, either way: ``"abcdefghijklmnopqrstuvwxyz"``,
    ``"1234567890ABCDEF"``, ``"ZYXWVUTSRQPONMLKJIHGFEDCBA"``), a number (``"6213...368e0"``), base64
    or hex that decodes to printable text (an encoded message), or, for hex, a string in a function
    that computes digests or UUIDs (``digests``)."""
    v = value.replace("\\n", "").replace("\\r", "")
    if len(v) > 1 and sum(abs(ord(b) - ord(a)) == 1 for a, b in zip(v, v[1:])) >= (len(v) - 1) / 2:
        return True
    try:
        float(v)  # a number with an exponent ("6213...368e0")
        return True
    except ValueError:
        pass
    if secret_type == "Hex High Entropy String" and digests:
        return True
    try:
        raw = bytes.fromhex(v) if secret_type == "Hex High Entropy String" else base64.b64decode(
            v.replace("-", "+").replace("_", "/") + "=" * (-len(v) % 4), validate=True)
    except (ValueError, binascii.Error):
        return False
    return len(raw) >= 4 and all(32 <= c < 127 or c in (9, 10, 13) for c in raw)


_SCANNER: Scanner | None = None


def get_scanner() -> Scanner:
    """The process's scanner with the default plugins and limits (built on first use)."""
    global _SCANNER
    if _SCANNER is None:
        _SCANNER = Scanner()
    return _SCANNER
