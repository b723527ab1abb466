"""The examples run as users would run them: the worker as a process (stopped with SIGTERM),
the producer against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.harness import Server

HERE = Path(__file__).resolve().parents[1]


def test_example_producer_and_worker(server: Server) -> None:
    # The examples use fixed queue names; no other test uses them.
    env = dict(os.environ, JOBWIRE_TARGET=server.target, PYTHONPATH=str(HERE))
    worker = subprocess.Popen(
        [sys.executable, str(HERE / "examples" / "worker.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        producer = subprocess.run(
            [sys.executable, str(HERE / "examples" / "producer.py")],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert producer.returncode == 0, producer.stdout + producer.stderr
        out = producer.stdout
        assert "COMPLETED -> {'sent_to': 'ada@example.com'}" in out, out
        assert "same job: True, duplicate: True" in out, out
        assert "dead: not an email address: 'nobody'" in out, out
        assert out.count("bytes after") == 3, out
        assert "bytes after 2 attempt(s)" in out, out
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            logs, _ = worker.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            logs, _ = worker.communicate()
    assert worker.returncode == 0, logs
    assert "worker stopped" in logs, logs
