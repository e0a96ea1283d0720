"""Training loss and test outputs of Caffe logs drawn to a PNG (the plot_training_log tool).

matplotlib is imported only when a plot is drawn, so the rest of minicaffe works without it.
"""
import os
import sys

from .parsing import parse_log

USAGE = """Plot training loss and test outputs (e.g. accuracy) of a Caffe log to a PNG.

Usage: python tools/plot_training_log.py LOGFILE OUT.png [LOGFILE2 ...]
Several logs are drawn on the same axes, labelled by file name. Needs matplotlib."""


def plot(logs, out_png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_test) = plt.subplots(1, 2, figsize=(11, 4))
    for log in logs:
        with open(log, errors="replace") as f:
            train, test = parse_log(f)
        name = os.path.basename(log)
        pts = [(r["NumIters"], r["loss"]) for r in train if "loss" in r]
        if pts:
            ax_loss.plot(*zip(*pts), label=name)
        outputs = [k for r in test for k in r
                   if k not in ("NumIters", "Seconds", "LearningRate", "TestNet")]
        for key in dict.fromkeys(outputs):
            if key == "loss" and "accuracy" in outputs:
                continue
            pts = [(r["NumIters"], r[key]) for r in test if key in r and r["TestNet"] == 0]
            if pts:
                ax_test.plot(*zip(*pts), marker="o", label=f"{name}: {key}")
    ax_loss.set(xlabel="iteration", ylabel="training loss", title="Training loss")
    ax_test.set(xlabel="iteration", ylabel="value", title="Test net outputs")
    for ax in (ax_loss, ax_test):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def main_plot_training_log(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(USAGE)
        return 2
    logs = [argv[0]] + argv[2:]
    for log in logs:
        if not os.path.exists(log):
            sys.stderr.write(f"plot_training_log: error: {log}: no such file\n")
            return 1
    plot(logs, argv[1])
    print(f"wrote {argv[1]}")
    return 0
