"""The human corpus: where the recursive loop's real data comes from.

:func:`load_human_corpus` reads Python functions (from the interpreter's
standard library by default, or a directory, a .jsonl/.parquet file, or a
datasets hub name) into rows with provenance (``text``, ``origin``,
``generation``, ``source``, ``sha256``), deduplicated and length-filtered.
:func:`split_corpus` splits them into train / validation / test by content
hash, so the split is the same in every run and generation and never leaks
a duplicate across splits. :func:`prepare_human_data` does both and caches
the result for every run that shares the data config.
"""

from collapse.data.corpus import extract_functions, load_human_corpus
from collapse.data.split import prepare_human_data, split_corpus

__all__ = ["extract_functions", "load_human_corpus", "split_corpus", "prepare_human_data"]
