"""Dataset cards: a short markdown ``README.md`` next to every saved dataset.

Two kinds of saved datasets get one:

- the prepared human corpus, ``<run.root>/_cache/human-<key>/README.md``
  (:func:`human_card`): sources, opt-outs honoured, the license breakdown,
  every filter step with its counts, redactions per kind, and rows,
  characters and content hash per split (tokens are counted per training
  set: the tokenizer is trained on this corpus afterwards);
- each generation's training set, ``gen_NNN/data/README.md``
  (:func:`training_card`): rows, characters and tokens per origin and
  generation (human vs the samples of generation k), the licenses of its
  rows, where the human part came from (with the counts of the corpus it
  was drawn from and a pointer to that corpus's card), which model wrote
  each synthetic part and the acceptance rates of its gates when recorded.

The content hash of a dataset is :func:`content_sha256`: sha256 over the
sorted ``sha256`` column (each row's hash as 32 raw bytes), so it names the
multiset of rows whatever their order. (A generation's ``manifest.json``
also holds a ``content_sha256``, over the rows in training order.)
"""

from __future__ import annotations

import hashlib
import weakref
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

__all__ = ["CARD_NAME", "content_sha256", "human_card", "training_card", "write_card"]

#: The card's file name inside a dataset folder.
CARD_NAME = "README.md"


def content_sha256(row_hashes: Iterable[str]) -> str:
    """sha256 over the sorted row hashes (hex strings), as raw bytes."""
    h = hashlib.sha256()
    for s in sorted(row_hashes):
        h.update(bytes.fromhex(s))
    return h.hexdigest()


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v).replace("|", "\\|")

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def _counts(d: dict[str, int] | None) -> str:
    items = [f"{k}={v:,}" for k, v in (d or {}).items() if v]
    return ", ".join(items) if items else "none"


def _sources_section(info: dict[str, Any]) -> list[str]:
    rows = []
    for s in info.get("sources", []):
        rows.append([f"`{s['spec']}`", s["kind"], s.get("files", "-"), s.get("unparsable_files", "-"),
                     s.get("extracted", "-")])
    lines = ["## Sources", "", _table(["source", "kind", "files read", "unparsable", "functions / rows"], rows)]
    if info.get("stdlib_version"):
        lines += ["", f"Standard library of Python {info['stdlib_version']} (license PSF-2.0, the Python Software "
                      "Foundation License Version 2; files with their own SPDX header keep theirs)."]
    return lines


def _opt_out_section(info: dict[str, Any]) -> list[str]:
    oo = info.get("opt_out") or {}
    pats = oo.get("patterns") or {}
    if not pats:
        return ["## Opt-out", "", "No opt-out entries configured (`data.opt_out`)."]
    return ["## Opt-out", "", f"{oo.get('files', 0):,} files removed before reading (`data.opt_out`):", "",
            _table(["entry", "files removed"], [[f"`{p}`", n] for p, n in pats.items()])]


def _license_section(info: dict[str, Any], cfg: Any) -> list[str]:
    lic = info.get("licenses") or {}
    lines = ["## Licenses", ""]
    if lic:
        lines.append(_table(["license", "files", "functions kept"], [[k, v["files"], v["kept"]] for k, v in lic.items()]))
    fd = info.get("files_dropped") or {}
    dropped = info.get("licenses_dropped") or {}
    lines += ["", f"Files dropped: {fd.get('license_not_allowed', 0):,} with a license not allowed, "
                  f"{fd.get('license_unknown', 0):,} with no license found"
              + (f" (by license: {_counts(dropped)})." if dropped else ".")]
    if cfg is not None:
        allowed = cfg.licenses_allowed
        lines += ["", "Allowed (`data.licenses_allowed`): " + (", ".join(f"`{a}`" for a in allowed) if allowed is not None
                                                              else "every license (no check)")
                  + f"; files without a license {'kept' if cfg.allow_unknown_license else 'dropped'} "
                    "(`data.allow_unknown_license`). Tabular and hub rows are `NOASSERTION`: not checked."]
    return lines


