"""Quality: how well the model predicts held-out human code, and whether its samples parse."""

from __future__ import annotations

import math
import warnings

from collapse.metrics.registry import MetricContext, register
from collapse.syntax import parse_tree, parses


@register("test_ce", needs_model=True)
def test_ce(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Held-out human cross-entropy of the model: ``test_ce`` in nats per token
    on the packed human test split, and ``test_bpb``, bits per UTF-8 byte
    (tokenizer-independent). Lower is better; rising across generations is the
    signature of collapse (Shumailov et al. 2024)."""
    from collapse.lm.train import block_losses  # torch: imported when used

    r = block_losses(ctx.model, ctx.test_blocks, ctx.device, ctx.precision, ctx.eval_batch_size, ctx.token_bytes)
    out = {"test_ce": r["nll"] / r["tokens"]}
    if r["bytes"]:
        out["test_bpb"] = r["nll"] / (math.log(2) * r["bytes"])
    return out


@register("val_loss", needs_model=True)
def val_loss(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Cross-entropy (nats/token) of the model on the packed human validation split."""
    from collapse.lm.train import block_losses  # torch: imported when used

    r = block_losses(ctx.model, ctx.val_blocks, ctx.device, ctx.precision, ctx.eval_batch_size)
    return {"val_loss": r["nll"] / r["tokens"]}


@register("syntax_valid")
def syntax_valid(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Share of samples that ``ast.parse`` accepts, in [0, 1]. Generated code is
    only parsed here, never executed."""
    if not samples:
        return {"syntax_valid": 0.0}
    return {"syntax_valid": sum(parses(s) for s in samples) / len(samples)}


def compiles(text: str) -> bool:
    """``compile()`` accepts it (stricter than parsing: e.g. ``return`` outside a
    function). Compiling does not run anything."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(text, "<sample>", "exec", dont_inherit=True)
            return True
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
            return False


def undefined_names(text: str) -> list[str] | None:
    """Names pyflakes reports as undefined in ``text``; None when it does not parse."""
    from pyflakes import checker, messages

    tree = parse_tree(text)
    if tree is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = checker.Checker(tree, filename="<sample>")
    return [m.message_args[0] for m in w.messages if isinstance(m, messages.UndefinedName)]


@register("static_checks")
def static_checks(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Static validity beyond parsing, each a share of all samples in [0, 1]:
    ``compile_ok`` (``compile()`` accepts it) and ``undefined_free`` (it compiles
    and pyflakes finds no undefined name: every name it reads is defined,
    imported or a builtin). A cheap proxy for code that could run; nothing is
    executed."""
    if not samples:
        return {"compile_ok": 0.0, "undefined_free": 0.0}
    ok = [compiles(s) for s in samples]
    free = [c and not undefined_names(s) for c, s in zip(ok, samples)]
    return {"compile_ok": sum(ok) / len(samples), "undefined_free": sum(free) / len(samples)}


@register("prompt_ce", needs_model=True)
def prompt_ce(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Cross-entropy of the model on the *completions* of a fixed set of
    held-out human functions given their prompts (the first
    ``sample.prompt_lines`` lines — the signature): ``prompt_ce`` in nats per
    completion token and ``prompt_bpb`` in bits per completion byte. The first
    ``metrics.subsample`` functions of the test split, the same every
    generation: how well the model still writes human code when asked to."""
    from collapse.lm.sample import split_prompt  # torch: imported when used
    from collapse.lm.train import sequence_nll  # torch: imported when used

    lines = int(ctx.setting("prompt_lines"))
    texts = (ctx.human_test_texts or [])[: int(ctx.setting("subsample"))]
    seqs, starts, nbytes = [], [], 0
    for t in texts:
        prompt, completion = split_prompt(t, lines)  # cut where the training tokenization cuts
        if not completion.strip():
            continue
        p = ctx.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = ctx.tokenizer(completion, add_special_tokens=False)["input_ids"]
        if not c:
            continue
        seqs.append(p + c)
        starts.append(len(p))
    if not seqs:
        return {"prompt_ce": float("nan"), "prompt_bpb": float("nan")}
    cfg = getattr(ctx.model, "config", None)
    max_len = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    nll, cnt = sequence_nll(ctx.model, seqs, ctx.tokenizer.eos_token_id, ctx.device, ctx.precision,
                            batch_size=ctx.eval_batch_size, max_len=max_len, score_from=starts)
    if ctx.token_bytes is not None:
        tb = ctx.token_bytes.numpy()
        for s, st in zip(seqs, starts):
            nbytes += int(tb[s[st:max_len - 1 if max_len else None]].sum())
    out = {"prompt_ce": float(nll.sum() / max(cnt.sum(), 1))}
    out["prompt_bpb"] = float(nll.sum() / (math.log(2) * nbytes)) if nbytes else float("nan")
    return out
