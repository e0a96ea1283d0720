"""Parse Caffe-format training logs (ours or BVLC Caffe's) into rows of numbers.

Recognised lines (glog prefix optional):
  ... Iteration 100 (12.3 iter/s, 8.1s/100 iters), loss = 1.73   (newer Caffe)
  ... Iteration 100, loss = 1.73                                 (older Caffe)
  ... Iteration 100, lr = 0.001
  ... Iteration 1000, Testing net (#0)
  ...     Test net output #0: accuracy = 0.55
  ...     Train net output #0: loss = 1.7 (* 1 = 1.7 loss)
Seconds are taken from the glog timestamps (relative to the first one).
"""
import re
from datetime import datetime

_GLOG = re.compile(r"^[IWEF](\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d+)")
_ITER_LOSS = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = ([-+\d.eE]+|nan|inf)")
_ITER_LR = re.compile(r"Iteration (\d+), lr = ([-+\d.eE]+)")
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_TEST_OUT = re.compile(r"Test net output #(\d+): (\S+) = ([-+\d.eE]+|nan|inf)")
_TRAIN_OUT = re.compile(r"Train net output #(\d+): (\S+) = ([-+\d.eE]+|nan|inf)")


def _seconds(line, state):
    m = _GLOG.match(line)
    if not m:
        return None
    month, day, hh, mm, ss, frac = m.groups()
    t = datetime(2000, int(month), int(day), int(hh), int(mm), int(ss)).timestamp()
    t += float("0." + frac)
    if state.get("t0") is None:
        state["t0"] = t
    return round(t - state["t0"], 6)


def parse_log(lines):
    """Return (train_rows, test_rows): lists of dicts keyed by column name."""
    train, test = {}, {}
    state = {"t0": None, "lr": None, "test_iter": None, "test_net": 0, "train_iter": None}
    for line in lines:
        secs = _seconds(line, state)
        m = _TESTING.search(line)
        if m:
            state["test_iter"], state["test_net"] = int(m.group(1)), int(m.group(2))
            continue
        m = _ITER_LR.search(line)
        if m:
            it = int(m.group(1))
            state["lr"] = float(m.group(2))
            train.setdefault(it, {"NumIters": it, "Seconds": secs})["LearningRate"] = state["lr"]
            continue
        m = _ITER_LOSS.search(line)
        if m:
            it = int(m.group(1))
            row = train.setdefault(it, {"NumIters": it, "Seconds": secs})
            row["loss"] = float(m.group(2))
            state["train_iter"] = it
            continue
        m = _TRAIN_OUT.search(line)
        if m and state["train_iter"] is not None:
            train[state["train_iter"]][m.group(2)] = float(m.group(3))
            continue
        m = _TEST_OUT.search(line)
        if m and state["test_iter"] is not None:
            key = (state["test_iter"], state["test_net"])
            row = test.setdefault(key, {"NumIters": state["test_iter"], "Seconds": secs,
                                        "LearningRate": state["lr"], "TestNet": state["test_net"]})
            row[m.group(2)] = float(m.group(3))
    return ([train[k] for k in sorted(train)], [test[k] for k in sorted(test)])
