"""The CPU benchmark's markdown table: minicaffe beside PyTorch's two layouts, with the
median and the spread of the per-pass ratios; some rows also go to the README table."""


def fmt_ratio(summary, digits=2):
    """(median, min, max) as its two ratio cells."""
    if summary is None:
        return " | "
    m, lo, hi = summary
    return f"{m:.{digits}f}× | {lo:.{digits}f}–{hi:.{digits}f}×"


class Table:
    def __init__(self, torch_cols):
        self.torch_cols = torch_cols
        self.lines = []   # (markdown line, goes to the README table)

    def header(self):
        if self.torch_cols:
            return ("| row | minicaffe | PyTorch NHWC | PyTorch NCHW | ratio to best, median "
                    "of passes | min–max of passes |\n|---|---:|---:|---:|---:|---:|")
        return "| row | minicaffe |\n|---|---:|"

    def add(self, name, ours, t_cl=None, t_nchw=None, unit="ms", ratios=None, readme=False):
        """A row of figures; ``ratios`` = (median, min, max) of the per-pass ratios."""
        if not self.torch_cols:
            self.line(f"| {name} | {ours:.2f} {unit} |", readme)
            return
        fmt = (lambda v: "—" if v is None else f"{v:.2f} {unit}")
        self.line(f"| {name} | {fmt(ours)} | {fmt(t_cl)} | {fmt(t_nchw)} | "
                  f"{fmt_ratio(ratios)} |", readme)

    def line(self, text, readme=False):
        self.lines.append((text, readme))

    def text(self, readme=False):
        return "\n".join([self.header()] + [t for t, r in self.lines if r or not readme])
