"""`python -m training.train` with a record of the rows each optimizer step consumed, and an optional
SIGKILL: the training half of the fault tests.

    python tests/cluster/train_probe.py ROWS.jsonl KILL_AFTER_STEP -- <training.train arguments>

Each call of the loader's `next_step` appends one line to ROWS.jsonl (a digest per row and the number
of target tokens), flushed and fsynced before the step runs, so a killed process leaves every step it
started. KILL_AFTER_STEP > 0: the process SIGKILLs itself right after that optimizer step (no
handler, no atexit, no flush: the same as `kill -9` from outside).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys

from training import loop, train
from training.data import StepLoader


def record_rows(path: str) -> None:
    real = StepLoader.next_step

    def next_step(self):
        micro = real(self)
        rows = [hashlib.sha1(str(row).encode()).hexdigest()[:16] for b in micro for row in b.input_ids.tolist()]
        with open(path, "a") as f:
            f.write(json.dumps({"rows": rows, "targets": sum(b.n_targets for b in micro)}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return micro

    StepLoader.next_step = next_step


def kill_after(step: int) -> None:
    real = loop.Trainer._timed_step

    def timed_step(self):
        record = real(self)
        if self.step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return record

    loop.Trainer._timed_step = timed_step


if __name__ == "__main__":
    log, kill, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: train_probe.py ROWS.jsonl KILL_AFTER_STEP -- <training.train arguments>"
    record_rows(log)
    if int(kill) > 0:
        kill_after(int(kill))
    train.main(args)
