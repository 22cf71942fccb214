"""The README's first command works: make demo starts a gate whose example
calls answer as it says.  demo/run.py --check starts everything, runs each
example, asserts its status, what the upstream saw and a clean error log,
then stops and cleans up."""

import os
import subprocess
import sys

import pytest

from helpers.keys import build_dir


HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "..", "demo", "run.py")


@pytest.mark.skipif(bool(os.environ.get("TOLL_PRELOAD")),
                    reason="the demo runs nginx as a user would, without "
                           "the sanitizer runtime; make test runs it")
def test_demo_check_passes():
    out = subprocess.run([sys.executable, RUN, "--build", build_dir(),
                          "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "demo check: passed" in out.stdout
