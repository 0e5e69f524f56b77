"""Loading the human corpus: Python functions with provenance.

The human side of the recursive training loop is a set of Python functions.
By default they come from the running interpreter's standard library (no
network); a directory of ``.py`` files, a ``.jsonl``/``.parquet`` file with a
text column, or a Hugging Face dataset (``hf:NAME``) work too.

Every example is a row with ``text``, ``origin`` ("human"), ``generation``
(-1: not written by any model generation), ``source`` (file and 1-based line
span, or ``<file>#row<i>`` for tabular sources) and ``sha256`` (of the UTF-8
text), so each training set can say exactly where its data came from.

The corpus is deduplicated exactly (on a whitespace-normalized hash, first
occurrence kept), length-filtered, and optionally capped to a content-defined
subset; :func:`load_human_corpus` returns it with an ``info`` dict recording
every count, so a run's manifest can say what was read and what was dropped.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import os
import platform
import re
import sysconfig
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterator

import datasets
from tqdm.auto import tqdm

from collapse.config import DataConfig
from collapse.errors import CollapseError

__all__ = ["extract_functions", "load_human_corpus", "normalize_text", "FEATURES"]

#: The schema of every human corpus (and of every pool derived from it).
FEATURES = datasets.Features(
    {
        "text": datasets.Value("string"),
        "origin": datasets.Value("string"),
        "generation": datasets.Value("int64"),
        "source": datasets.Value("string"),
        "sha256": datasets.Value("string"),
    }
)

#: Directory names under the stdlib that are not part of the library proper:
#: third-party packages, bytecode caches, and the test suites (which hold
#: deliberately odd or broken code and would dominate the corpus).
STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})

_PARSE_ERRORS = (SyntaxError, ValueError, UnicodeDecodeError, RecursionError)
_NEWLINES = re.compile(r"\r\n?")
_DROP_REASONS = ("duplicate", "too_short", "too_long", "max_examples")
_EXPECTED_SOURCE = "expected a directory of .py files, a .jsonl/.parquet file, 'stdlib' or 'hf:NAME'"


# ------------------------------------------------------------- extraction

def normalize_text(text: str) -> str:
    """The form used for content hashes: LF line endings, no trailing
    whitespace on any line, no leading or trailing blank lines.

    Two texts that differ only in these respects are the same example for
    deduplication and splitting.
    """
    lines = [ln.rstrip() for ln in _NEWLINES.sub("\n", text).split("\n")]
    start, end = 0, len(lines)
    while start < end and not lines[start]:
        start += 1
    while end > start and not lines[end - 1]:
        end -= 1
    return "\n".join(lines[start:end])


def _function_nodes(body: list[ast.AST]) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every (async) function in a statement list, at any depth.

    Functions are statements, so only statement lists are visited (bodies,
    ``else``/``finally`` blocks, exception handlers, match cases), not
    expressions: several times faster than ``ast.walk`` on the whole stdlib.
    """
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list) and value and isinstance(value[0], (ast.stmt, ast.excepthandler, ast.match_case)):
                yield from _function_nodes(value)


def _extract(source: str, path: str) -> list[dict[str, str]] | None:
    """Like :func:`extract_functions`, but None when the source does not parse."""
    # Line endings are normalized before parsing so that ast's line numbers
    # and our line list agree (str.splitlines would also split on form
    # feeds and other characters the tokenizer does not count as newlines).
    source = _NEWLINES.sub("\n", source)
    try:
        tree = ast.parse(source, filename=path)
        nodes = list(_function_nodes(tree.body))
    except _PARSE_ERRORS:
        return None
    lines = source.split("\n")
    spans = []
    for node in nodes:
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        spans.append((start, node.end_lineno or node.lineno))
    # Corpus order is source order (outer functions before the ones they contain).
    spans.sort()
    return [
        {"text": textwrap.dedent("\n".join(lines[start - 1 : end])), "source": f"{path}:{start}-{end}"}
        for start, end in spans
    ]


def extract_functions(source: str, path: str) -> list[dict[str, str]]:
    """Every function and method in a Python module, in source order.

    Includes async functions, methods, and functions nested in functions or
    classes (a nested function appears both inside its parent's text and on
    its own). Each item is ``{"text", "source"}``: ``text`` runs from the
    first decorator line to the last line of the body, dedented;
    ``source`` is ``f"{path}:{start}-{end}"`` (1-based, inclusive). A module
    that does not parse gives ``[]``.
    """
    return _extract(source, path) or []


def _read_py_file(args: tuple[str, str]) -> list[dict[str, str]] | None:
    """Functions of one file (``(absolute path, relative path)``); None if unreadable."""
    abspath, relpath = args
    try:
        with open(abspath, "rb") as f:
            raw = f.read()
        # decode_source honours PEP 263 encoding cookies and BOMs, as import does.
        text = importlib.util.decode_source(raw)
    except (OSError, *_PARSE_ERRORS):
        return None
    return _extract(text, relpath)


