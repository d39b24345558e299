"""Waiting for SIGTERM or SIGINT in a command's main thread (``splitmq.stop_signals``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

from splitmq.stop_signals import StopSignals


def test_a_signal_before_the_wait_is_not_lost_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.wait() is signal.SIGTERM
        assert signals.wait() is signal.SIGINT
    assert signal.getsignal(signal.SIGTERM) is before


# A command's shape: ready, then the main thread waits; SIGTERM comes the moment it
# says it is ready, as a supervisor (or a test) sends it. With an Event set from the
# handler, a signal landing while wait() held the event's lock hung the process (at
# the 51st of these rounds, in a run of that pattern on an idle machine).
COMMAND = textwrap.dedent(
    """
    import sys
    from splitmq.stop_signals import StopSignals

    with StopSignals() as signals:
        for _ in range(200):
            print("ready", flush=True)
            sys.stdin.readline()
            signals.wait()
            print("stopped", flush=True)
    """
)


def test_a_signal_the_moment_the_main_thread_starts_waiting_stops_it_every_time() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", COMMAND],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    watchdog = threading.Timer(60.0, process.kill)  # a hung process fails the test, not CI
    watchdog.start()
    try:
        for _ in range(200):
            assert process.stdout.readline() == "ready\n"
            process.stdin.write("\n")
            process.stdin.flush()
            process.send_signal(signal.SIGTERM)  # races the main thread into wait()
            assert process.stdout.readline() == "stopped\n"
        assert process.wait(60) == 0
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
