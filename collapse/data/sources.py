"""Where human code comes from: source specs, file enumeration and opt-outs.

``data.source`` is one spec or a list of them, read in order:

- ``stdlib``: the running interpreter's standard library (without its test
  suites and third-party directories);
- ``installed`` (alias ``site-packages``), or ``installed:PATH``: the Python
  files of the distributions installed in this interpreter's environment
  (or in the directory ``PATH``), as listed in their ``RECORD``, or of the
  ones ``data.distributions`` names (a corpus, and every key built on it,
  that installing something else does not change); test
  directories are skipped as for the stdlib. A distribution whose license
  (from its metadata, :func:`collapse.data.licenses.distribution_license`)
  the allow-list rejects is skipped whole;
- a directory: every ``.py`` file under it (a checkout, or a folder of
  several checkouts); version-control metadata and ``__pycache__`` are
  skipped;
- a ``.jsonl`` / ``.parquet`` file with a text column, or ``hf:NAME``.

With several sources, the provenance of each function from a file tree is
prefixed with the source's label (``stdlib``, the directory's name, or
``site-packages``), so two checkouts with the same file names stay apart;
installed files always name their distribution (``numpy-2.4.6/numpy/...``).

**Opt-out** (``data.opt_out``) removes files before anything else reads
them. Each entry is one of:

- a glob (has ``*``, ``?`` or ``[``): matched against the file's path
  relative to its source root, the same path prefixed with the source label,
  and the absolute path (``*`` also matches ``/``);
- a path (contains ``/``): that file, or everything under that directory,
  resolved against the working directory; also matched, normalized
  (``./orgA/x`` is ``orgA/x``), as a path relative to each source root (and
  to the source label);
- a name (no ``/``, no glob character): a repository, i.e. a checkout root
  (a directory holding ``.git``, or a directory source itself, or the
  checkout a directory source lies in) with that name, or an installed
  distribution with that name (case-insensitive, ``-``/``_``/``.``
  equivalent); also the file or directory of that name directly under a
  source root. A name never depends on the working directory: a folder of
  that name there changes nothing.

Tabular and hub sources have no files: opt-outs do not apply to them.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collapse.data.licenses import STDLIB_LICENSE, distribution_license
from collapse.errors import CollapseError

__all__ = ["FileEntry", "SourceSpec", "parse_sources", "resolve_source", "stdlib_root", "list_files", "OptOut",
           "STDLIB_SKIP_DIRS", "installed_distributions"]

#: Directory names under the stdlib that are not part of the library proper:
#: third-party packages, bytecode caches, and the test suites (which hold
#: deliberately odd or broken code and would dominate the corpus).
STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})
#: Never part of a directory corpus: version-control metadata and bytecode caches.
TREE_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__"})
INSTALLED_ALIASES = ("installed", "site-packages")

_EXPECTED_SOURCE = ("expected 'stdlib', 'installed', a directory of .py files, a .jsonl/.parquet file or 'hf:NAME' "
                    "(or a list of these)")


def stdlib_root() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class SourceSpec:
    """One resolved entry of ``data.source``."""

    spec: str
    kind: str  # stdlib | installed | directory | jsonl | parquet | hf
    root: Path | None
    label: str = ""
    only: tuple[str, ...] | None = None  # installed: the distributions it reads (data.distributions); None = all


@dataclass
class FileEntry:
    """A Python file of a file-tree source."""

    path: str  # absolute
    rel: str  # relative to the source root (posix)
    display: str  # what provenance shows (rel, prefixed when needed)
    checkouts: tuple[str, ...] = ()  # names of the checkout roots containing it
    project: str | None = None  # installed distribution name
    license: str | None = None  # known without reading the file (stdlib, distribution), else None
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_source(source: str) -> tuple[str, Path | None]:
    """``(kind, local path)`` of one source spec; raises CollapseError if unusable."""
    if source == "stdlib":
        return "stdlib", stdlib_root()
    if source.startswith("hf:"):
        if not source[3:].strip():
            raise CollapseError(f"data.source: {_EXPECTED_SOURCE}, got {source!r} (no dataset name after 'hf:')")
        return "hf", None
    for alias in INSTALLED_ALIASES:
        if source == alias:
            return "installed", None
        if source.startswith(alias + ":"):
            p = Path(source[len(alias) + 1 :]).expanduser()
            if not p.is_dir():
                raise CollapseError(f"data.source: no such directory: {p} (in {source!r})")
            return "installed", p.resolve()
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


def parse_sources(source: str | list[str], distributions: list[str] | None = None) -> list[SourceSpec]:
    """Every source of ``data.source`` resolved, with distinct labels; an
    ``installed`` source reads only ``distributions`` when given."""
    specs = [source] if isinstance(source, str) else list(source)
    if not specs:
        raise CollapseError(f"data.source: {_EXPECTED_SOURCE}, got an empty list")
    out: list[SourceSpec] = []
    seen: dict[str, int] = {}
    for s in specs:
        kind, root = resolve_source(s)
        base = {"stdlib": "stdlib", "installed": "site-packages", "hf": s[3:].strip().replace("/", "_")}.get(
            kind, root.name if root is not None else s)
        seen[base] = seen.get(base, 0) + 1
        label = base if seen[base] == 1 else f"{base}-{seen[base]}"
        only = tuple(distributions) if kind == "installed" and distributions is not None else None
        out.append(SourceSpec(s, kind, root, label, only))
    return out


# ------------------------------------------------------------------ files

def _walk(root: Path, skip: frozenset[str], skip_test_prefix: bool) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(absolute, relative posix, checkout names)`` of the ``.py`` files under ``root``, sorted by relative path."""
    above: tuple[str, ...] = ()
    for d in root.parents:
        if (d / ".git").exists():
            above = (d.name,)
            break
    chains: dict[str, tuple[str, ...]] = {}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            chain = (root.name, *above)
        else:
            chain = chains[os.path.dirname(dirpath)]
            if ".git" in dirnames or ".git" in filenames:
                chain = (os.path.basename(dirpath), *chain)
        chains[dirpath] = chain
        # Pruning in place keeps os.walk out of skipped trees entirely.
        dirnames[:] = [d for d in dirnames if d not in skip and not (skip_test_prefix and d.startswith("test_"))]
        for fn in filenames:
            if not fn.endswith(".py") or (skip_test_prefix and fn.startswith("test_")):
                continue
            full = os.path.join(dirpath, fn)
            found.append((full, Path(os.path.relpath(full, root)).as_posix(), chain))
    found.sort(key=lambda t: t[1])
    return found


