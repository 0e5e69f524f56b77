"""HumanEval functional correctness: pass@k by enumeration, the 164 problems through the sandbox, the metric end to end."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from collapse.errors import CollapseError
from collapse.metrics.humaneval import evaluate_humaneval, load_problems, pass_at_k, truncate_completion
from collapse.metrics.registry import REGISTRY, MetricContext

WRONG = "    return None\n"


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c of them correct) that hold a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (5, 0, 3), (5, 2, 1), (5, 2, 3), (5, 3, 3), (6, 1, 6),
                                   (8, 3, 2), (10, 1, 5), (10, 7, 4), (12, 4, 6)])
def test_pass_at_k_matches_enumeration(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_edges():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 8, 3) == 1.0  # n - c < k: every draw of 3 holds a correct one
    assert pass_at_k(200, 0, 100) == 0.0
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)


def test_problems_ship_with_the_package(problems):
    assert len(problems) == 164 and list(problems)[:2] == ["HumanEval/0", "HumanEval/1"]
    p = problems["HumanEval/0"]
    assert {"prompt", "canonical_solution", "test", "entry_point"} <= set(p) and p["entry_point"] == "has_close_elements"


def test_all_canonical_solutions_pass_and_stubs_fail(problems):
    good = evaluate_humaneval({t: [p["canonical_solution"]] for t, p in problems.items()}, k=(1,), progress=False)
    failing = {t: v["results"] for t, v in good["per_task"].items() if v["correct"] != 1}
    assert good["pass@1"] == 1.0, failing
    assert good["n_tasks"] == 164 and good["n_samples"] == 164
    bad = evaluate_humaneval({t: [WRONG] for t in problems}, k=(1,), progress=False)
    assert bad["pass@1"] == 0.0
    assert all(v["results"][0].startswith("failed: ") for v in bad["per_task"].values())


def test_mixed_set_gives_the_exact_pass_at_k(problems):
    ids = ["HumanEval/0", "HumanEval/2", "HumanEval/4"]
    sol = {t: problems[t]["canonical_solution"] for t in ids}
    loop = "    while True:\n        pass\n"
    completions = {
        ids[0]: [sol[ids[0]]] * 4,  # c = 4
        ids[1]: [WRONG, sol[ids[1]], loop, WRONG],  # c = 1, one of them runs forever
        ids[2]: [sol[ids[2]], WRONG, sol[ids[2]], "    return 1 / 0\n"],  # c = 2
    }
    out = evaluate_humaneval(completions, k=(1, 2, 5), timeout_s=1.0, progress=False)
    assert [out["per_task"][t]["correct"] for t in ids] == [4, 1, 2]
    assert out["pass@1"] == pytest.approx((4 / 4 + 1 / 4 + 2 / 4) / 3)
    # pass@2 = 1 - C(n-c, 2)/C(4, 2): 1, 1 - 3/6, 1 - 1/6.
    assert out["pass@2"] == pytest.approx((1 + (1 - 3 / 6) + (1 - 1 / 6)) / 3)
    assert "pass@5" not in out  # k above the number of completions per task is left out
    assert out["n_tasks"] == 3 and out["n_samples"] == 12
    results = out["per_task"][ids[1]]["results"]
    assert results[1] == "passed" and results[2].startswith("timeout") and results[0].startswith("failed: ")
    assert out["per_task"][ids[2]]["results"][3] == "failed: ZeroDivisionError: division by zero"


def test_unknown_task_ids_are_an_error():
    with pytest.raises(CollapseError, match="HumanEval/999") as e:
        evaluate_humaneval({"HumanEval/999": ["    return 1\n"]}, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(CollapseError):
        evaluate_humaneval({}, progress=False)
    with pytest.raises(CollapseError):
        evaluate_humaneval({"HumanEval/0": []}, progress=False)


def test_truncation_at_stop_sequences():
    assert truncate_completion("    return x\n\ndef other():\n    pass") == "    return x\n"
    assert truncate_completion("    return x\n# note\nprint(1)") == "    return x"
    assert truncate_completion("    return x  # fine\n") == "    return x  # fine\n"


def test_humaneval_metric_end_to_end_on_a_tiny_random_model(tmp_path):
    from collapse.config import ModelConfig, TokenizerConfig
    from collapse.lm.model import build_model
    from collapse.lm.tokenizer import train_tokenizer

    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(100)]
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=300, min_frequency=2))
    model = build_model(ModelConfig(preset="tiny"), len(tok), tok.eos_token_id, seed=0)
    settings = {"humaneval_n": 2, "humaneval_k": [1, 2], "humaneval_problems": 2, "humaneval_max_new_tokens": 16,
                "humaneval_temperature": 0.8, "humaneval_timeout_s": 3.0}
    ctx = MetricContext(tokenizer=tok, model=model, device=torch.device("cpu"), generation=1, seed=0,
                        settings=settings, artifact_dir=tmp_path)
    metric = REGISTRY["humaneval"]
    assert metric.needs_model and "Chen et al. 2021" in metric.doc
    out = metric.fn([], ctx)
    assert set(out) == {"humaneval_pass_at_1", "humaneval_pass_at_2"}
    assert all(v == 0.0 and math.isfinite(v) for v in out.values())
    rows = [json.loads(line) for line in (tmp_path / "humaneval.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"]
    assert all(r["n"] == 2 and r["correct"] == 0 and len(r["results"]) == 2 and len(r["completions"]) == 2 for r in rows)


FORGED_PASSES = [
    "    import os\n    os._exit(0)\n",
    "    raise SystemExit(0)\n",
    "    return None\nimport sys\nsys.exit(0)\n",  # sys.exit after the return, at module level: before the tests
    "    import sys\n    sys.exit()\n",
    "    import atexit, os\n    atexit.register(os._exit, 0)\n    return None\n",
    "    import os, threading\n    threading.Timer(0.0, os._exit, (0,)).start()\n    import time\n    time.sleep(1)\n"
    "    return None\n",
    "    import os\n    for fd in range(3, 64):\n        try:\n            os.write(fd, b'done\\n')\n"
    "        except OSError:\n            pass\n    os._exit(0)\n",  # a token-less done line on every descriptor
    "    import sys\n    print('SandboxViolation: blocked: network', file=sys.stderr)\n    return None\n",
    "    import sys\n    print('MemoryError', file=sys.stderr)\n    raise SystemExit(1)\n",
]


def test_forged_passes_score_zero_while_the_canonical_solution_passes(problems):
    tid = "HumanEval/0"
    out = evaluate_humaneval({tid: [problems[tid]["canonical_solution"]] + FORGED_PASSES}, k=(1,), progress=False)
    results = out["per_task"][tid]["results"]
    assert results[0] == "passed" and out["per_task"][tid]["correct"] == 1, results
    assert all(r.startswith("failed: ") for r in results[1:]), results
    assert results[1] == "failed: exited before the end of the program (exit status 0)"
    assert results[-2].startswith("failed: AssertionError") and results[-1] == "failed: exit code 1"
    forged = evaluate_humaneval({tid: FORGED_PASSES}, k=(1,), progress=False)
    assert forged["pass@1"] == 0.0


def test_completion_after_a_prompt_cut_before_its_trailing_whitespace():
    from collapse.metrics.humaneval import completion_after

    prompt = 'def f(x):\n    """Double."""\n'
    # The model, given the prompt without its last newline, writes the newline and the body.
    assert completion_after(prompt, "\n    return 2 * x\n") == "    return 2 * x\n"
    assert prompt + completion_after(prompt, "\n    return 2 * x\n") == prompt.rstrip() + "\n    return 2 * x\n"
    # A continuation of the same line is kept as written.
    assert completion_after(prompt, " # done\n") == " # done\n"


def test_the_old_module_name_gives_the_same_functions():
    """collapse.metrics.functional (the module's name before) still gives every public name, the same objects."""
    import collapse.metrics.functional as old
    import collapse.metrics.humaneval as new

    assert old.__all__ and all(getattr(old, n) is getattr(new, n) for n in old.__all__)
    assert {"evaluate_humaneval", "pass_at_k", "load_problems", "truncate_completion"} <= set(old.__all__)
