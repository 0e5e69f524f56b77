"""Tests of collapse.data: function extraction, corpus sources and filters,
content-hash splits and the prepared-data cache.

Inputs are hand-built with known answers; only one test reads the real
standard library. The pipeline's own steps (licenses, opt-out, redaction,
near duplicates, quality filters, cards) are tested in test_pipeline.py.
"""

from __future__ import annotations

import collections
import hashlib
import json
import platform
import random
import re
import textwrap
from pathlib import Path

import datasets
import pytest

import collapse.data.split as split_mod
from collapse.config import DataConfig
from collapse.data import corpus as corpus_mod
from collapse.data import extract_functions, load_human_corpus, prepare_human_data, split_corpus
from collapse.errors import CollapseError

COLUMNS = ["text", "origin", "generation", "source", "sha256", "license"]
MIT = "Permission is hereby granted, free of charge, to any person obtaining a copy of this software ... " \
      "The above copyright notice and this permission notice shall be included in all copies ... " \
      "to permit persons to whom the Software is furnished to do so"
#: Every row-level drop reason of the default pipeline, at zero.
NO_DROPS = {"redaction_broke_syntax": 0, "duplicate": 0, "too_short": 0, "too_long": 0, "autogen": 0, "long_line": 0,
            "mean_line_length": 0, "low_alnum": 0, "near_duplicate": 0, "max_examples": 0}

# Line numbers matter: the tests below check exact 1-based spans.
MODULE = '''\
import functools


def plain(a, b):
    return a + b


@functools.lru_cache(maxsize=None)
@staticmethod
def decorated(x):
    return x * 2


async def fetch(url):
    await url
    return url


class Widget:
    def method(self):
        def inner(y):
            return y + 1
        return inner(1)

    @property
    def name(self):
        return "w"


def outer():
    if True:
        def in_if():
            return 1
    return in_if
'''


def _func(name: str, body: str = "return 1", pad: int = 0) -> str:
    """A small function whose text length is controllable through ``pad``."""
    return f"def {name}():\n    # {'x' * pad}\n    {body}\n"


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(source: str | Path, **kw) -> DataConfig:
    kw.setdefault("min_chars", 0)
    return DataConfig(source=str(source), **kw)


# ------------------------------------------------------------- extraction

def test_extract_functions_texts_and_spans():
    got = extract_functions(MODULE, "pkg/mod.py")
    by_name = {re.search(r"def (\w+)", item["text"]).group(1): item for item in got}
    spans = {name: item["source"] for name, item in by_name.items()}
    assert spans == {
        "plain": "pkg/mod.py:4-5",
        "decorated": "pkg/mod.py:8-11",  # from the first decorator line
        "fetch": "pkg/mod.py:14-16",
        "method": "pkg/mod.py:20-23",
        "inner": "pkg/mod.py:21-22",  # nested: also on its own
        "name": "pkg/mod.py:25-27",
        "outer": "pkg/mod.py:30-34",
        "in_if": "pkg/mod.py:32-33",
    }
    # Source order, outer before inner.
    assert [item["source"] for item in got] == sorted(
        (item["source"] for item in got), key=lambda s: tuple(int(x) for x in s.split(":")[1].split("-"))
    )
    assert by_name["plain"]["text"] == "def plain(a, b):\n    return a + b"
    assert by_name["decorated"]["text"].startswith("@functools.lru_cache(maxsize=None)\n@staticmethod\ndef decorated(x):")
    assert by_name["fetch"]["text"] == "async def fetch(url):\n    await url\n    return url"
    # Methods and nested functions are dedented to column 0.
    assert by_name["name"]["text"] == '@property\ndef name(self):\n    return "w"'
    assert by_name["inner"]["text"] == "def inner(y):\n    return y + 1"
    assert by_name["method"]["text"] == textwrap.dedent(
        """\
        def method(self):
            def inner(y):
                return y + 1
            return inner(1)"""
    )


