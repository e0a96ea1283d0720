"""``minicaffe train --gpu 0,1`` (or ``all``): one training process per GPU on this machine,
each a ``minicaffe train --gpu <id>`` told its rank and the NCCL id through the environment
(``world.COUNT_VAR`` ...), as Caffe's python/train.py forks one solver per GPU.

The parent only watches: when a child fails, the others are ended and the parent exits with
that child's status, so a dead rank never leaves the rest hanging.
"""
import logging
import os
import subprocess
import sys
import time

from . import world

log = logging.getLogger("minicaffe")
GRACE_S = 10.0


def child_argv(args, parser, gpu):
    """The ``minicaffe train`` arguments of the child on GPU ``gpu``: the parent's flags that
    differ from their defaults, with ``--gpu`` set to that one device."""
    out = ["train"]
    for name, value in vars(args).items():
        if name in ("command", "gpu") or value == parser.get_default(name):
            continue
        out.append(f"--{name}={value}")
    return out + [f"--gpu={gpu}"]


def child_env(rank, count, uid_text, base=None):
    env = dict(os.environ if base is None else base)
    env.update({world.COUNT_VAR: str(count), world.RANK_VAR: str(rank),
                world.UID_VAR: uid_text})
    return env


def watch(procs, poll_s=0.2):
    """Wait for every process; the first to fail ends the others. Returns the exit status."""
    while True:
        try:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                rank, code = failed[0]
                log.error("rank %d exited with status %d: ending the other ranks", rank, code)
                end_all(procs)
                return code
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll_s)
        except KeyboardInterrupt:
            # The children got the same Ctrl-C and act on it (stop, snapshot): keep watching.
            continue


def end_all(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(args, parser, gpu_ids):
    """Run one ``minicaffe train`` per GPU in ``gpu_ids``; returns the run's exit status."""
    from .nccl_comm import new_uid, uid_to_text
    uid = uid_to_text(new_uid())
    log.info("Using devices %s: one process per GPU, NCCL all-reduce",
             ", ".join(str(g) for g in gpu_ids))
    procs = [subprocess.Popen([sys.executable, "-m", "minicaffe"] +
                              child_argv(args, parser, gpu),
                              env=child_env(rank, len(gpu_ids), uid))
             for rank, gpu in enumerate(gpu_ids)]
    return watch(procs)
