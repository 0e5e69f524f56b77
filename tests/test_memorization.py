"""Memorization and attribution: the copy metrics on planted copies, their rows and attributions.

The n-gram index under them is tested in tests/test_ngram_index.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from collapse.metrics.memorization import line_span, parse_source, synthetic_copy, verbatim_copy
from collapse.metrics.registry import REGISTRY, MetricContext


class CharTokenizer:
    """One token per character (id = code point): token counts and offsets are known by hand."""

    def __call__(self, texts, add_special_tokens=False, return_offsets_mapping=False):
        out = {"input_ids": [[ord(c) for c in t] for t in texts]}
        if return_offsets_mapping:
            out["offset_mapping"] = [[(i, i + 1) for i in range(len(t))] for t in texts]
        return out


def test_source_and_line_helpers():
    assert parse_source("/usr/lib/python3.11/json/decoder.py:332-352") == ("/usr/lib/python3.11/json/decoder.py", 332)
    assert parse_source("weird") == ("weird", 1) and parse_source(None) == (None, 1)
    text = "def f():\n    x = 1\n    return x\n"
    assert line_span(text, 9, 18) == (1, 1)  # "    x = 1" (the newline after it stays on line 1)
    assert line_span(text, 8, 31) == (1, 2)  # a leading newline does not pull the span up


# ---------------------------------------------------------------- the metrics

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def human_corpus(n_docs=8, lines=6, width=15, seed=0):
    """Distinct random lowercase texts, ``lines`` lines of ``width`` letters each."""
    rng = np.random.default_rng(seed)
    texts = ["\n".join("".join(rng.choice(list(LETTERS), width)) for _ in range(lines)) + "\n" for _ in range(n_docs)]
    sources = [f"pkg/mod{j}.py:{10 * j}-{10 * j + lines - 1}" for j in range(n_docs)]
    return texts, sources


def context(tmp_path, texts, sources, generation=0, history=None, tokenizer=None, **settings):
    loaders = {} if history is None else {"synthetic_history": lambda: history}
    return MetricContext(tokenizer=tokenizer or CharTokenizer(), generation=generation, artifact_dir=tmp_path,
                         human_train_texts=texts, human_train_sources=sources, loaders=loaders,
                         settings={"copy_k": 32, "copy_k_also": [16, 64], "copy_top": 50, **settings})


def test_verbatim_copy_planted(tmp_path):
    texts, sources = human_corpus()
    # document 3: lines of 15 letters + "\n" = 16 characters; characters 32..71 run
    # from the first letter of line 2 to the 8th letter of line 4 (0-based lines)
    copy = texts[3][32:72]
    assert len(copy) == 40 and copy[0] != "\n" and copy[-1] != "\n"
    novel = "0123456789" * 3  # digits occur in no human text
    samples = [
        "XYZ" * 20,  # 60 novel characters
        novel + copy + novel,  # the planted 40-token copy (100 tokens)
        "Q" * 10 + texts[5][:31] + "Q" * 10,  # a 31-token copy (51 tokens)
        "W" * 5 + texts[1][-20:] + texts[2][:20] + "W" * 5,  # crosses the document boundary 1|2 (50 tokens)
    ]
    ctx = context(tmp_path, texts, sources)
    out = verbatim_copy(samples, ctx)
    total = 60 + 100 + 51 + 50
    assert out["copy_rate"] == pytest.approx(1 / 4)
    assert out["copy_token_share"] == pytest.approx(40 / total)
    assert out["copy_rate_k16"] == pytest.approx(3 / 4)
    assert out["copy_token_share_k16"] == pytest.approx((40 + 31 + 40) / total)
    assert out["copy_rate_k64"] == 0.0 and out["copy_token_share_k64"] == 0.0
    assert out["copy_longest_max"] == 40 and out["copy_longest_median"] == 40
    rows = [json.loads(line) for line in (tmp_path / "copies.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    r = rows[0]
    assert (r["sample"], r["length"], r["human_index"], r["token_offset"]) == (1, 40, 3, 32)
    assert r["file"] == "pkg/mod3.py" and r["source"] == "pkg/mod3.py:30-35"
    assert (r["line_start"], r["line_end"]) == (30 + 2, 30 + 4)  # lines 2..4 of a function starting at line 30
    assert r["text"] == copy and r["sample_token_offset"] == 30 and r["covered_tokens"] == 40
    # the human index is built once and kept for the run
    idx = ctx.shared["memorization.human.8"][1]
    verbatim_copy(samples, ctx)
    assert ctx.shared["memorization.human.8"][1] is idx


def test_copies_count_against_the_data_trained_on_and_the_corpus_apart(tmp_path):
    """The models trained on human texts 0..2 only: a copy of text 3 is a corpus copy, not a
    copy of the training data; a copy of text 1 is both."""
    from collapse.metrics.memorization import corpus_copy

    texts, sources = human_corpus()
    samples = ["0123456789" + texts[3][:40] + "0123456789", "XYZ" * 20, "Q" * 5 + texts[1][:40]]
    ctx = context(tmp_path, texts, sources)
    ctx.human_trained = 3
    out = verbatim_copy(samples, ctx)
    assert out["copy_rate"] == pytest.approx(1 / 3)  # sample 2 (text 1)
    rows = [json.loads(line) for line in (tmp_path / "copies.jsonl").read_text().splitlines()]
    assert [(r["sample"], r["human_index"]) for r in rows] == [(2, 1)]
    out = corpus_copy(samples, ctx)
    assert out["corpus_copy_rate"] == pytest.approx(2 / 3) and out["corpus_copy_longest_max"] == 40
    rows = [json.loads(line) for line in (tmp_path / "corpus_copies.jsonl").read_text().splitlines()]
    assert sorted((r["sample"], r["human_index"]) for r in rows) == [(0, 3), (2, 1)]


def test_verbatim_copy_sorted_rows_and_no_copies(tmp_path):
    texts, sources = human_corpus(lines=10)
    samples = ["0" + texts[2][:50] + "1", "2" + texts[6][16:96] + "3", "no copy at all here, none whatsoever"]
    verbatim_copy(samples, context(tmp_path, texts, sources))
    rows = [json.loads(line) for line in (tmp_path / "copies.jsonl").read_text().splitlines()]
    assert [(r["sample"], r["length"], r["rank"]) for r in rows] == [(1, 80, 0), (0, 50, 1)]
    assert (rows[0]["line_start"], rows[0]["line_end"]) == (60 + 1, 60 + 5)  # characters 16..95: lines 1..5
    out = verbatim_copy(["nothing copied"], context(tmp_path, texts, sources))
    assert out["copy_rate"] == 0.0 and out["copy_longest_max"] == 0.0
    assert (tmp_path / "copies.jsonl").read_text() == ""


def test_synthetic_copy(tmp_path):
    texts, sources = human_corpus()
    g0 = ["".join(np.random.default_rng(10 + i).choice(list("ABCDEFGH"), 80)) for i in range(10)]
    g1 = ["".join(np.random.default_rng(50 + i).choice(list("ABCDEFGH"), 80)) for i in range(10)]
    samples = ["zz" + g0[7][5:45] + "zz", "nothing from before"]
    out0 = synthetic_copy(samples, context(tmp_path, texts, sources, generation=0, history={}))
    assert all(v == 0.0 for v in out0.values()) and "synthetic_copy_rate_k16" in out0
    assert synthetic_copy(samples, context(tmp_path, texts, sources))["synthetic_copy_rate"] == 0.0  # no loader
    ctx = context(tmp_path, texts, sources, generation=2, history={0: g0, 1: g1})
    out = synthetic_copy(samples, ctx)
    assert out["synthetic_copy_rate"] == pytest.approx(0.5)
    assert out["synthetic_copy_token_share"] == pytest.approx(40 / (44 + 19))
    rows = [json.loads(line) for line in (tmp_path / "synthetic_copies.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    assert (rows[0]["generation"], rows[0]["source_sample"], rows[0]["token_offset"], rows[0]["length"]) == (0, 7, 5, 40)
    assert rows[0]["text"] == g0[7][5:45] and rows[0]["sample"] == 0


def test_registered_as_sample_metrics():
    for name in ("verbatim_copy", "corpus_copy", "synthetic_copy"):
        m = REGISTRY[name]
        assert not m.needs_model and not m.superlinear and "[0, 1]" in m.doc and "Carlini" in m.doc


def test_real_tokenizer_line_span(tmp_path):
    """Byte-level BPE: the attribution names the file lines the copied code sits on."""
    from collapse.config import TokenizerConfig
    from collapse.lm.tokenizer import train_tokenizer

    rng = np.random.default_rng(3)
    words = ["alpha", "beta", "gamma", "delta", "value", "count", "item", "total", "index", "result"]

    def func(j):
        body = [f"def fn_{j}({rng.choice(words)}, {rng.choice(words)}):"]
        body += [f"    {rng.choice(words)}_{rng.integers(100)} = {rng.choice(words)} + {rng.integers(1000)}" for _ in range(12)]
        return "\n".join(body) + "\n"

    texts = [func(j) for j in range(12)]
    sources = [f"lib/m{j}.py:{100 + 20 * j}-{100 + 20 * j + 12}" for j in range(12)]
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=300))
    lines = texts[4].splitlines(keepends=True)
    planted = "class Q:\n    pass\n" + "".join(lines[3:10]) + "# the end, #2 #3 #4 #5 #6 #7 #8 #9\n"
    ctx = context(tmp_path, texts, sources, tokenizer=tok, copy_k=16, copy_k_also=[])
    out = verbatim_copy([planted], ctx)
    assert out["copy_rate"] == 1.0
    r = json.loads((tmp_path / "copies.jsonl").read_text().splitlines()[0])
    assert r["file"] == "lib/m4.py" and r["human_index"] == 4
    assert (r["line_start"], r["line_end"]) == (180 + 3, 180 + 9)
    assert r["text"].strip() == "".join(lines[3:10]).strip()