def installed_distributions(path: Path | None = None, only: tuple[str, ...] | list[str] | None = None) -> list:
    """Installed distributions (one per project name, the first on the path, as import sees them), sorted by name.

    ``only`` keeps the distributions of those names (``-``/``_``/``.`` and case
    equivalent) and raises :class:`CollapseError` naming any that is not installed."""
    import importlib.metadata as md

    dists = md.distributions(path=[str(path)]) if path is not None else md.distributions()
    chosen: dict[str, Any] = {}
    for d in dists:
        name = d.metadata["Name"] if d.metadata is not None else None
        if name and _canon(name) not in chosen:
            chosen[_canon(name)] = d
    if only is not None:
        wanted = {_canon(n) for n in only}
        missing = sorted(n for n in only if _canon(n) not in chosen)
        if missing:
            where = str(path) if path is not None else "this environment"
            raise CollapseError(f"data.distributions: not installed in {where}: {', '.join(missing)}")
        chosen = {k: d for k, d in chosen.items() if k in wanted}
    return [chosen[k] for k in sorted(chosen)]


def _installed_files(path: Path | None, only: tuple[str, ...] | None = None) -> list[FileEntry]:
    out: list[FileEntry] = []
    seen: set[str] = set()
    for d in installed_distributions(path, only):
        name, version = d.metadata["Name"], d.metadata["Version"] or "0"
        lic = distribution_license(d)
        for f in d.files or []:
            parts = Path(str(f)).parts
            if (not str(f).endswith(".py") or ".." in parts or any(p in STDLIB_SKIP_DIRS for p in parts[:-1])
                    or any(p.startswith("test_") for p in parts)):
                continue
            full = str(d.locate_file(f))
            if full in seen or not os.path.isfile(full):
                continue
            seen.add(full)
            rel = Path(str(f)).as_posix()
            out.append(FileEntry(full, rel, f"{name}-{version}/{rel}", project=name, license=lic,
                                 meta={"distribution": f"{name}-{version}"}))
    return out