def _steps_section(info: dict[str, Any]) -> list[str]:
    rows = [[s["name"], s["seen"], s["kept"], _counts(s["dropped"]) if s["dropped"] else "-"] for s in info.get("steps", [])]
    lines = ["## Filters", "", "In order, after opt-out and the license check (`data.pipeline`):", "",
             _table(["step", "in", "out", "dropped"], rows)]
    capped = (info.get("dropped") or {}).get("max_examples", 0)
    if capped:
        lines += ["", f"Then `data.max_examples` kept a content-defined subset: {capped:,} dropped."]
    red = info.get("redactions")
    if red is not None:
        lines += ["", f"Redacted before anything was hashed, tokenized or saved: {_counts(red)} "
                      "(placeholders `<KEY>`, `<EMAIL>`, `<IP_ADDRESS>`; see `collapse.data.redact`)."]
    else:
        lines += ["", "Redaction of secrets and personal data was **off** (`redact` not in `data.pipeline`)."]
    return lines


def human_card(info: dict[str, Any], splits: Any, cfg: Any = None) -> str:
    """The card of a prepared human corpus (``splits``: a DatasetDict with ``text`` and ``sha256``)."""
    lines = [f"# Human corpus `human-{info.get('key', '?')}`", "",
             "Python functions with provenance (`source`: file and line span), `license` (SPDX) and `sha256`, "
             "split by content hash into train / validation / test / reference (held-out code for the human reference lines). Built by `collapse.data`.", ""]
    lines += _sources_section(info) + [""] + _opt_out_section(info) + [""] + _license_section(info, cfg) + [""]
    lines += _steps_section(info) + [""]
    rows, all_hashes, all_chars = [], [], 0
    for name in splits:
        ds = splits[name]
        hashes = list(ds["sha256"][:])  # [:]: the whole column at once, not row by row
        chars = sum(map(len, ds["text"][:]))
        rows.append([name, len(ds), chars, f"`{content_sha256(hashes)}`"])
        all_hashes += hashes
        all_chars += chars
    rows.append(["all", len(all_hashes), all_chars, f"`{content_sha256(all_hashes)}`"])
    lines += ["## Splits", "", _table(["split", "rows", "characters", "content sha256"], rows), "",
              "Tokens are counted in each generation's training-set card (the tokenizer is trained on this corpus "
              "afterwards). Content sha256: over the sorted row hashes.", ""]
    return "\n".join(lines)


#: Token counts already computed, per tokenizer and row hash: rows recur across generations' training sets.
_TOKEN_MEMO: "weakref.WeakKeyDictionary[Any, dict[str, int]]" = weakref.WeakKeyDictionary()


def _token_counts(tokenizer: Any, texts: list[str], hashes: list[str] | None = None, batch: int = 1000) -> list[int]:
    """Tokens of each text (no special tokens); memoized by row hash when ``hashes`` are given."""
    try:
        memo = _TOKEN_MEMO.setdefault(tokenizer, {}) if hashes is not None else {}
    except TypeError:  # a tokenizer that cannot be weakly referenced
        memo = {}
    todo = [i for i in range(len(texts)) if hashes is None or hashes[i] not in memo]
    counts: dict[int, int] = {}
    for lo in range(0, len(todo), batch):
        idx = todo[lo : lo + batch]
        for i, ids in zip(idx, tokenizer([texts[i] for i in idx], add_special_tokens=False)["input_ids"]):
            counts[i] = len(ids)
            if hashes is not None:
                memo[hashes[i]] = len(ids)
    return [counts[i] if i in counts else memo[hashes[i]] for i in range(len(texts))]  # type: ignore[index]


