"""The NaN/inf guard: which tensors are flagged, the counters, and the stop after too many bad iterations."""

import pytest
import torch

from medrlvr.training.numerics import NumericsError, NumericsGuard, nonfinite


def test_nonfinite_names_nan_and_inf_tensors_only():
    ok, nan, inf = torch.ones(3), torch.tensor([1.0, float("nan")]), torch.tensor(float("-inf"))
    assert nonfinite(a=ok, b=nan, c=inf, d=None) == ["b", "c"]


def test_consecutive_bad_iterations_stop_the_run_and_good_ones_reset_the_count():
    guard = NumericsGuard(max_bad_updates=2)
    assert guard.record(1, ["loss"]) == {
        "numerics/skipped_update": 1.0, "numerics/bad_iterations": 1.0, "numerics/consecutive_bad": 1.0
    }
    assert guard.record(2, [])["numerics/consecutive_bad"] == 0.0
    guard.record(3, ["gradients"])
    with pytest.raises(NumericsError, match=r"2 consecutive iterations \(up to 4\).*advantages.*max_bad_updates=2"):
        guard.record(4, ["advantages"])
    assert guard.state_dict() == {"total_bad": 3, "consecutive_bad": 2}