def list_files(spec: SourceSpec, prefix: bool) -> list[FileEntry]:
    """The Python files of a file-tree source, in a stable order."""
    pre = f"{spec.label}/" if prefix else ""
    if spec.kind == "installed":
        files = _installed_files(spec.root, spec.only)
        if prefix:
            for f in files:
                f.display = pre + f.display
        return files
    assert spec.root is not None
    if spec.kind == "stdlib":
        return [FileEntry(a, r, pre + r, c, license=STDLIB_LICENSE) for a, r, c in _walk(spec.root, STDLIB_SKIP_DIRS, True)]
    return [FileEntry(a, r, pre + r, c) for a, r, c in _walk(spec.root, TREE_SKIP_DIRS, False)]


# ---------------------------------------------------------------- opt-out

class OptOut:
    """The ``data.opt_out`` entries and how many files each removed."""

    def __init__(self, patterns: list[str]):
        self.patterns = list(patterns)
        self.counts = {p: 0 for p in self.patterns}
        self._kinds: list[tuple[str, str, Path | None]] = []
        for p in self.patterns:
            if any(c in p for c in "*?["):
                self._kinds.append(("glob", p, None))
            elif "/" in p or os.sep in p:
                rel = posixpath.normpath(p.replace(os.sep, "/"))
                self._kinds.append(("path", rel, Path(p).expanduser().resolve()))
            else:
                self._kinds.append(("name", p, None))
        self._names = [_canon(pat) if kind == "name" else "" for kind, pat, _ in self._kinds]

    def resolved(self) -> list[list[str | None]]:
        """``[kind, pattern, absolute path or None]`` of each entry: what the entries mean
        here (a path entry resolves against the working directory)."""
        return [[kind, pat, str(res) if res is not None else None] for kind, pat, res in self._kinds]

    def match(self, f: FileEntry, label: str) -> str | None:
        """The first entry that opts ``f`` out, or None."""
        for p, (kind, pat, resolved), name in zip(self.patterns, self._kinds, self._names):
            if kind == "glob":
                hit = any(fnmatch.fnmatchcase(s, pat) for s in (f.rel, f"{label}/{f.rel}", f.display, f.path))
            elif kind == "path":
                hit = (f.path == str(resolved) or f.path.startswith(str(resolved).rstrip(os.sep) + os.sep)
                       or any(s == pat or s.startswith(pat.rstrip("/") + "/") for s in (f.rel, f"{label}/{f.rel}", f.display)))
            else:
                hit = (name in {_canon(c) for c in f.checkouts} or (f.project is not None and _canon(f.project) == name)
                       or f.rel == pat or f.rel.startswith(pat + "/"))
            if hit:
                return p
        return None

    def apply(self, files: list[FileEntry], label: str) -> tuple[list[FileEntry], list[tuple[FileEntry, str]]]:
        """``(kept files, [(removed file, entry)])``; counts accumulate."""
        if not self.patterns:
            return files, []
        kept, removed = [], []
        for f in files:
            p = self.match(f, label)
            if p is None:
                kept.append(f)
            else:
                self.counts[p] += 1
                removed.append((f, p))
        return kept, removed

    @property
    def total(self) -> int:
        return sum(self.counts.values())
