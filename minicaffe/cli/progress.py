"""The training progress bar on an interactive terminal."""
import sys


class Progress:
    """A tqdm bar (rate, ETA, loss) on an interactive stderr; nothing otherwise (nor when not
    ``shown``: the ranks of a parallel run other than 0)."""

    def __init__(self, handler, total, initial, shown=True):
        self.bar = None
        self.handler = handler
        if not shown or not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover
            return
        self.bar = tqdm(total=total, initial=initial, unit="iter", file=sys.stderr,
                        dynamic_ncols=True, leave=False)
        handler.bar = self.bar

    def __call__(self, solver):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss={solver.last_smoothed_loss:.4g}", refresh=False)

    def close(self):
        if self.bar is not None:
            self.handler.bar = None
            self.bar.close()
