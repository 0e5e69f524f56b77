"""Loading the human corpus: Python functions with provenance and a license.

The human side of the recursive training loop is a set of Python functions.
By default they come from the running interpreter's standard library (no
network); directories (checkouts), the installed distributions, a
``.jsonl``/``.parquet`` file with a text column, or a Hugging Face dataset
(``hf:NAME``) work too, alone or several at once (see
:mod:`collapse.data.sources`).

Every example is a row with ``text``, ``origin`` ("human"), ``generation``
(-1: not written by any model generation), ``source`` (file and 1-based line
span, or ``<file>#row<i>`` for tabular sources), ``sha256`` (of the UTF-8
text) and ``license`` (the SPDX expression of its file; ``NOASSERTION`` for
tabular and hub rows, whose license the user vouches for), so each training
set can say exactly where its data came from and under which terms.

How the corpus is built, in order:

1. **opt-out** (``data.opt_out``): listed files are removed before anything
   reads them;
2. **extraction**: every function of every remaining file (in parallel);
3. **license** (``data.licenses_allowed``, ``data.allow_unknown_license``):
   files whose license (:mod:`collapse.data.licenses`) is not allowed are
   dropped with all their functions; installed distributions that are not
   allowed are skipped without reading them;
4. **row steps** (``data.pipeline``, :mod:`collapse.data.pipeline`):
   redaction of secrets and personal data, exact and near deduplication,
   length, generated-code and quality filters;
5. the ``data.max_examples`` cap (a content-defined subset).

:func:`load_human_corpus` returns the corpus with an ``info`` dict recording
every count (files per source, opt-outs per entry, files and functions per
license, drops per step and reason, redactions per kind), which the run's
manifest and the dataset card (:mod:`collapse.data.card`) report; dropped
files and functions can be kept for inspection.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import json
import logging
import platform
import re
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import datasets
from tqdm.auto import tqdm

from collapse.config import DataConfig
from collapse.data.filters import header_is_autogen, normalize_text
from collapse.data.licenses import NOASSERTION, UNKNOWN, LicenseFinder, allowed, spdx_header
from collapse.data.pipeline import STEP_REASONS, _pool_workers, run_pipeline
from collapse.data.pool import fork_pool
from collapse.data.redact import redact_source
from collapse.data.sources import (STDLIB_SKIP_DIRS, FileEntry, OptOut, SourceSpec, list_files, parse_sources,
                                   resolve_source, stdlib_root)
from collapse.errors import CollapseError

__all__ = ["extract_functions", "load_human_corpus", "normalize_text", "FEATURES", "resolve_source", "stdlib_root",
           "STDLIB_SKIP_DIRS"]

log = logging.getLogger("collapse")

#: The schema of every human corpus (and of every pool derived from it).
FEATURES = datasets.Features(
    {
        "text": datasets.Value("string"),
        "origin": datasets.Value("string"),
        "generation": datasets.Value("int64"),
        "source": datasets.Value("string"),
        "sha256": datasets.Value("string"),
        "license": datasets.Value("string"),
    }
)

_PARSE_ERRORS = (SyntaxError, ValueError, UnicodeDecodeError, RecursionError)
_NEWLINES = re.compile(r"\r\n?")


# ------------------------------------------------------------- extraction

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


def _read_py_file(args: tuple[str, str]) -> tuple[str | None, bool, list[dict[str, str]]] | None:
    """``(SPDX expression of the header, generated-file header?, functions)`` of one file
    (``(absolute path, provenance path)``); None if unreadable or unparsable."""
    abspath, relpath = args
    try:
        with open(abspath, "rb") as f:
            raw = f.read()
        # decode_source honours PEP 263 encoding cookies and BOMs, as import does.
        text = importlib.util.decode_source(raw)
    except (OSError, *_PARSE_ERRORS):
        return None
    rows = _extract(text, relpath)
    if rows is None:
        return None
    return spdx_header(text), header_is_autogen(text), rows




def _extract_files(files: list[tuple[str, str]], progress: bool, desc: str) -> list[Any]:
    """:func:`_read_py_file` of every file, in file order.

    With a pool, ``imap`` hands results back in input order, so the corpus
    is the same with or without it.
    """
    workers = _pool_workers(len(files))
    out: list[Any] = []
    with contextlib.ExitStack() as stack:
        if workers:
            pool = stack.enter_context(fork_pool(workers))
            results = pool.imap(_read_py_file, files, chunksize=8)
        else:
            results = map(_read_py_file, files)
        # The bar is created after the fork so its monitor thread is not
        # running while workers start.
        out.extend(tqdm(results, total=len(files), desc=desc, unit="file", disable=not progress, leave=False))
    return out


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
        texts = _column_texts(ds, column, path.name)
        if path.suffix == ".jsonl" and column in ds.column_names and None in ds[column]:
            _check_jsonl_rows(path, column)
        return texts


def _check_jsonl_rows(path: Path, column: str) -> None:
    """Rows of a .jsonl file without ``column`` are an error naming them (``file:line``);
    an explicit ``null`` is an empty text, which the length filter drops."""
    missing = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue  # datasets read the file: such a line does not occur
            if not isinstance(row, dict) or column not in row:
                missing.append(lineno)
    if missing:
        shown = ", ".join(f"{path}:{n}" for n in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CollapseError(f"data.text_column: {len(missing)} row{'s' if len(missing) != 1 else ''} of {path} "
                            f"{'have' if len(missing) != 1 else 'has'} no {column!r} ({shown}); add the column to "
                            f"{'them' if len(missing) != 1 else 'it'} or drop {'them' if len(missing) != 1 else 'it'}, "
                            "or set data.text_column to the column that holds the code")


def _read_hf(name: str, column: str, progress: bool) -> list[str]:
    """Texts of the train split of a datasets hub dataset (needs network or a warm cache)."""
    with _datasets_progress(progress):
        try:
            ds = datasets.load_dataset(name, split="train")
        except Exception as e:
            raise CollapseError(f"data.source: could not load dataset {name!r}: {_first_line(e)}") from None
    return _column_texts(ds, column, f"hf:{name}")


# ------------------------------------------------------------------ public

def _license_of(f: FileEntry, spdx: str | None, finder: LicenseFinder | None) -> str:
    if spdx:
        return spdx
    if f.license:
        return f.license
    if finder is not None:
        return finder(Path(f.path)) or UNKNOWN
    return UNKNOWN


def _file_rows(spec: SourceSpec, prefix: bool, cfg: DataConfig, opt_out: OptOut, progress: bool,
               stats: dict[str, Any], dropped: list[dict[str, Any]] | None, timings: Counter[str]) -> list[dict[str, Any]]:
    """Functions of a file-tree source that pass the opt-out and license checks."""
    allow = cfg.licenses_allowed
    t0 = time.perf_counter()

    def license_ok(expr: str) -> bool:
        if allow is None:
            return True
        if expr == UNKNOWN:
            return cfg.allow_unknown_license
        return allowed(expr, allow)

    def drop_file(f: FileEntry, expr: str) -> None:
        why = "license_unknown" if expr == UNKNOWN else "license_not_allowed"
        stats["files_dropped"][why] += 1
        stats["license_files_dropped"][expr] += 1
        if dropped is not None:
            dropped.append({"step": "license", "reason": why, "source": f.display, "license": expr})

    files = list_files(spec, prefix)
    stats["files_found"] = len(files)
    files, removed = opt_out.apply(files, spec.label)
    stats["files_dropped"]["opt_out"] += len(removed)
    stats["files"] = len(files)
    stats["unparsable_files"] = 0
    if dropped is not None:
        dropped.extend({"step": "opt_out", "reason": "opt_out", "source": f.display, "pattern": p} for f, p in removed)
    if not files:
        return []
    if spec.kind == "installed":
        # A distribution the allow-list rejects is skipped whole, unread.
        readable = []
        for f in files:
            if f.license is not None and not license_ok(f.license):
                drop_file(f, f.license)
            else:
                readable.append(f)
        files = readable
    finder = LicenseFinder(spec.root) if spec.kind == "directory" else None
    t1 = time.perf_counter()
    timings["files"] += t1 - t0
    results = _extract_files([(f.path, f.display) for f in files], progress, desc=f"reading {spec.label}")
    t2 = time.perf_counter()
    timings["extract"] += t2 - t1
    rows: list[dict[str, Any]] = []
    bad = 0
    for f, got in zip(files, results):
        if got is None:
            bad += 1
            continue
        spdx, autogen, funcs = got
        expr = _license_of(f, spdx, finder)
        if not license_ok(expr):
            drop_file(f, expr)
            continue
        stats["license_files"][expr] += 1
        for r in funcs:
            r["license"] = expr
            if autogen:
                r["file_autogen"] = True
        rows.extend(funcs)
    stats["files"] = stats["files_found"] - stats["files_dropped"]["opt_out"]
    stats["unparsable_files"] = bad
    timings["license"] += time.perf_counter() - t2
    return rows


def _table_rows(spec: SourceSpec, cfg: DataConfig, progress: bool) -> list[dict[str, Any]]:
    if spec.kind == "hf":
        name = spec.spec[3:].strip()
        texts, prefix = _read_hf(name, cfg.text_column, progress), f"hf:{name}"
    else:
        assert spec.root is not None
        texts, prefix = _read_table(spec.root, cfg.text_column, progress), spec.root.name
    return [{"text": t, "source": f"{prefix}#row{i}", "license": NOASSERTION} for i, t in enumerate(texts)]


def _license_hint(files_dropped: Counter[str]) -> str:
    """The next step when the license check emptied the corpus ('' when it dropped nothing)."""
    hints = []
    if files_dropped.get("license_unknown"):
        hints.append(f"{files_dropped['license_unknown']} file(s) without a license were dropped: set "
                     "data.allow_unknown_license=true to keep them (if you may train on them)")
    if files_dropped.get("license_not_allowed"):
        hints.append(f"{files_dropped['license_not_allowed']} file(s) under licenses outside data.licenses_allowed "
                     "were dropped: add their licenses to data.licenses_allowed, or set it to null for no check")
    return ("; " + "; ".join(hints)) if hints else ""


def _cap(rows: list[dict[str, Any]], cap: int | None) -> tuple[list[dict[str, Any]], int]:
    """The ``max_examples`` subset: the rows with the smallest sha256, in corpus order."""
    if cap is None or len(rows) <= cap:
        return rows, 0
    # A content-defined subset: the same corpus and cap always give the
    # same examples, whatever the run's seed; corpus order is kept.
    chosen = set(sorted(range(len(rows)), key=lambda i: rows[i]["sha256"])[:cap])
    return [r for i, r in enumerate(rows) if i in chosen], len(rows) - len(chosen)


def load_human_corpus(cfg: DataConfig, progress: bool = True, dropped: list[dict[str, Any]] | None = None,
                      timings: dict[str, float] | None = None) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The filtered, deduplicated, redacted human corpus and a record of how it was built.

    Columns: ``text``, ``origin`` ("human"), ``generation`` (-1), ``source``,
    ``sha256``, ``license``. ``info`` holds:

    - ``source`` (as configured), ``kind`` (stdlib | installed | directory |
      jsonl | parquet | hf, or ``multiple``), ``root`` (of a single local
      source), ``stdlib_version`` (when the stdlib is read), and
      ``sources``: per source its ``spec``, ``kind``, ``label``, ``root``,
      ``files`` (after opt-out), ``unparsable_files``, ``extracted``;
    - ``files``, ``unparsable_files``, ``extracted`` (functions entering the
      row steps), totals over sources;
    - ``opt_out``: ``{"patterns": {entry: files removed}, "files": total}``;
    - ``files_dropped``: files removed by ``opt_out``, ``license_not_allowed``
      and ``license_unknown``;
    - ``licenses``: per license expression, ``files`` read and ``kept``
      functions; ``licenses_dropped``: files dropped per expression;
    - ``steps``: per row step, rows in and out, drops per reason, seconds;
      ``redactions``: replacements per kind;
    - ``dropped``: functions dropped per reason over all row steps and the
      cap (every reason of every configured step present), ``kept``.

    When ``dropped`` is a list, every dropped file and function is appended
    to it as a dict with ``step``, ``reason`` and ``source`` (and ``text``
    for functions, after redaction when ``redact`` is a step). When
    ``timings`` is a dict, seconds per phase are added to it: ``files``
    (listing and opt-out), ``extract`` (reading and parsing), ``license``,
    ``step.<name>`` per row step, ``dataset`` (the cap and the Dataset).

    The stdlib source reads every ``.py`` file under the interpreter's
    stdlib directory except ``site-packages``/``dist-packages``,
    ``__pycache__`` and the test suites: directories named ``test``,
    ``tests`` or ``idle_test``, and any directory or file whose name starts
    with ``test_``. A directory source reads every ``.py`` file under it
    (but not in ``.git``/``.hg``/``.svn``/``__pycache__``).

    Raises :class:`CollapseError` (one line) for a missing or unsupported
    source, a missing text column, or a corpus left empty by the filters.
    """
    clock: Counter[str] = Counter()
    specs = parse_sources(cfg.source, cfg.distributions)
    single = len(specs) == 1
    info: dict[str, Any] = {"source": cfg.source, "kind": specs[0].kind if single else "multiple"}
    if any(s.kind == "stdlib" for s in specs):
        info["stdlib_version"] = platform.python_version()
    info["root"] = str(specs[0].root) if single and specs[0].root is not None else None

    opt_out = OptOut(cfg.opt_out)
    files_dropped: Counter[str] = Counter({"opt_out": 0, "license_not_allowed": 0, "license_unknown": 0})
    license_files: Counter[str] = Counter()
    license_dropped: Counter[str] = Counter()
    per_source = []
    rows: list[dict[str, Any]] = []
    for spec in specs:
        if spec.kind in ("stdlib", "directory", "installed"):
            st: dict[str, Any] = {"files_dropped": Counter({"opt_out": 0, "license_not_allowed": 0, "license_unknown": 0}),
                                  "license_files": Counter(), "license_files_dropped": Counter()}
            got = _file_rows(spec, not single, cfg, opt_out, progress, st, dropped, clock)
            if st["files_found"] == 0:
                where = spec.root if spec.root is not None else "the installed distributions"
                raise CollapseError(f"data.source: no .py files under {where}")
            files_dropped.update(st["files_dropped"])
            license_files.update(st["license_files"])
            license_dropped.update(st["license_files_dropped"])
            entry = {"files": st["files"], "unparsable_files": st["unparsable_files"],
                     "files_dropped": dict(st["files_dropped"])}
        else:
            t0 = time.perf_counter()
            got = _table_rows(spec, cfg, progress)
            clock["extract"] += time.perf_counter() - t0
            entry = {"files": 1, "unparsable_files": 0}
        per_source.append({"spec": spec.spec, "kind": spec.kind, "label": spec.label,
                           "root": str(spec.root) if spec.root is not None else None, **entry, "extracted": len(got)})
        rows.extend(got)
    info["sources"] = per_source
    info["files"] = sum(s["files"] for s in per_source)
    info["unparsable_files"] = sum(s["unparsable_files"] for s in per_source)
    info["extracted"] = len(rows)
    info["opt_out"] = {"patterns": dict(opt_out.counts), "files": opt_out.total}
    info["files_dropped"] = dict(files_dropped)
    for k, v in files_dropped.items():
        if v:
            log.info("data: %d file%s dropped (%s)", v, "s" if v != 1 else "", k)

    kept, reports, redactions = run_pipeline(rows, cfg, dropped, progress=progress)
    if dropped is not None and "redact" in cfg.pipeline:
        # File names are redacted like the texts, in every record of them (opt-out, license and
        # steps that ran before ``redact`` included); kept rows' sources were redacted by the step.
        for d in dropped:
            for k in ("source", "duplicate_of"):
                if isinstance(d.get(k), str):
                    d[k] = redact_source(d[k])
    clock.update({f"step.{rep.name}": rep.seconds for rep in reports})
    t0 = time.perf_counter()
    for r in kept:
        r["sha256"] = hashlib.sha256(r["text"].encode("utf-8")).hexdigest()
    kept, capped = _cap(kept, cfg.max_examples)
    if dropped is not None and capped:
        keep_ids = {id(r) for r in kept}
        dropped.extend({"step": "max_examples", "reason": "max_examples", "source": r["source"], "text": r["text"]}
                       for r in rows if id(r) not in keep_ids and "sha256" in r)

    reasons = [why for step in cfg.pipeline for why in STEP_REASONS[step]]
    drop_counts = dict.fromkeys(reasons, 0)
    for rep in reports:
        for why, n in rep.dropped.items():
            drop_counts[why] += n
    drop_counts["max_examples"] = capped
    info["steps"] = [rep.as_dict() for rep in reports]
    info["redactions"] = {k: v for k, v in redactions.items() if v} if "redact" in cfg.pipeline else None
    info["dropped"] = drop_counts
    info["kept"] = len(kept)
    kept_by_license = Counter(r["license"] for r in kept)
    info["licenses"] = {lic: {"files": license_files.get(lic, 0), "kept": kept_by_license.get(lic, 0)}
                        for lic in sorted(set(license_files) | set(kept_by_license))}
    info["licenses_dropped"] = dict(sorted(license_dropped.items()))
    if not kept:
        unit = "functions" if any(s["kind"] in ("stdlib", "directory", "installed") for s in per_source) else "rows"
        why = ", ".join(f"{k}={v}" for k, v in drop_counts.items() if v) or "nothing"
        files_why = ", ".join(f"{k}={v}" for k, v in files_dropped.items() if v)
        raise CollapseError(
            f"data.source: the corpus is empty after filtering ({info['extracted']} {unit} extracted from "
            f"{info['files']} file{'s' if info['files'] != 1 else ''}; "
            + (f"files dropped: {files_why}; " if files_why else "")
            + f"dropped: {why}; data.min_chars={cfg.min_chars}, data.max_chars={cfg.max_chars})"
            + _license_hint(files_dropped)
        )
    ds = datasets.Dataset.from_dict(
        {
            "text": [r["text"] for r in kept],
            "origin": ["human"] * len(kept),
            "generation": [-1] * len(kept),
            "source": [r["source"] for r in kept],
            "sha256": [r["sha256"] for r in kept],
            "license": [r["license"] for r in kept],
        },
        features=FEATURES,
    )
    clock["dataset"] += time.perf_counter() - t0
    if timings is not None:
        for k, v in clock.items():
            timings[k] = timings.get(k, 0.0) + v
    return ds, info