def _py_files(root: Path, skip: frozenset[str] = frozenset(), skip_test_prefix: bool = False) -> list[tuple[str, str]]:
    """``(absolute, relative posix)`` paths of the ``.py`` files under ``root``, sorted by relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place keeps os.walk out of skipped trees entirely.
        dirnames[:] = [d for d in dirnames if d not in skip and not (skip_test_prefix and d.startswith("test_"))]
        for fn in filenames:
            if not fn.endswith(".py") or (skip_test_prefix and fn.startswith("test_")):
                continue
            full = os.path.join(dirpath, fn)
            found.append((full, Path(os.path.relpath(full, root)).as_posix()))
    found.sort(key=lambda t: t[1])
    return found


def stdlib_root() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


#: Below this many files a process pool costs more than it saves.
POOL_MIN_FILES = 64


def _pool_workers(n_files: int) -> int:
    """How many worker processes to parse with; 0 means parse in this process.

    Parsing the stdlib is ~6 s in one process and ~3.5 s with two forked
    workers on the 2-core reference machine, so a pool is used when it is
    safe: ``fork`` is available (workers must not re-import the caller's
    ``__main__``, as spawn would) and this process runs no other Python
    thread whose locks a forked child could inherit held. tqdm's monitor
    thread is the exception: it outlives every bar, and it only ever holds
    tqdm's own lock, which the workers never take.
    """
    import multiprocessing
    import threading

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    if (
        n_files < POOL_MIN_FILES
        or cpus < 2
        or "fork" not in multiprocessing.get_all_start_methods()
        or any(t is not threading.current_thread() and t.name != "tqdm_monitor" for t in threading.enumerate())
    ):
        return 0
    return min(cpus, 8)


def _extract_files(files: list[tuple[str, str]], progress: bool, desc: str) -> tuple[list[dict[str, str]], int]:
    """Functions of every file, in file order, and the number of unparsable files.

    With a pool, ``imap`` hands results back in input order, so the corpus
    is the same with or without it.
    """
    import multiprocessing

    workers = _pool_workers(len(files))
    rows: list[dict[str, str]] = []
    bad = 0
    with contextlib.ExitStack() as stack:
        if workers:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers))
            results = pool.imap(_read_py_file, files, chunksize=8)
        else:
            results = map(_read_py_file, files)
        # The bar is created after the fork so its monitor thread is not
        # running while workers start.
        for got in tqdm(results, total=len(files), desc=desc, unit="file", disable=not progress, leave=False):
            if got is None:
                bad += 1
            else:
                rows.extend(got)
    return rows, bad


# ---------------------------------------------------------------- sources

@contextlib.contextmanager
def _datasets_progress(enabled: bool) -> Iterator[None]:
    """Silence datasets' own progress bars when ours are off."""
    was_disabled = datasets.are_progress_bars_disabled()
    if not enabled and not was_disabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            datasets.enable_progress_bars()


def _column_texts(ds: datasets.Dataset, column: str, where: str) -> list[str]:
    """The text column of a tabular source as a list of strings (nulls become "")."""
    if column not in ds.column_names:
        raise CollapseError(
            f"data.text_column: column {column!r} not found in {where} (columns: {', '.join(ds.column_names) or 'none'})"
        )
    feature = ds.features[column]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        raise CollapseError(f"data.text_column: column {column!r} in {where} holds {feature}, expected strings")
    return [t if t is not None else "" for t in ds[column]]


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__


def _read_table(path: Path, column: str, progress: bool) -> list[str]:
    """Texts of a local .jsonl or .parquet file."""
    reader = datasets.Dataset.from_json if path.suffix == ".jsonl" else datasets.Dataset.from_parquet
    # A private, throwaway cache: the rows are copied out right away, and the
    # user's datasets cache should not fill up with one Arrow copy per corpus.
    with tempfile.TemporaryDirectory(prefix="collapse-read-") as tmp, _datasets_progress(progress):
        try:
            ds = reader(str(path), cache_dir=tmp, keep_in_memory=True)
        except Exception as e:  # datasets wraps parse errors in many types
            raise CollapseError(f"data.source: could not read {path}: {_first_line(e)}") from None
        return _column_texts(ds, column, path.name)


def _read_hf(name: str, column: str, progress: bool) -> list[str]:
    """Texts of the train split of a datasets hub dataset (needs network or a warm cache)."""
    with _datasets_progress(progress):
        try:
            ds = datasets.load_dataset(name, split="train")
        except Exception as e:
            raise CollapseError(f"data.source: could not load dataset {name!r}: {_first_line(e)}") from None
    return _column_texts(ds, column, f"hf:{name}")


