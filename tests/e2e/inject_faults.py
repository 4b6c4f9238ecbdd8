"""Run the training CLI with a fault injected, for the reliability tests.

``python inject_faults.py nan_reward:2,3 <hydra overrides>``: every reward of iterations 2 and 3 is NaN.
``python inject_faults.py slow_eval:<file> <hydra overrides>``: each evaluation creates ``<file>`` and then
takes a minute, so a test can signal the process while it evaluates.
"""

import dataclasses
import sys
import time
from pathlib import Path

import medrlvr.evaluation.policy
from medrlvr.rewards.functions import CorrectnessReward

kind, _, spec = sys.argv.pop(1).partition(":")


def inject_nan_reward() -> None:
    bad_iterations = {int(i) for i in spec.split(",")}
    original = CorrectnessReward.__call__
    calls = [0]

    def nan_reward(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] in bad_iterations:
            output = dataclasses.replace(output, scores=[float("nan")] * len(output.scores))
        return output

    CorrectnessReward.__call__ = nan_reward


def inject_slow_eval() -> None:
    original = medrlvr.evaluation.policy.evaluate

    def slow_evaluate(*args, **kwargs):
        Path(spec).touch()
        time.sleep(60)
        return original(*args, **kwargs)

    medrlvr.evaluation.policy.evaluate = slow_evaluate


{"nan_reward": inject_nan_reward, "slow_eval": inject_slow_eval}[kind]()

from medrlvr.train import main  # noqa: E402

main()
