"""A base code LM, pretrained once and reused: ``collapse pretrain RECIPE [key=value ...]``.

Collapse studies fine-tune a model that already writes code (Shumailov et al.
2024 start from OPT-125m). On a CPU the toolkit builds its own: a recipe of
the usual config tree (``data``, ``tokenizer``, ``model``, ``train``,
``pretrain``, ``run``) trained on a large offline corpus through the same data
pipeline. The result is stored content-addressed under the run root::

    <run.root>/_pretrained/<experiment>-<key>/checkpoint/   save_pretrained folder (weights + tokenizer
                                                           + collapse_pretrain.json)
                                              README.md     the card: corpus, tokens seen, held-out bpb,
                                                           how often samples parse, the command
                                              metrics.json  the same numbers
                                              DONE          written last

``key`` hashes everything that determines the model: the data, tokenizer,
model and train sections, the seed and the prepared corpus's key. Running the
same recipe again finds ``DONE`` and reuses the checkpoint; a run killed
midway resumes from its last saved training state
(``pretrain.checkpoint_every_s``) and ends with the same weights as an
uninterrupted one. Experiments start from it with
``model.init_from: pretrain:<recipe>`` (built on first use).

Held out: the corpus is split by content hash like every experiment's
(:func:`collapse.data.split.split_bucket`), so every function whose bucket
lies below ``data.val_fraction + data.test_fraction + data.reference_fraction``
of the recipe is never An experiment starting from the base must keep its own
validation, test and reference splits inside that range (checked by
:func:`resolve_init_from`); its training functions may well be among those
the base saw, as with any pretrained model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collapse.config import Config, SampleConfig
from collapse.errors import CollapseError
from collapse.registries import load_config
from collapse.syntax import parses
from collapse.rundir import check_writable
from collapse.seeding import torch_seed
from collapse.tracking import RunMirror, flatten, read_json, resolve_uri, write_json_atomic

log = logging.getLogger("collapse")

PREFIX = "pretrain:"


@dataclass
class PretrainResult:
    checkpoint: Path  # the save_pretrained folder
    directory: Path  # its content-addressed parent
    reused: bool  # found finished
    metrics: dict[str, Any] = field(default_factory=dict)


def pretrain_key(cfg: Config, corpus_key: str) -> str:
    """Hash of everything that determines the pretrained model."""
    return cfg.section_hash("data", "tokenizer", "model", "train",
                            extra={"seed": cfg.run.seed, "corpus": corpus_key, "v": 1})


def held_out_fraction(cfg: Config) -> float:
    """The share of content-hash buckets no model trained on (validation, test and reference)."""
    from collapse.data.split import held_out_fraction as data_held_out  # deferred: datasets

    return data_held_out(cfg.data)


class _DirLock:
    """An exclusive lock on a pretrain folder, held while it is written (released by the kernel on death)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("pretrain: %s is being written by another process; waiting for it", self.path.parent)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def parse_rates(model, tok, cfg: Config, device, precision: str, seed: int) -> dict[str, float]:
    """Share of ``pretrain.eval_samples`` unconditional samples that ``ast.parse`` accepts, per temperature."""
    from collapse.lm.sample import sample  # deferred: torch

    out = {}
    eos = tok.eos_token_id
    for t in cfg.pretrain.eval_temperatures:
        scfg = SampleConfig(temperature=float(t), max_new_tokens=cfg.sample.max_new_tokens,
                            batch_size=cfg.sample.batch_size)
        res = sample(model, [[eos]] * cfg.pretrain.eval_samples, scfg, eos, torch_seed(seed, 0, f"pretrain-eval:{t}"),
                     device, precision, progress=cfg.run.progress, desc=f"parse check T={t:g}")
        texts = tok.batch_decode(res.completion_ids, skip_special_tokens=True)
        out[f"parse_rate_t{t:g}"] = sum(parses(x) for x in texts) / max(len(texts), 1)
    return out


