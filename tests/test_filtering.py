"""The filter runner with hand-built filters: counts, reasons, order, exclusions, rewrites."""

from __future__ import annotations

import pytest

from collapse.filtering import Filter, FilterRunner


class Short:
    name = "short"
    reasons = ("too_short",)

    def __init__(self):
        self.calls: list[list[str]] = []

    def check(self, texts, columns=None):
        self.calls.append(list(texts))
        return ["too_short" if len(t) < 3 else None for t in texts]


class Vowel:
    """Drops texts starting with a vowel; names the vowel (a reason outside its list, counted anyway)."""

    name = "vowel"
    reasons = ("vowel",)

    def check(self, texts, columns=None):
        self.details = {j: {"first": t[0]} for j, t in enumerate(texts) if t[0] in "aeiou"}
        return [("vowel" if t[0] in "ae" else f"vowel_{t[0]}") if t[0] in "aeiou" else None for t in texts]


class Upper:
    """Rewrites every text to upper case and its source to ``S:<source>``; drops nothing."""

    name = "upper"
    reasons = ()

    def check(self, texts, columns=None):
        for j, t in enumerate(texts):
            texts[j] = t.upper()
            columns["source"][j] = "S:" + columns["source"][j]
        return [None] * len(texts)


def test_filters_follow_the_protocol():
    assert all(isinstance(f, Filter) for f in (Short(), Vowel(), Upper()))


def test_counts_reasons_order_and_exclusions():
    short = Short()
    out: list[dict] = []
    runner = FilterRunner([short, Vowel()], out)
    texts = ["ab", "apple", "kiwi", "x", "orange", "fig"]
    verdict = runner(texts, {"source": [f"s{i}" for i in range(len(texts))]})
    assert verdict == ["short:too_short", "vowel:vowel", None, "short:too_short", "vowel:vowel_o", None]
    # The second filter saw only what the first kept, in order.
    assert short.calls == [texts]
    c = runner.counts
    assert (c["short"].seen, c["short"].kept, dict(c["short"].dropped)) == (6, 4, {"too_short": 2})
    assert (c["vowel"].seen, c["vowel"].kept) == (4, 2)
    assert dict(c["vowel"].dropped) == {"vowel": 1, "vowel_o": 1}  # every listed reason, then any other
    assert c["short"].seconds >= 0 and c["vowel"].seconds >= 0
    assert out == [
        {"step": "short", "reason": "too_short", "source": "s0", "text": "ab"},
        {"step": "short", "reason": "too_short", "source": "s3", "text": "x"},
        {"step": "vowel", "reason": "vowel", "source": "s1", "first": "a", "text": "apple"},
        {"step": "vowel", "reason": "vowel_o", "source": "s4", "first": "o", "text": "orange"},
    ]
    # Counts accumulate over calls; a listed reason never given is counted as 0.
    runner(["yes"], {"source": ["t"]})
    assert (runner.rows_in, runner.rows_kept) == (7, 3)
    assert dict(runner.counts["short"].dropped) == {"too_short": 2} and runner.counts["short"].seen == 7
    empty = FilterRunner([Vowel()])
    empty(["kiwi"])
    assert dict(empty.counts["vowel"].dropped) == {"vowel": 0}


def test_a_filter_that_drops_everything_stops_the_chain():
    vowel = Vowel()
    runner = FilterRunner([Short(), vowel])
    assert runner(["a", "b"]) == ["short:too_short", "short:too_short"]
    assert runner.counts["vowel"].seen == 0 and not hasattr(vowel, "details")


def test_rewrites_flow_to_later_filters_the_result_and_the_exclusions():
    out: list[dict] = []
    runner = FilterRunner([Short(), Upper(), Vowel()], out)
    texts, sources = ["kiwi", "x", "apple"], ["a.py", "b.py", "c.py"]
    verdict = runner(texts, {"source": sources})
    # Vowel saw the upper-cased texts ("APPLE" does not start with a lower-case vowel).
    assert verdict == ["short:too_short" if t == "x" else None for t in texts]
    assert runner.texts == ["KIWI", "x", "APPLE"] and runner.columns["source"] == ["S:a.py", "b.py", "S:c.py"]
    assert texts == ["kiwi", "x", "apple"] and sources == ["a.py", "b.py", "c.py"]  # the caller's lists untouched
    assert out == [{"step": "short", "reason": "too_short", "source": "b.py", "text": "x"}]


def test_names_must_be_distinct_and_verdicts_one_per_row():
    with pytest.raises(ValueError, match="distinct"):
        FilterRunner([Short(), Short()])

    class Bad:
        name, reasons = "bad", ()

        def check(self, texts, columns=None):
            return [None]

    with pytest.raises(ValueError, match="1 verdicts for 2 rows"):
        FilterRunner([Bad()])(["a", "b"])