def training_card(train: Any, generation: int, regime: str, data_info: dict[str, Any] | None = None,
                  tokenizer: Any = None, *, gates: list[str] | None = None,
                  acceptance: dict[int, dict[str, float]] | None = None) -> str:
    """The card of one generation's training set (a Dataset with ``text``, ``origin``, ``generation``, ``sha256``).

    ``gates``: the run's ``sample.gates``; ``acceptance``: per synthetic generation, its
    ``gate.*accept_rate`` metrics (the run directory passes both)."""
    # [:]: whole columns at once (iterating a column goes row by row)
    texts = list(train["text"][:])
    origins, gens = list(train["origin"][:]), list(train["generation"][:])
    licenses = list(train["license"][:]) if "license" in train.column_names else None
    row_hashes = list(train["sha256"][:])
    tokens = _token_counts(tokenizer, texts, row_hashes) if tokenizer is not None else None
    groups: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    for i, (o, g) in enumerate(zip(origins, gens)):
        c = groups[(o, g)]
        c[0] += 1
        c[1] += len(texts[i])
        c[2] += tokens[i] if tokens is not None else 0
    rows = []
    for (o, g), (n, ch, tk) in sorted(groups.items(), key=lambda kv: (kv[0][0] != "human", kv[0][1])):
        label = "human" if o == "human" else f"synthetic, generation {g}"
        rows.append([label, n, ch, tk if tokens is not None else "-"])
    total = [sum(r[1] for r in rows), sum(r[2] for r in rows)]
    rows.append(["**total**", total[0], total[1], sum(tokens) if tokens is not None else "-"])
    lines = [f"# Training set of generation {generation} (`{regime}`)", "",
             f"{len(texts):,} rows; content sha256 (sorted row hashes) `{content_sha256(row_hashes)}`.", "",
             "## Composition", "", _table(["origin", "rows", "characters", "tokens"], rows), ""]
    if tokens is None:
        lines += ["(No tokenizer was given: tokens not counted.)", ""]
    if licenses is not None:
        lc = Counter(licenses)
        lines += ["## Licenses", "", _table(["license", "rows"], [[k, v] for k, v in sorted(lc.items())]), "",
                  "`NOASSERTION`: synthetic samples and tabular sources (no license asserted).", ""]
    if any(o == "human" for o in origins):
        di = data_info or {}
        lines += ["## Human data", ""]
        srcs = ", ".join(f"`{s['spec']}` ({s['kind']})" for s in di.get("sources", [])) or f"`{di.get('source', '?')}`"
        lines.append(f"Drawn from the human corpus `human-{di.get('key', '?')}` ({di.get('kept', '?')} functions kept "
                     f"of {di.get('extracted', '?')} extracted), read from {srcs}"
                     + (f", Python {di['stdlib_version']} standard library" if di.get("stdlib_version") else "") + ".")
        fd = di.get("files_dropped") or {}
        lines += ["", f"- opt-outs honoured: {fd.get('opt_out', 0):,} files removed",
                  f"- license check: {fd.get('license_not_allowed', 0):,} files with a license not allowed and "
                  f"{fd.get('license_unknown', 0):,} without one dropped",
                  f"- filters ({', '.join(s['name'] for s in di.get('steps', [])) or 'none'}): "
                  f"dropped {_counts(di.get('dropped')) if any((di.get('dropped') or {}).values()) else 'nothing'}",
                  f"- redactions: {_counts(di.get('redactions')) if di.get('redactions') is not None else 'off'}"]
        if di.get("key"):
            lines += ["", f"Full record: the corpus card `_cache/human-{di['key']}/README.md` under the run root."]
        lines.append("")
    syn = sorted({g for o, g in zip(origins, gens) if o != "human"})
    if syn:
        lines += ["## Synthetic data", "",
                  "Gates (`sample.gates`): " + (", ".join(gates) if gates else "none") + ".", ""]
        for g in syn:
            rates = (acceptance or {}).get(g) or {}
            rate_txt = "; acceptance " + ", ".join(f"{k[5:-12] or 'overall'}={v:.3g}"
                                                  for k, v in sorted(rates.items())) if rates else ""
            lines.append(f"- generation {g}: samples of `gen_{g:03d}/model` (see `gen_{g:03d}/samples`){rate_txt}")
        lines.append("")
    return "\n".join(lines)


def write_card(folder: Path, text: str) -> Path:
    path = Path(folder) / CARD_NAME
    tmp = path.with_name(f".{CARD_NAME}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path

