"""SIGINT / SIGTERM: deferred to the end of the iteration while training, at once otherwise or the second time."""

import os
import signal

import pytest

from medrlvr.training.signals import Stopped, StopSignals


def test_outside_an_iteration_a_signal_stops_at_once_with_its_exit_code():
    with StopSignals().installed() as signals:
        with pytest.raises(Stopped) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
    assert (stopped.value.signal_name, stopped.value.exit_code, str(stopped.value)) == ("SIGTERM", 143, "received SIGTERM")
    assert signals.requested == signal.SIGTERM


def test_during_an_iteration_the_first_signal_waits_and_the_second_stops_at_once():
    with StopSignals().installed() as signals, signals.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.requested == signal.SIGINT  # recorded, nothing raised
        with pytest.raises(Stopped) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.value.exit_code == 143 and not signals.deferring


def test_the_previous_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals().installed():
        pass
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