def _card(cfg: Config, key: str, info: dict, metrics: dict, command: str) -> str:
    split = info.get("split_sizes", {})
    licenses = info.get("licenses", {})
    kept = {k: (v.get("kept", 0) if isinstance(v, dict) else v) for k, v in licenses.items()}
    lic = ", ".join(f"{k}: {n:,} functions" for k, n in sorted(kept.items(), key=lambda kv: -kv[1]) if n)
    rates = " / ".join(f"{metrics[k]:.1%}" for k in sorted(metrics) if k.startswith("parse_rate_t"))
    temps = " / ".join(f"{t:g}" for t in cfg.pretrain.eval_temperatures)
    return f"""# Pretrained base `{cfg.run.experiment}-{key}`

Built by `{command}`.

| | |
|---|---|
| corpus | {cfg.data.source} through the data pipeline ({', '.join(cfg.data.pipeline)}); card: `{info.get('card')}` |
| functions | {split.get('train', '?')} train / {split.get('validation', '?')} validation / {split.get('test', '?')} test / {split.get('reference', '?')} reference (held out: content-hash buckets below {held_out_fraction(cfg):g}) |
| licenses | {lic} |
| model | {cfg.model.preset} preset, {metrics['parameters']:,} parameters, vocabulary {metrics['vocab_size']:,} |
| training | {metrics['train_steps']:,} steps, {metrics['train_tokens']:,} tokens seen ({metrics.get('train_flops', float('nan')):.3g} FLOPs, 6·N·tokens), {metrics['train_seconds']:.0f} s, precision {metrics['precision']} |
| held-out test | {metrics['test_ce']:.3f} nats/token, {metrics['test_bpb']:.3f} bits/byte |
| unconditional samples that parse (T = {temps}) | {rates} ({cfg.pretrain.eval_samples} samples each, {cfg.sample.max_new_tokens} tokens at most) |

Experiments start from it with `model.init_from: pretrain:<this recipe>`; their
validation, test and reference splits must lie inside the held-out buckets
(`data.val_fraction + data.test_fraction + data.reference_fraction` ≤ {held_out_fraction(cfg):g}).
"""


def run_pretrain(cfg: Config, command: str | None = None) -> PretrainResult:
    """Build the base of ``cfg`` (or find it built) and return where its checkpoint is."""
    import torch

    # deferred: datasets, tokenizers, torch and transformers (importing pretrain stays light for the CLI)
    from collapse.data import prepare_human_data
    from collapse.lm.generator import resolve_precision
    from collapse.lm.model import BASE_MARKER, build_model, count_parameters, pick_device, resolved_dims
    from collapse.lm.tokenizer import prepare_tokenizer, token_byte_lengths
    from collapse.lm.train import block_losses, pack, tokenize_texts, train, train_flops

    if cfg.model.init_from:
        raise CollapseError("collapse pretrain trains from scratch: model.init_from must be null")
    command = command or "collapse pretrain " + " ".join(sys.argv[2:])
    check_writable(cfg, run_dirs=False)  # an unwritable run.root: one line, before the data pipeline
    root = Path(cfg.run.root)
    human, info = prepare_human_data(cfg.data, root / "_cache", progress=cfg.run.progress)
    key = pretrain_key(cfg, info["key"])
    out = root / "_pretrained" / f"{cfg.run.experiment}-{key}"
    ckpt = out / "checkpoint"
    if (out / "DONE").exists():
        return _finished(out, ckpt)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CollapseError(f"run.root: cannot create {out}: {e.strerror}") from None
    with _DirLock(out / ".lock"):
        if (out / "DONE").exists():  # another process finished it while we waited
            return _finished(out, ckpt)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        t_start = time.perf_counter()
        tok_key = cfg.section_hash("tokenizer", extra=info.get("key"))
        tok, _ = prepare_tokenizer(list(human["train"]["text"]), cfg.tokenizer, root / "_cache", tok_key)
        eos = tok.eos_token_id
        seed = cfg.run.seed
        device = pick_device(cfg.train.device)
        precision = resolve_precision(cfg.train.precision, device)
        seq_len = resolved_dims(cfg.model)["seq_len"]
        model = build_model(cfg.model, len(tok), eos, torch_seed(seed, 0, "pretrain:init"))
        docs = tokenize_texts(tok, list(human["train"]["text"]))
        val_blocks = pack(tokenize_texts(tok, list(human["validation"]["text"])), eos, seq_len)
        test_blocks = pack(tokenize_texts(tok, list(human["test"]["text"])), eos, seq_len)
        if cfg.metrics.eval_tokens:
            cap = max(1, cfg.metrics.eval_tokens // seq_len)
            val_blocks, test_blocks = val_blocks[:cap], test_blocks[:cap]

        state_file = out / "state.json"
        state = read_json(state_file) if state_file.exists() else {}
        mirror = None
        if cfg.tracking.enabled:
            uri = resolve_uri(cfg.tracking.uri, root)
            mirror = RunMirror(uri, "pretrain", f"{cfg.run.experiment}-{key}", run_id=state.get("mlflow_run_id"),
                               artifact_root=root / "mlartifacts", tags={"pretrain_key": key, "command": command})
            state["mlflow_run_id"] = mirror.run_id
            write_json_atomic(state_file, state)
            mirror.log_params({k: v for k, v in flatten(cfg.to_dict()).items()
                               if k.split(".")[0] in ("data", "tokenizer", "model", "train", "pretrain")})
        log.info("pretrain %s: %d train functions, %d parameters, precision %s -> %s", cfg.run.experiment,
                 len(docs), count_parameters(model), precision, out)

        def on_log(step: int, values: dict[str, float]) -> None:
            if mirror is not None:
                mirror.log_metrics(values, step)

        res = train(model, docs, eos, seq_len, cfg.train, device, seed=torch_seed(seed, 0, "pretrain:train"),
                    val_blocks=val_blocks, progress=cfg.run.progress, desc="pretrain", precision=precision,
                    state_path=out / "train_state.pt", save_every_s=cfg.pretrain.checkpoint_every_s,
                    on_log=on_log, log_every=cfg.pretrain.log_every)
        token_bytes = torch.tensor(token_byte_lengths(tok))
        test = block_losses(model, test_blocks, device, precision, token_bytes=token_bytes)
        val = block_losses(model, val_blocks, device, precision)
        metrics: dict[str, Any] = {
            "train_steps": res.steps, "train_tokens": res.tokens, "train_seconds": res.seconds,
            "train_tokens_per_s": res.tokens_per_s, "train_loss": res.train_loss,
            "val_loss": val["nll"] / max(val["tokens"], 1), "test_ce": test["nll"] / max(test["tokens"], 1),
            "test_bpb": test["nll"] / (math.log(2) * max(test["bytes"], 1)),
            "train_flops": train_flops(count_parameters(model), res.tokens),
            "parameters": count_parameters(model), "vocab_size": len(tok), "precision": precision,
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()), "threads": torch.get_num_threads(),
        }
        metrics.update(parse_rates(model, tok, cfg, device, precision, seed))
        metrics["wall_seconds"] = time.perf_counter() - t_start

        # Publish: a temporary folder renamed into place, the card, then DONE.
        tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=out))
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / BASE_MARKER).write_text(json.dumps({"key": key, "experiment": cfg.run.experiment, "command": command,
                                                   "held_out_fraction": held_out_fraction(cfg), "metrics": metrics},
                                                  indent=2, sort_keys=True))
        if ckpt.exists():
            shutil.rmtree(ckpt)
        os.rename(tmp, ckpt)
        (out / "config.yaml").write_text(cfg.to_yaml())
        (out / "README.md").write_text(_card(cfg, key, info, metrics, command))
        write_json_atomic(out / "metrics.json", metrics)
        if mirror is not None:
            mirror.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, res.steps)
            mirror.log_artifact(out / "README.md")
            mirror.finish()
        (out / "DONE").write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
        (out / "train_state.pt").unlink(missing_ok=True)
        rates = ", ".join(f"T={k.removeprefix('parse_rate_t')}: {v:.0%}" for k, v in metrics.items() if k.startswith("parse_rate_t"))
        log.info("pretrain %s done in %.0f s: test %.3f bits/byte; samples that parse %s", cfg.run.experiment,
                 metrics["wall_seconds"], metrics["test_bpb"], rates)
        return PretrainResult(ckpt, out, reused=False, metrics=metrics)


