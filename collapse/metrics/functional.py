"""The HumanEval metric's names from before its module was named after it: see :mod:`collapse.metrics.humaneval`."""

from collapse.metrics.humaneval import (STOP_SEQUENCES, build_program, completion_after, evaluate_humaneval, humaneval,
                                        load_problems, pass_at_k, truncate_completion)

__all__ = ["STOP_SEQUENCES", "build_program", "completion_after", "evaluate_humaneval", "humaneval", "load_problems",
           "pass_at_k", "truncate_completion"]