def test_extract_functions_crlf_and_unparsable():
    crlf = "def f():\r\n    return 1\r\n\r\ndef g():\r\n    return 2\r\n"
    got = extract_functions(crlf, "w.py")
    assert [g["source"] for g in got] == ["w.py:1-2", "w.py:4-5"]
    assert got[0]["text"] == "def f():\n    return 1"
    assert extract_functions("def broken(:\n    pass\n", "bad.py") == []
    assert extract_functions("x = 1\0\n", "nul.py") == []
    assert extract_functions("x = 1\n", "empty.py") == []


# ---------------------------------------------------------------- sources

def test_directory_source_with_unparsable_file(tmp_path):
    root = tmp_path / "code"
    (root / "sub").mkdir(parents=True)
    (root / "b.py").write_text(_func("b_one") + "\n" + _func("b_two"))
    (root / "a.py").write_text(_func("a_one"))
    (root / "sub" / "c.py").write_text("class C:\n    def m(self):\n        return 3\n")
    (root / "broken.py").write_text("def nope(:\n")
    (root / "notes.txt").write_text(_func("ignored"))
    (root / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\ndef caf\xe9():\n    return 1\n")
    (root / "LICENSE").write_text(MIT)

    ds, info = load_human_corpus(_cfg(root), progress=False)
    assert ds.column_names == COLUMNS
    assert ds["source"] == ["a.py:1-3", "b.py:1-3", "b.py:5-7", "latin.py:2-3", "sub/c.py:2-3"]
    assert ds["text"][-1] == "def m(self):\n    return 3"
    assert "def café():" in ds["text"][3]
    assert set(ds["origin"]) == {"human"} and set(ds["generation"]) == {-1}
    assert ds["sha256"] == [hashlib.sha256(t.encode()).hexdigest() for t in ds["text"]]
    assert set(ds["license"]) == {"MIT"}  # from the LICENSE file at the root
    assert info["kind"] == "directory" and info["root"] == str(root.resolve())
    assert info["files"] == 5 and info["unparsable_files"] == 1
    assert info["extracted"] == 5 and info["kept"] == 5
    assert info["dropped"] == NO_DROPS
    assert info["files_dropped"] == {"opt_out": 0, "license_not_allowed": 0, "license_unknown": 0}


def test_pool_gives_the_same_corpus_as_serial(tmp_path, monkeypatch):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(12):
        (root / f"m{i:02d}.py").write_text(_func(f"f{i}", pad=i) + "\n" + _func(f"g{i}", pad=2 * i))
    (root / "zz_bad.py").write_text("def (:\n")
    (root / "LICENSE").write_text(MIT)
    import collapse.data.pipeline as pipeline_mod  # where the pool threshold lives

    monkeypatch.setattr(pipeline_mod, "POOL_MIN_FILES", 10**9)
    assert corpus_mod._pool_workers(13) == 0
    serial = load_human_corpus(_cfg(root), progress=False)
    monkeypatch.setattr(pipeline_mod, "POOL_MIN_FILES", 1)
    if corpus_mod._pool_workers(13) == 0:
        pytest.skip("no process pool here (one CPU, no fork, or other threads running)")
    pooled = load_human_corpus(_cfg(root), progress=False)
    assert pooled[0].to_dict() == serial[0].to_dict()
    assert pooled[1] == serial[1]


def test_jsonl_and_parquet_sources(tmp_path):
    rows = [{"code": _func("f", pad=5), "id": 1}, {"code": _func("g", pad=6), "id": 2}, {"code": None, "id": 3}]
    jl = _write_jsonl(tmp_path / "c.jsonl", rows)
    ds, info = load_human_corpus(_cfg(jl, text_column="code", min_chars=1), progress=False)
    assert ds.column_names == COLUMNS
    assert ds["text"] == [rows[0]["code"], rows[1]["code"]]
    assert ds["source"] == ["c.jsonl#row0", "c.jsonl#row1"]
    assert set(ds["license"]) == {"NOASSERTION"}  # tabular rows carry no license of their own
    assert info["kind"] == "jsonl" and info["files"] == 1 and info["extracted"] == 3
    assert info["dropped"]["too_short"] == 1  # the null row

    pq = tmp_path / "c.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(pq))
    ds2, info2 = load_human_corpus(_cfg(pq, text_column="code", min_chars=1), progress=False)
    assert ds2["text"] == ds["text"] and ds2["sha256"] == ds["sha256"]
    assert ds2["source"] == ["c.parquet#row0", "c.parquet#row1"]
    assert info2["kind"] == "parquet" and info2["root"] == str(pq.resolve())


def test_dedup_whitespace_variants_first_wins(tmp_path):
    base = "def f():\n    return 1"
    texts = [
        base,
        base + "   \n\n",  # trailing whitespace and blank lines
        "\n\n" + base.replace("\n", "\r\n"),  # leading blank lines, CRLF
        "def f():   \n    return 1",  # trailing spaces inside
        "def f():\n    return 2",  # different content
        "    def f():\n    return 1",  # leading indentation is content
    ]
    src = _write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    # Exact deduplication alone: near_dedup would also take the indented copy (same tokens).
    ds, info = load_human_corpus(_cfg(src, pipeline=["exact_dedup", "length"]), progress=False)
    assert ds["text"] == [texts[0], texts[4], texts[5]]
    assert ds["source"] == ["d.jsonl#row0", "d.jsonl#row4", "d.jsonl#row5"]
    assert info["dropped"]["duplicate"] == 3 and info["kept"] == 3


def test_length_filter_counts(tmp_path):
    texts = ["a" * n for n in (5, 9, 10, 15, 20, 21, 40)]
    src = _write_jsonl(tmp_path / "l.jsonl", [{"text": t} for t in texts])
    ds, info = load_human_corpus(_cfg(src, min_chars=10, max_chars=20), progress=False)
    assert [len(t) for t in ds["text"]] == [10, 15, 20]
    assert info["dropped"] == {**NO_DROPS, "too_short": 2, "too_long": 2}
    assert info["extracted"] == 7 and info["kept"] == 3


def test_max_examples_keeps_smallest_hashes_in_corpus_order(tmp_path):
    texts = [f"example number {i}" for i in range(20)]
    src = _write_jsonl(tmp_path / "m.jsonl", [{"text": t} for t in texts])
    ds, info = load_human_corpus(_cfg(src, max_examples=5), progress=False)
    sha = {t: hashlib.sha256(t.encode()).hexdigest() for t in texts}
    chosen = set(sorted(texts, key=sha.get)[:5])
    assert ds["text"] == [t for t in texts if t in chosen]
    assert info["dropped"]["max_examples"] == 15 and info["kept"] == 5


def _one_line_error(cfg: DataConfig, *needles: str) -> str:
    with pytest.raises(CollapseError) as e:
        load_human_corpus(cfg, progress=False)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_bad_sources_raise_one_line_errors(tmp_path):
    src = _write_jsonl(tmp_path / "foo.jsonl", [{"a": "x", "b": "y"}])
    _one_line_error(_cfg(src), "data.text_column:", "'text' not found in foo.jsonl", "(columns: a, b)")
    _one_line_error(_cfg(tmp_path / "nope"), "data.source: no such file or directory:", "nope")
    _one_line_error(_cfg(tmp_path / "nope.jsonl"), "data.source: no such file or directory:")
    csv = tmp_path / "x.csv"
    csv.write_text("text\nfoo\n")
    _one_line_error(_cfg(csv), "data.source: expected 'stdlib', 'installed', a directory of .py files", "'hf:NAME'", "x.csv")
    _one_line_error(_cfg("hf:"), "data.source:")
    # rows without the text column: an error naming them (file:line), not empty texts
    gaps = tmp_path / "gaps.jsonl"
    gaps.write_text(json.dumps({"text": _func("f", pad=5)}) + "\n\n" + json.dumps({"content": "x"}) + "\n"
                    + json.dumps({"text": None}) + "\n" + json.dumps({"content": "y"}) + "\n")
    _one_line_error(_cfg(gaps), "data.text_column: 2 rows of", f"have no 'text' ({gaps}:3, {gaps}:5)",
                    "set data.text_column")
    num = _write_jsonl(tmp_path / "num.jsonl", [{"text": 1}, {"text": 2}])
    _one_line_error(_cfg(num), "data.text_column:", "expected strings")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    _one_line_error(_cfg(empty_dir), "data.source: no .py files under")
    unlicensed = tmp_path / "unlicensed"
    unlicensed.mkdir()
    (unlicensed / "a.py").write_text(_func("a", pad=3))
    _one_line_error(_cfg(unlicensed), "empty after filtering", "files dropped: license_unknown=1")
    # the next step is named: the license check emptied it
    _one_line_error(_cfg(unlicensed), "set data.allow_unknown_license=true to keep them")
    (unlicensed / "a.py").write_text("# SPDX-License-Identifier: GPL-3.0-only\n" + _func("a", pad=3))
    _one_line_error(_cfg(unlicensed), "license_not_allowed=1", "add their licenses to data.licenses_allowed")
    short = _write_jsonl(tmp_path / "short.jsonl", [{"text": "a"}, {"text": "b"}, {"text": "a"}])
    _one_line_error(
        _cfg(short, min_chars=5),
        "data.source: the corpus is empty after filtering",
        "3 rows extracted from 1 file;",
        "duplicate=1",
        "too_short=2",
    )


# ----------------------------------------------------------------- splits

def _synthetic(n: int, seed: int = 0) -> datasets.Dataset:
    texts = [f"def f_{seed}_{i}():\n    return {i * 7919 % 10007}" for i in range(n)]
    return datasets.Dataset.from_dict(
        {"text": texts, "sha256": [hashlib.sha256(t.encode()).hexdigest() for t in texts]}
    )


def _assignment(dsd: datasets.DatasetDict) -> dict[str, str]:
    return {h: name for name in dsd for h in dsd[name]["sha256"]}


def test_split_no_leakage_and_stability():
    ds = _synthetic(2000)
    dsd = split_corpus(ds, 0.1, 0.1, 0.1)
    assert list(dsd) == ["train", "validation", "test", "reference"]
    assigned = _assignment(dsd)
    assert len(assigned) == len(ds) == sum(len(dsd[s]) for s in dsd)  # each example in exactly one split

    shuffled = ds.shuffle(seed=1)
    dsd2 = split_corpus(shuffled, 0.1, 0.1, 0.1)
    assert _assignment(dsd2) == assigned
    # Within a split the order depends only on content, not on input order.
    for s in dsd:
        assert dsd2[s]["sha256"] == dsd[s]["sha256"]

    half = ds.select(range(0, len(ds), 2))
    dsd3 = split_corpus(half, 0.1, 0.1, 0.1)
    for h, name in _assignment(dsd3).items():
        assert assigned[h] == name
    # A subset's order is the full order restricted to the subset.
    kept = set(half["sha256"])
    for s in dsd:
        assert dsd3[s]["sha256"] == [h for h in dsd[s]["sha256"] if h in kept]


def test_whitespace_duplicates_share_a_split():
    base = [f"def g{i}():\n    return {i}" for i in range(300)]
    variants = [t.replace("\n", "  \r\n") + "\n\n" for t in base]
    ds = datasets.Dataset.from_dict({"text": base + variants, "sha256": [str(i) for i in range(600)]})
    dsd = split_corpus(ds, 0.2, 0.2)
    where = _assignment(dsd)
    for i in range(300):
        assert where[str(i)] == where[str(i + 300)]


def test_split_proportions():
    n = 5000
    dsd = split_corpus(_synthetic(n, seed=3), val_fraction=0.1, test_fraction=0.2, reference_fraction=0.15)
    assert abs(len(dsd["test"]) / n - 0.2) < 0.03
    assert abs(len(dsd["validation"]) / n - 0.1) < 0.03
    assert abs(len(dsd["reference"]) / n - 0.15) < 0.03
    assert abs(len(dsd["train"]) / n - 0.55) < 0.03
    # Without a reference share the other splits are what they were.
    old = split_corpus(_synthetic(n, seed=3), val_fraction=0.1, test_fraction=0.2)
    assert old["test"]["sha256"] == dsd["test"]["sha256"] and len(old["reference"]) == 0
    assert dsd["train"].column_names == ["text", "sha256"]


# ------------------------------------------------------------------ cache

def test_prepare_human_data_caches(tmp_path, monkeypatch):
    src = _write_jsonl(tmp_path / "p.jsonl", [{"text": f"def p{i}():\n    return {i}"} for i in range(400)])
    cfg = _cfg(src, val_fraction=0.1, test_fraction=0.1, train_size=50)
    cache = tmp_path / "cache"
    dsd, info = prepare_human_data(cfg, cache, progress=False)
    assert info["cached"] is False
    assert info["split_sizes"] == {s: len(dsd[s]) for s in ("train", "validation", "test", "reference")}
    assert sum(info["split_sizes"].values()) == info["kept"] == 400
    assert [p.name for p in cache.iterdir()] == [f"human-{info['key']}"]  # no temp dir left over
    assert (cache / f"human-{info['key']}" / "info.json").is_file()
    assert info["card"] == str(cache / f"human-{info['key']}" / "README.md") and Path(info["card"]).is_file()
    assert not (cache / f"human-{info['key']}" / "dropped.jsonl").exists()  # only with data.write_dropped

    def fail(*a, **k):
        raise AssertionError("load_human_corpus called on a cache hit")

    monkeypatch.setattr(split_mod, "load_human_corpus", fail)
    # train_size only picks a prefix of train: same data, same cache entry.
    cfg2 = _cfg(src, val_fraction=0.1, test_fraction=0.1, train_size=100)
    dsd2, info2 = prepare_human_data(cfg2, cache, progress=False)
    assert info2["cached"] is True and info2["key"] == info["key"]
    for s in dsd:
        assert dsd2[s].to_dict() == dsd[s].to_dict()
    assert {k: v for k, v in info2.items() if k != "cached"} == {k: v for k, v in info.items() if k != "cached"}

    # Anything that changes the data changes the key.
    assert split_mod.data_key(_cfg(src, min_chars=1)) != split_mod.data_key(_cfg(src))
    assert split_mod.data_key(_cfg(src, val_fraction=0.2)) != split_mod.data_key(_cfg(src))


def test_prepare_human_data_rejects_empty_split(tmp_path):
    src = _write_jsonl(tmp_path / "tiny.jsonl", [{"text": "def only():\n    return 1"}])
    with pytest.raises(CollapseError) as e:
        prepare_human_data(_cfg(src), tmp_path / "cache", progress=False)
    assert "split" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# ----------------------------------------------------------------- stdlib

def test_stdlib_source():
    ds, info = load_human_corpus(DataConfig(), progress=False)
    assert info["kind"] == "stdlib" and info["stdlib_version"] == platform.python_version()
    assert info["kept"] == len(ds) >= 3000
    sources = ds["source"]
    assert any(s.startswith("json/encoder.py:") for s in sources)
    parts = {p for s in sources for p in s.split(":")[0].split("/")}
    assert not parts & {"test", "tests", "idle_test", "site-packages", "__pycache__"}
    assert not any(p.startswith("test_") for p in parts)
    # The stdlib is PSF-2.0; the few files with an SPDX header of their own (tomllib: MIT) keep theirs.
    licenses = collections.Counter(ds["license"])
    assert set(licenses) <= {"PSF-2.0", "MIT"} and licenses["PSF-2.0"] > 0.95 * len(ds)
    assert all(s.startswith("tomllib/") for s, lic in zip(sources, ds["license"]) if lic == "MIT")
    lengths = [len(t) for t in random.Random(0).sample(ds["text"], 200)]
    assert 80 <= min(lengths) and max(lengths) <= 1500


def test_pool_workers_die_on_sigterm_even_when_the_parent_ignores_it():
    # Inside a Slurm job submitit ignores SIGTERM; forked workers inherit the
    # handler, and Pool.terminate (what `with Pool()` does on exit) waits for
    # them after sending SIGTERM. The pool's workers must restore the default.
    # Run in a fresh interpreter: forking this test process, whose other
    # threads may hold locks, is what the pipeline's own pool check avoids.
    import signal
    import subprocess
    import sys

    code = """
import signal
from collapse.data.pool import fork_pool

def handler(_):
    return int(signal.getsignal(signal.SIGTERM))

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with fork_pool(2) as pool:
        print(pool.map(handler, range(4), chunksize=1))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str([int(signal.SIG_DFL)] * 4)
