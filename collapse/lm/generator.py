"""The code LM as a generator: fit / sample / evaluate over ``datasets`` rows.

Initialization per generation (``model.init_mode``):

- ``fresh``: a new random initialization every generation (seeded by
  (seed, generation)), or ``model.init_from`` when given;
- ``continue``: start from the previous generation's weights;
- ``base``: start every generation from the same checkpoint: ``model.init_from``
  when given, else the generation-0 model (trained on human data only), so
  later generations are fine-tunes of one human-trained base.

The generator never builds a path in the run directory: what it needs of
earlier generations (their checkpoints and samples) and where its metric
artifacts go, it asks the :class:`RunFiles` it was given (the run directory,
:class:`collapse.rundir.RunDirReader`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from collapse.config import Config
from collapse.data.licenses import NOASSERTION
from collapse.errors import CollapseError
from collapse.gates import (DedupGate, DedupReference, ExecutionGate, GateChain, PerplexityGate, SyntaxGate,
                            perplexities, perplexity_band)
from collapse.generator import Drawn
from collapse.lm.model import BASE_MARKER, build_model, count_parameters, load_model, pick_device, resolved_dims, runtime_info
from collapse.lm.sample import split_prompt, sample as sample_lm
from collapse.lm.tokenizer import token_byte_lengths
from collapse.lm.train import pack, tokenize_texts, train, train_flops
from collapse.metrics import MetricContext, compute
from collapse.metrics.diversity import unigram_counts
from collapse.mixing import MixSizes, required_human
from collapse.sandbox import Limits
from collapse.seeding import REFERENCE, generation_rng, torch_seed


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 autocast on CUDA; fp32 on CPUs, where bf16 only pays off
    with native bf16 instructions (AVX512-BF16/AMX) — on AVX2-only CPUs it runs
    several times slower (see BENCHMARKS.md)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    return "bf16" if ("AMX" in cap or "BF16" in cap) else "fp32"


def prompt_of(text: str, lines: int) -> str:
    """The first ``lines`` lines of a function (signature, then docstring), without the
    whitespace that ends them (see :func:`collapse.lm.sample.split_prompt`)."""
    return split_prompt(text, lines)[0]


class RunFiles(Protocol):
    """What the LM asks of its run directory (:class:`collapse.rundir.RunDirReader` is one)."""

    path: Path  # scratch space for multi-process training lives under it
    reference_dir: Path  # metric artifacts of the held-out human reference

    def checkpoint(self, generation: int) -> Path | None:
        """The saved model of a finished generation; None when it has not finished."""

    def samples_before(self, generation: int) -> dict[int, list[str]]:
        """Sample texts of the generations before ``generation``."""

    def staging(self, generation: int) -> Path:
        """Where generation ``generation``'s metric artifacts go until it is committed."""

    def model_ref(self, generation: int) -> str:
        """How a sample names the model of ``generation`` that wrote it."""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LMGenerator:
    """A transformers causal LM trained and sampled by the collapse loop."""

    def __init__(self, cfg: Config, tokenizer, human, files: RunFiles, progress: bool = True, label: str = "",
                 sizes: MixSizes | None = None):
        self.cfg = cfg
        self.sizes = sizes  # the regime's pool sizes: which human functions a model of this run trained on
        self.tok = tokenizer
        self.eos = tokenizer.eos_token_id
        self.files = files
        self.progress = progress
        self.label = label
        self.seq_len = resolved_dims(cfg.model)["seq_len"]
        self.device = pick_device(cfg.train.device)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self.runtime = runtime_info(self.device, self.precision)  # what the numbers depend on besides the config
        self.model = None
        self.timings: dict[str, float] = {}
        self.last_train = None

        val_ids = tokenize_texts(tokenizer, list(human["validation"]["text"]))
        test_ids = tokenize_texts(tokenizer, list(human["test"]["text"]))
        self.val_blocks = pack(val_ids, self.eos, self.seq_len)
        self.test_blocks = pack(test_ids, self.eos, self.seq_len)
        if cfg.metrics.eval_tokens:
            cap = max(1, cfg.metrics.eval_tokens // self.seq_len)
            self.val_blocks, self.test_blocks = self.val_blocks[:cap], self.test_blocks[:cap]
        self.human_counts = unigram_counts(tokenize_texts(tokenizer, list(human["train"]["text"])), len(tokenizer))
        self.token_bytes = torch.tensor(token_byte_lengths(tokenizer))
        # The reference lines: as many held-out, never-trained-on functions as each generation has samples.
        m = sizes.synthetic if sizes is not None else len(human["reference"])
        self.human_reference = list(human["reference"]["text"][:m])
        self.human_test = list(human["test"]["text"])  # prompt_ce scores completions of these
        self.human_train_texts = list(human["train"]["text"])
        self.human_train_sources = list(human["train"]["source"])
        # HumanEval's auto mode is for real pretrained models; a CPU base of `collapse pretrain` scores 0.
        own_base = bool(cfg.model.init_from) and (Path(cfg.model.init_from) / BASE_MARKER).exists()
        self.metric_names = cfg.metrics.resolved_names(pretrained=bool(cfg.model.init_from) and not own_base)
        self.metric_memo: dict = {}  # metric state kept across generations (e.g. the copy index)
        if cfg.sample.prompt == "signature":
            # Prompts come from the human training pool, never from the validation or test split: synthetic
            # training sets contain their prompts, and held-out losses must not score text trained on.
            pool = human["train"]["text"][: sizes.human] if sizes is not None else human["train"]["text"]
            self.prompt_texts = [prompt_of(t, cfg.sample.prompt_lines) for t in pool]
        else:
            self.prompt_texts = [""]
        self._human_metrics: dict[str, float] | None = None

    # ------------------------------------------------------------ protocol
    def _initial_model(self, generation: int):
        mode = self.cfg.model.init_mode
        seed = self.cfg.run.seed
        if generation > 0 and mode == "continue":
            if self.model is None:  # resumed: the previous generation is on disk
                self.model = load_model(self._checkpoint(generation - 1))
            return self.model
        if generation > 0 and mode == "base":
            if self.cfg.model.init_from:
                return build_model(self.cfg.model, len(self.tok), self.eos, seed)
            return load_model(self._checkpoint(0))
        init_seed = torch_seed(seed, generation if mode == "fresh" else 0, "init")
        return build_model(self.cfg.model, len(self.tok), self.eos, init_seed)

    def _checkpoint(self, generation: int) -> Path:
        path = self.files.checkpoint(generation)
        if path is None:
            raise CollapseError(f"generation {generation} has not finished: no checkpoint to start generation "
                                f"{generation + 1} from (model.init_mode={self.cfg.model.init_mode})")
        return path

    def save(self, path: Path) -> None:
        """Write the current model and its tokenizer: a checkpoint that loads on its own."""
        self.model.save_pretrained(str(path), safe_serialization=True)
        self.tok.save_pretrained(str(path))

    def fit(self, train_ds, generation: int) -> dict[str, float]:
        model = self._initial_model(generation)
        docs = tokenize_texts(self.tok, list(train_ds["text"]))
        t0 = time.perf_counter()
        kw = dict(seed=torch_seed(self.cfg.run.seed, generation, "train"), val_blocks=self.val_blocks,
                  progress=self.progress, desc=f"{self.label}gen {generation} train", precision=self.precision)
        if self.cfg.train.nproc > 1:
            from collapse.lm.ddp import fit_distributed  # deferred: torch.distributed, only for several processes

            model, res = fit_distributed(model, docs, self.eos, self.seq_len, self.cfg.train, self.device,
                                         nproc=self.cfg.train.nproc, workdir=self.files.path, **kw)
        else:
            res = train(model, docs, self.eos, self.seq_len, self.cfg.train, self.device, **kw)
        self.timings["train_s"] = time.perf_counter() - t0
        self.timings["train_tokens_per_s"] = res.tokens_per_s
        self.model = model
        self.last_train = res
        # Compute accounting: the tokens trained on and their FLOPs (6·N·tokens, N every parameter).
        n_params = count_parameters(model)
        return {**res.as_metrics(), "train_examples": len(train_ds), "model_params": n_params,
                "train_flops": train_flops(n_params, res.tokens)}

    def sample(self, n: int, generation: int) -> Drawn:
        """``n`` samples of the current model as rows with provenance.

        Without ``sample.gates`` this is one draw. With gates, every draw
        goes through them (:mod:`collapse.gates`); while fewer than ``n``
        passed, another round is drawn (seeded by (seed, generation,
        round); prompts continue where the last round stopped), up to
        ``sample.max_attempts`` rounds. The first ``n`` accepted samples in
        draw order are returned; when the rounds run out a warning names the
        shortfall and the generation goes on with fewer. The gates' counts
        are the returned :class:`Drawn`'s ``gate_stats`` (empty without gates).
        """
        s = self.cfg.sample
        if not s.gates or n <= 0:
            ds, secs, useful = self._draw(n, generation, torch_seed(self.cfg.run.seed, generation, "sample"), 0)
            self.timings["sample_s"] = secs
            self.timings["sample_tokens_per_s"] = useful / max(secs, 1e-9)
            return Drawn(ds)
        return self._sample_gated(n, generation)

    def _draw(self, n: int, generation: int, seed: int, offset: int):
        """One round of ``n`` samples (prompts from position ``offset`` of the prompt cycle):
        ``(dataset, seconds, useful tokens)``."""
        from datasets import Dataset

        s = self.cfg.sample
        texts = [self.prompt_texts[(offset + i) % len(self.prompt_texts)] for i in range(n)]
        prompts = [[self.eos] + (self.tok(t, add_special_tokens=False)["input_ids"] if t else []) for t in texts]
        t0 = time.perf_counter()
        out = sample_lm(self.model, prompts, s, self.eos, seed,
                        self.device, self.precision, progress=self.progress, desc=f"{self.label}gen {generation} sample")
        secs = time.perf_counter() - t0
        completions = self.tok.batch_decode(out.completion_ids, skip_special_tokens=True)
        rows = [p + c for p, c in zip(texts, completions)]
        model_ref = self.files.model_ref(generation)
        settings = json.dumps({"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
                               "max_new_tokens": s.max_new_tokens, "prompt": s.prompt, "prompt_lines": s.prompt_lines},
                              sort_keys=True)
        ds = Dataset.from_dict({
            "text": rows,
            "origin": ["synthetic"] * n,
            "generation": [generation] * n,
            "source": [model_ref] * n,
            "sha256": [sha256(t) for t in rows],
            "license": [NOASSERTION] * n,
            "prompt": texts,
            "n_tokens": [len(c) for c in out.completion_ids],
            "finished": out.finished,
            "sampling": [settings] * n,
        })
        return ds, secs, out.useful_tokens

    def _sample_gated(self, n: int, generation: int) -> Drawn:
        import logging
        import math

        from datasets import concatenate_datasets


        s = self.cfg.sample
        chain = GateChain(self._gates(generation))
        parts, have, drawn, attempts = [], 0, 0, 0
        sample_s = gate_s = 0.0
        useful = 0
        while have < n and attempts < s.max_attempts:
            need = n - have
            rate = have / drawn if drawn else 1.0
            m = need if attempts == 0 else min(n, max(need, math.ceil(1.1 * need / rate) if rate > 0 else n))
            seed = (torch_seed(self.cfg.run.seed, generation, "sample") if attempts == 0
                    else int(generation_rng(self.cfg.run.seed, generation, "resample").integers(0, 2**62, size=attempts)[-1]))
            ds, secs, u = self._draw(m, generation, seed, drawn)
            sample_s += secs
            useful += u
            t0 = time.perf_counter()
            cols = {"tests": list(ds["tests"][:])} if "tests" in ds.column_names else None
            verdict = chain(list(ds["text"][:]), cols)
            gate_s += time.perf_counter() - t0
            keep = [i for i, v in enumerate(verdict) if v is None]
            parts.append(ds.select(keep))
            have += len(keep)
            drawn += m
            attempts += 1
        per_gate = ", ".join(f"{g} {chain.accepted[g]}/{chain.seen[g]}" for g in s.gates)
        if have == 0:
            # An empty pool can be neither trained on nor saved: stop with the counts.
            raise CollapseError(f"sample.gates: none of the {drawn} samples of generation {generation} drawn in "
                                f"{attempts} rounds passed the gates (accepted/seen: {per_gate}); use fewer or looser "
                                "gates, or a larger sample.max_attempts")
        out = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        if len(out) > n:
            out = out.select(range(n))
        shortfall = n - len(out)
        logging.getLogger("collapse").info("%sgen %d gates: %d of %d drawn passed in %d rounds (accepted/seen: %s)",
                                           self.label, generation, have, drawn, attempts, per_gate)
        if shortfall:
            logging.getLogger("collapse").warning(
                "%sgen %d: the gates (%s) passed %d of %d samples drawn in %d rounds (sample.max_attempts); "
                "shortfall %d of the %d requested: the generation goes on with %d samples",
                self.label, generation, ", ".join(s.gates), have, drawn, attempts, shortfall, n, len(out))
        self.timings["sample_s"] = sample_s
        self.timings["sample_tokens_per_s"] = useful / max(sample_s, 1e-9)
        self.timings["gates_s"] = gate_s
        return Drawn(out, {**chain.metrics(), "gate.attempts": attempts, "gate.shortfall": shortfall})

    def _gates(self, generation: int) -> list:
        """The configured gates for ``generation``, in order."""
        s = self.cfg.sample
        out = []
        for name in s.gates:
            if name == "syntax":
                out.append(SyntaxGate())
            elif name == "dedup":
                out.append(DedupGate(self._dedup_reference(generation)))
            elif name == "perplexity":
                score, band = self._perplexity_scorer()
                out.append(PerplexityGate(score, band))
            elif name == "execution":
                out.append(ExecutionGate(Limits(timeout_s=s.gate_timeout_s, memory_mb=s.gate_memory_mb),
                                         progress=self.progress))
        return out

    def _dedup_reference(self, generation: int):
        """The pools a sample of ``generation`` must not repeat: the human train split and the saved
        samples of every earlier generation (kept across generations, grown from disk)."""
        ref = getattr(self, "_gate_dedup_ref", None)
        if ref is None:
            d = self.cfg.data
            ref = self._gate_dedup_ref = DedupReference(d.near_dedup_threshold, d.near_dedup_num_perm, d.near_dedup_ngram)
            ref.add_pool("human", self.human_train_texts)
        for g, texts in sorted(self._synthetic_history(generation).items()):
            ref.add_pool(g, texts)
        return ref

    def _perplexity_scorer(self):
        """``(score, band)`` of the perplexity gate: perplexity under the frozen generation-0 model, and the
        band of ``sample.gate_perplexity_band`` quantiles over held-out human functions (computed once)."""
        s = self.cfg.sample
        ref = self._reference_model()

        def score(texts: list[str]):
            return perplexities(ref, self.tok, texts, self.eos, self.device, self.precision, max_len=self.seq_len)

        band = getattr(self, "_gate_ppl_band", None)
        if band is None:
            band = self._gate_ppl_band = perplexity_band(score(self._perplexity_reference_texts()),
                                                         s.gate_perplexity_band)
        return score, band

    def _perplexity_reference_texts(self) -> list[str]:
        """The first ``sample.gate_perplexity_reference`` functions of the human validation split
        (read back from the prepared-data cache the experiment built)."""
        from collapse.data import prepare_human_data  # deferred: collapse.data loads datasets and the corpus code

        human, _ = prepare_human_data(self.cfg.data, Path(self.cfg.run.root) / "_cache", progress=False)
        return list(human["validation"]["text"][: self.cfg.sample.gate_perplexity_reference])

    def human_trained(self, generation: int) -> int | None:
        """How many leading functions of the human train split some model of this run trained on by
        ``generation`` (the generation-0 pool, plus the fresh chunks taken so far); None = unknown (all)."""
        if self.sizes is None:
            return None
        regime = self.cfg.mix.regime if isinstance(self.cfg.mix.regime, str) else self.cfg.mix.regime[0]
        return min(len(self.human_train_texts), required_human(regime, max(generation, 0), self.sizes))

    def context(self, generation: int) -> MetricContext:
        """Everything a metric may use at ``generation`` (``REFERENCE``, -1: the human reference)."""
        artifact_dir = self.files.staging(generation) if generation >= 0 else self.files.reference_dir
        return MetricContext(
            tokenizer=self.tok, model=self.model, device=self.device, precision=self.precision,
            generation=generation, seed=self.cfg.run.seed, settings={**self.cfg.metrics.settings(), "prompt_lines": self.cfg.sample.prompt_lines, "progress": self.progress},
            artifact_dir=artifact_dir, human_train_counts=self.human_counts,
            human_train_texts=self.human_train_texts, human_train_sources=self.human_train_sources,
            human_trained=self.human_trained(generation), human_test_texts=self.human_test, test_blocks=self.test_blocks, val_blocks=self.val_blocks,
            token_bytes=self.token_bytes, shared=self.metric_memo,
            loaders={"reference_model": self._reference_model,
                     "synthetic_history": lambda: self._synthetic_history(generation)},
        )

    def _reference_model(self):
        """The generation-0 model, frozen (a copy: ``continue`` keeps training the live one)."""
        import copy

        path = self.files.checkpoint(0)  # a finished generation 0, never a half-written one
        if path is not None:
            m = load_model(path).to(self.device)
        elif self.model is not None:
            m = copy.deepcopy(self.model)
        else:
            return None
        return m.eval()

    def _synthetic_history(self, generation: int) -> dict[int, list[str]]:
        """Samples of the generations before ``generation`` (from the run directory)."""
        return self.files.samples_before(generation)

    def human_metrics(self) -> dict[str, float]:
        """The sample metrics of held-out human code (the first ``mix.synthetic_size`` functions of the
        reference split, as many as each generation samples): the reference lines."""
        if self._human_metrics is None:
            vals = compute(self.metric_names, self.human_reference, self.context(REFERENCE), sample_metrics_only=True,
                           progress=self.progress, desc=f"{self.label}human reference metrics")
            self._human_metrics = {f"human.{k}": v for k, v in vals.items()}
        return self._human_metrics

    def evaluate(self, drawn: Drawn, generation: int) -> dict[str, float]:
        """Every configured metric of the samples and the model, the gates' counts of this
        generation's sampling, and the human reference lines."""
        drawn = Drawn.of(drawn)
        samples = drawn.samples
        t0 = time.perf_counter()
        texts = list(samples["text"])
        ctx = self.context(generation)
        out = compute(self.metric_names, texts, ctx, progress=self.progress, desc=f"{self.label}gen {generation} metrics")
        out["sample_eos_rate"] = float(np.mean(samples["finished"])) if len(samples) else 0.0
        self.timings["metrics_s"] = time.perf_counter() - t0
        self.timings.update({f"metric.{k}_s": v for k, v in ctx.timings.items()})
        out.update(drawn.gate_stats)  # acceptance per gate of this generation's sampling
        out.update(self.human_metrics())
        return out

    def release(self) -> Any:
        """Drop the model when the next generation re-initializes anyway (saves memory)."""
        if self.cfg.model.init_mode != "continue":
            self.model = None