def _finished(out: Path, ckpt: Path) -> PretrainResult:
    if not (ckpt / "config.json").exists():
        raise CollapseError(f"{out}: marked DONE but its checkpoint is missing; delete the folder to rebuild it")
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    log.info("pretrain: reusing %s", ckpt)
    return PretrainResult(ckpt, out, reused=True, metrics=metrics)


def resolve_init_from(cfg: Config) -> None:
    """Turn ``model.init_from: pretrain:<recipe>`` into the base's checkpoint folder (building the base
    on first use, under the experiment's run root and tracking), in place. Other values are left alone."""
    value = cfg.model.init_from
    if not value or not value.startswith(PREFIX):
        return
    recipe = value[len(PREFIX):]
    if not Path(recipe).is_file():
        raise CollapseError(f"model.init_from: no pretrain recipe at {recipe!r}")
    pcfg = load_config(recipe, {"run.root": cfg.run.root, "tracking.uri": cfg.tracking.uri,
                                "tracking.enabled": cfg.tracking.enabled, "run.progress": cfg.run.progress,
                                "run.threads": cfg.run.threads})
    held = held_out_fraction(pcfg)
    if held_out_fraction(cfg) > held + 1e-12:
        raise CollapseError(
            f"model.init_from: the base {recipe} trained on content-hash buckets from {held:g} up, but this "
            f"experiment evaluates on buckets below {held_out_fraction(cfg):g} "
            "(data.val_fraction + data.test_fraction + data.reference_fraction); "
            f"lower them to at most {held:g} in total")
    res = run_pretrain(pcfg, command=f"collapse pretrain {recipe}")
    cfg.model.init_from = str(res.checkpoint.resolve())