def resolve_source(source: str) -> tuple[str, Path | None]:
    """``(kind, local path)`` of a configured source; raises CollapseError if unusable."""
    if source == "stdlib":
        return "stdlib", stdlib_root()
    if source.startswith("hf:"):
        if not source[3:].strip():
            raise CollapseError(f"data.source: {_EXPECTED_SOURCE}, got {source!r} (no dataset name after 'hf:')")
        return "hf", None
    p = Path(source).expanduser()
    if p.suffix in (".jsonl", ".parquet") or p.is_dir():
        if not p.exists():
            raise CollapseError(f"data.source: no such file or directory: {p}")
        if p.is_dir():
            return "directory", p.resolve()
        return p.suffix[1:], p.resolve()
    if not p.exists():
        raise CollapseError(f"data.source: no such file or directory: {p}")
    raise CollapseError(f"data.source: {_EXPECTED_SOURCE}, got {source!r}")


# -------------------------------------------------------------- filtering

def _content_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def _filter(rows: list[dict[str, str]], cfg: DataConfig) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Dedup (first occurrence wins), length filter, then the max_examples cap."""
    dropped = dict.fromkeys(_DROP_REASONS, 0)
    seen: set[str] = set()
    kept = []
    for r in rows:
        h = _content_hash(r["text"])
        if h in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(h)
        n = len(r["text"])
        if n < cfg.min_chars:
            dropped["too_short"] += 1
        elif n > cfg.max_chars:
            dropped["too_long"] += 1
        else:
            kept.append(r)
    for r in kept:
        r["sha256"] = hashlib.sha256(r["text"].encode("utf-8")).hexdigest()
    if cfg.max_examples is not None and len(kept) > cfg.max_examples:
        # A content-defined subset: the same corpus and cap always give the
        # same examples, whatever the run's seed; corpus order is kept.
        chosen = set(sorted(range(len(kept)), key=lambda i: kept[i]["sha256"])[: cfg.max_examples])
        dropped["max_examples"] = len(kept) - len(chosen)
        kept = [r for i, r in enumerate(kept) if i in chosen]
    return kept, dropped


# ------------------------------------------------------------------ public

def load_human_corpus(cfg: DataConfig, progress: bool = True) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The filtered, deduplicated human corpus and a record of how it was built.

    Columns: ``text``, ``origin`` ("human"), ``generation`` (-1), ``source``,
    ``sha256``. ``info`` holds ``source``, ``kind``
    (stdlib | directory | jsonl | parquet | hf), ``stdlib_version`` (stdlib
    only), ``root`` (absolute path of a local source), ``files``,
    ``unparsable_files``, ``extracted``, ``dropped`` (reason → count) and
    ``kept``.

    The stdlib source reads every ``.py`` file under the interpreter's
    stdlib directory except ``site-packages``/``dist-packages``,
    ``__pycache__`` and the test suites: directories named ``test``,
    ``tests`` or ``idle_test``, and any directory or file whose name starts
    with ``test_``. A directory source reads every ``.py`` file under it.

    Raises :class:`CollapseError` (one line) for a missing or unsupported
    source, a missing text column, or a corpus left empty by the filters.
    """
    kind, root = resolve_source(cfg.source)
    info: dict[str, Any] = {"source": cfg.source, "kind": kind}
    if kind == "stdlib":
        info["stdlib_version"] = platform.python_version()
    info["root"] = str(root) if root is not None else None

    if kind in ("stdlib", "directory"):
        assert root is not None
        if kind == "stdlib":
            files = _py_files(root, STDLIB_SKIP_DIRS, skip_test_prefix=True)
        else:
            files = _py_files(root)
        if not files:
            raise CollapseError(f"data.source: no .py files under {root}")
        rows, bad = _extract_files(files, progress, desc=f"reading {kind}")
        info["files"], info["unparsable_files"] = len(files), bad
        unit = "functions"
    else:
        if kind == "hf":
            name = cfg.source[3:].strip()
            texts, prefix = _read_hf(name, cfg.text_column, progress), f"hf:{name}"
        else:
            assert root is not None
            texts, prefix = _read_table(root, cfg.text_column, progress), root.name
        rows = [{"text": t, "source": f"{prefix}#row{i}"} for i, t in enumerate(texts)]
        info["files"], info["unparsable_files"] = 1, 0
        unit = "rows"
    info["extracted"] = len(rows)

    kept, dropped = _filter(rows, cfg)
    info["dropped"] = dropped
    info["kept"] = len(kept)
    if not kept:
        why = ", ".join(f"{k}={v}" for k, v in dropped.items() if v) or "nothing"
        raise CollapseError(
            f"data.source: the corpus is empty after filtering ({len(rows)} {unit} extracted from "
            f"{info['files']} file{'s' if info['files'] != 1 else ''}; dropped: {why}; "
            f"data.min_chars={cfg.min_chars}, data.max_chars={cfg.max_chars})"
        )
    ds = datasets.Dataset.from_dict(
        {
            "text": [r["text"] for r in kept],
            "origin": ["human"] * len(kept),
            "generation": [-1] * len(kept),
            "source": [r["source"] for r in kept],
            "sha256": [r["sha256"] for r in kept],
        },
        features=FEATURES,
    )
    return ds, info
