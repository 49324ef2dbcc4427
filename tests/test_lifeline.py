"""natv2.lifeline: a stage watches the Snakemake that started it and stops when it dies."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from natv2.lifeline import Lifeline, start_time, watch_token


@pytest.fixture
def parent():
    """A stand-in for Snakemake: a process the test can kill."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


def test_start_time_tells_processes_apart(parent):
    assert start_time(parent.pid) is not None
    assert start_time(2**22 + 12345) is None
    assert watch_token(parent.pid) == f"{socket.gethostname()}:{parent.pid}:{start_time(parent.pid)}"


@pytest.mark.parametrize("token", [
    None, "", "garbage", "host:notapid:1",
    "another-host.example:1:1",  # a cluster job: the Snakemake on the node names itself
])
def test_tokens_of_nothing_here_watch_nothing(token):
    assert not Lifeline(token).active


def test_a_token_of_a_gone_or_reused_process_watches_nothing(parent):
    token = watch_token(parent.pid)
    host, pid, started = token.rsplit(":", 2)
    assert Lifeline(token).active
    assert not Lifeline(f"{host}:{pid}:{int(started) + 1}").active  # the pid, reused by another
    assert not Lifeline(watch_token()).active  # a process does not watch itself
    parent.kill()
    parent.wait()
    assert not Lifeline(token).active  # a stale environment: nothing to watch


def test_the_death_of_the_watched_process_interrupts_the_main_thread(parent):
    exits = []
    lifeline = Lifeline(watch_token(parent.pid), on_exit=exits.append).start()
    try:
        time.sleep(1.5)
        assert not lifeline.lost
        parent.kill()
        parent.wait()
        with pytest.raises(KeyboardInterrupt):
            for _ in range(100):
                time.sleep(0.1)
        assert lifeline.lost and exits == []
    finally:
        lifeline.stop()
