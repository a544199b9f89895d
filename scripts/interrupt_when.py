"""Press Ctrl-C on a command once a file appears: ``python scripts/interrupt_when.py FILE -- CMD ...``.

The docs' Ctrl-C example uses it instead of ``timeout -s INT 2``, which on a slow machine fired
before the first epoch: here SIGINT goes to CMD only after FILE exists (e.g. the first
checkpoint), however long that takes. Exits with CMD's exit status (130 after Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    """Run ``CMD``, send it SIGINT when ``FILE`` exists, and return its exit status."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: interrupt_when.py FILE -- CMD [ARGS...]", file=sys.stderr)
        return 2
    path, cmd = argv[0], argv[2:]
    if os.path.exists(path):
        os.unlink(path)
    proc = subprocess.Popen(cmd)
    while proc.poll() is None:
        if os.path.exists(path):
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    code = proc.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
