"""Run the training CLI with a fault injected, for the reliability tests.

``python inject_faults.py nan_reward:2,3 <hydra overrides>``: every reward of iterations 2 and 3 is NaN.
"""

import dataclasses
import sys

from medrlvr.rewards.functions import CorrectnessReward

kind, _, spec = sys.argv.pop(1).partition(":")
bad_iterations = {int(i) for i in spec.split(",")}
original = CorrectnessReward.__call__
calls = [0]


def nan_reward(self, *args, **kwargs):
    output = original(self, *args, **kwargs)
    calls[0] += 1
    if calls[0] in bad_iterations:
        output = dataclasses.replace(output, scores=[float("nan")] * len(output.scores))
    return output


assert kind == "nan_reward", kind
CorrectnessReward.__call__ = nan_reward

from medrlvr.train import main  # noqa: E402

main()
