"""The human corpus: where the recursive loop's real data comes from.

:func:`load_human_corpus` reads Python functions (from the interpreter's
standard library by default, or directories, the installed distributions, a
.jsonl/.parquet file, a datasets hub name, or several of these) into rows
with provenance (``text``, ``origin``, ``generation``, ``source``,
``sha256``, ``license``). On the way it honours opt-outs, keeps only files
with an allowed license, redacts secrets and personal data, and removes
exact and near duplicates, generated code and malformed text, counting every
drop (:mod:`collapse.data.pipeline`). :func:`split_corpus` splits the corpus
into train / validation / test by content hash, so the split is the same in
every run and generation and never leaks a duplicate across splits.
:func:`prepare_human_data` does both and caches the result, with a dataset
card (:mod:`collapse.data.card`), for every run that shares the data config.

Modules: :mod:`~collapse.data.sources` (source specs, files, opt-out),
:mod:`~collapse.data.licenses`, :mod:`~collapse.data.redact`,
:mod:`~collapse.data.filters`, :mod:`~collapse.data.neardup` (MinHash LSH,
shared with the synthetic-data gates of :mod:`collapse.gates`),
:mod:`~collapse.data.pipeline`, :mod:`~collapse.data.card`.
"""

from collapse.data.corpus import extract_functions, load_human_corpus
from collapse.data.split import prepare_human_data, split_corpus

__all__ = ["extract_functions", "load_human_corpus", "split_corpus", "prepare_human_data"]
