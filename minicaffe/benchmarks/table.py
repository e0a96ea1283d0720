"""The CPU benchmark's markdown table: minicaffe beside PyTorch's two layouts, with the
ratio of the medians and the spread of the per-pass ratios; some rows also go to the README
table."""
from .stats import ratio


def fmt_spread(spread, digits=2):
    return "" if spread is None else f"{spread[0]:.{digits}f}–{spread[1]:.{digits}f}×"


class Table:
    def __init__(self, torch_cols):
        self.torch_cols = torch_cols
        self.lines = []   # (markdown line, goes to the README table)

    def header(self):
        if self.torch_cols:
            return ("| row | minicaffe | PyTorch NHWC | PyTorch NCHW | ratio to best | "
                    "ratio spread (passes) |\n|---|---:|---:|---:|---:|---:|")
        return "| row | minicaffe |\n|---|---:|"

    def add(self, name, ours, t_cl=None, t_nchw=None, unit="ms", spread=None, readme=False):
        """A row of figures; ``spread`` = (min, max) of the per-pass ratios."""
        if not self.torch_cols:
            self.line(f"| {name} | {ours:.2f} {unit} |", readme)
            return
        fmt = (lambda v: "—" if v is None else f"{v:.2f} {unit}")
        r = ratio(ours, (t_cl, t_nchw))
        self.line(f"| {name} | {fmt(ours)} | {fmt(t_cl)} | {fmt(t_nchw)} | "
                  f"{'' if r is None else f'{r:.2f}×'} | {fmt_spread(spread)} |", readme)

    def line(self, text, readme=False):
        self.lines.append((text, readme))

    def text(self, readme=False):
        return "\n".join([self.header()] + [t for t, r in self.lines if r or not readme])
