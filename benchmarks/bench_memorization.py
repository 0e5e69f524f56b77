"""Verbatim-copy index: build + query time on a synthetic 10-million-token corpus.

    python benchmarks/bench_memorization.py [--corpus-tokens 10000000] [--samples 10000 1000] [--repeats 3]

The corpus is Zipf-distributed token ids in documents of about 200 tokens
(seeded); the samples are about 150 tokens, a tenth of them with a planted
copy of 40-100 tokens from a random document. Timed end to end from token-id
lists, as the ``verbatim_copy`` metric sees them: flattening, building the
index, looking up every sample k-gram, rate, token share and the longest match
of each sample. Medians of the repeats are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

import numpy as np

from collapse.metrics.ngram_index import CopyIndex, TokenBatch

VOCAB = 50_257


def zipf_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.minimum(rng.zipf(1.1, n) - 1, VOCAB - 1)


def corpus(n_tokens: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(100, 301, n_tokens // 100 + 1)
    lengths = lengths[:np.searchsorted(np.cumsum(lengths), n_tokens) + 1]
    flat = zipf_ids(rng, int(lengths.sum()))
    cuts = np.cumsum(lengths)[:-1]
    return [d.tolist() for d in np.split(flat, cuts)]


def samples(docs: list[list[int]], n: int, seed: int = 1) -> tuple[list[list[int]], int]:
    """``n`` samples of 100-200 tokens; every tenth holds a 40-100-token copy. Returns (samples, planted)."""
    rng = np.random.default_rng(seed)
    out, planted = [], 0
    for i in range(n):
        s = zipf_ids(rng, int(rng.integers(100, 201))).tolist()
        if i % 10 == 0:
            d = docs[int(rng.integers(len(docs)))]
            m = min(int(rng.integers(40, 101)), len(d))
            a = int(rng.integers(0, len(d) - m + 1))
            at = int(rng.integers(0, len(s) + 1))
            s[at:at] = d[a:a + m]
            planted += 1
        out.append(s)
    return out, planted


def run(docs, queries, ks: list[int]) -> tuple[float, float, dict]:
    """(build seconds, query seconds, results at each k)."""
    t0 = time.perf_counter()
    idx = CopyIndex(docs, ks=ks)
    t1 = time.perf_counter()
    batch = TokenBatch(queries)
    res = {}
    for k in ks:
        scan = idx.scan(batch, k)
        res[k] = (scan.rate, scan.token_share)
        if k == ks[0]:
            m = idx.longest(batch, k, scan.hit)
            res["longest_max"] = int(m.length.max()) if len(m.length) else 0
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus-tokens", type=int, default=10_000_000)
    ap.add_argument("--samples", type=int, nargs="+", default=[10_000, 1_000])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    t = time.perf_counter()
    docs = corpus(a.corpus_tokens)
    print(f"corpus: {sum(map(len, docs)):,} tokens in {len(docs):,} documents (made in {time.perf_counter() - t:.1f} s)")
    for n in a.samples:
        queries, planted = samples(docs, n)
        print(f"\n{n:,} samples, {sum(map(len, queries)):,} tokens, {planted} with a planted copy")
        for ks in ([32], [32, 16, 64]):
            builds, queries_s, totals = [], [], []
            for _ in range(a.repeats):
                b, q, res = run(docs, queries, ks)
                builds.append(b)
                queries_s.append(q)
                totals.append(b + q)
            med = statistics.median
            detail = ", ".join(f"k={k}: rate {res[k][0]:.4f} share {res[k][1]:.4f}" for k in ks)
            print(f"  k={'+'.join(map(str, ks)):9s} build {med(builds):6.2f} s  query {med(queries_s):6.2f} s  "
                  f"total {med(totals):6.2f} s (median of {a.repeats})  [{detail}; longest {res['longest_max']}]")
    print(f"\npeak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
