"""Starting flowgate processes for the Python tests."""

import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("FLOWGATE_BIN", os.path.join(ROOT, "target", "debug", "flowgate"))


def start(args, markers, stderr=subprocess.DEVNULL):
    """Starts flowgate with ARGS; returns (process, [text after each marker])."""
    proc = subprocess.Popen(
        [BIN, *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    found = []
    deadline = time.time() + 20
    for marker in markers:
        while True:
            assert time.time() < deadline, f"{args[0]} did not print {marker!r}"
            line = proc.stdout.readline()
            assert line, f"{args} exited early"
            if marker in line:
                found.append(line.split(marker, 1)[1].split()[0])
                break
    return proc, found
