"""The CPU benchmark's markdown table: minicaffe beside PyTorch's two layouts."""


class Table:
    def __init__(self, torch_cols):
        self.torch_cols = torch_cols
        self.lines = []

    def header(self):
        if self.torch_cols:
            return "| row | minicaffe | PyTorch NHWC | PyTorch NCHW | ratio to best |\n" \
                   "|---|---:|---:|---:|---:|"
        return "| row | minicaffe |\n|---|---:|"

    def add(self, name, ours, t_cl=None, t_nchw=None, unit="ms", ref=None):
        if not self.torch_cols:
            self.lines.append(f"| {name} | {ours:.2f} {unit} |")
            return
        fmt = (lambda v: "—" if v is None else f"{v:.2f} {unit}")
        best = ref if ref is not None else min((v for v in (t_cl, t_nchw) if v is not None),
                                               default=None)
        ratio = "" if best is None else f"{ours / best:.2f}×"
        self.lines.append(f"| {name} | {fmt(ours)} | {fmt(t_cl)} | {fmt(t_nchw)} | {ratio} |")

    def show(self):
        print(self.header())
        for line in self.lines:
            print(line)
        print(flush=True)
