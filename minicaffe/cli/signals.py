"""SIGINT/SIGTERM/SIGHUP during training, handled as Caffe's SignalHandler (--sigint_effect ...).

SIGTERM, what a batch scheduler (Slurm, Kubernetes) sends before it kills a job, gets
SIGINT's effect, so ``--sigint_effect snapshot`` leaves a resumable snapshot there too.
"""
import logging
import signal

log = logging.getLogger("minicaffe")

_INTERRUPTS = ("SIGINT", "SIGTERM")   # both take --sigint_effect


class SignalHandler:
    """Caffe's SignalHandler: the signals set a flag; the solver asks after each iteration.

    A second SIGINT or SIGTERM before the first was acted on aborts at once
    (KeyboardInterrupt).
    """

    def __init__(self, sigint_effect="stop", sighup_effect="snapshot"):
        self.effects = {"SIGINT": sigint_effect, "SIGTERM": sigint_effect,
                        "SIGHUP": sighup_effect}
        self.pending = dict.fromkeys(self.effects, False)
        self._old = {}

    def _on_signal(self, signum, frame):
        name = signal.Signals(signum).name
        if name in _INTERRUPTS and any(self.pending[n] for n in _INTERRUPTS):
            raise KeyboardInterrupt
        self.pending[name] = True

    def __enter__(self):
        for name in self.effects:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def get_action(self):
        for name in self.effects:
            if self.pending[name]:
                self.pending[name] = False
                effect = self.effects[name]
                if effect != "none":
                    log.info("%s received: %s", name, effect)
                return effect
        return "none"
