"""SIGINT/SIGHUP during training, handled as Caffe's SignalHandler (--sigint_effect ...)."""
import logging
import signal

log = logging.getLogger("minicaffe")


class SignalHandler:
    """Caffe's SignalHandler: SIGINT/SIGHUP set a flag; the solver asks after each iteration.

    A second SIGINT before the first was acted on aborts at once (KeyboardInterrupt).
    """

    def __init__(self, sigint_effect="stop", sighup_effect="snapshot"):
        self.effects = {"SIGINT": sigint_effect, "SIGHUP": sighup_effect}
        self.pending = {"SIGINT": False, "SIGHUP": False}
        self._old = {}

    def _on_signal(self, signum, frame):
        name = "SIGHUP" if signum == getattr(signal, "SIGHUP", None) else "SIGINT"
        if name == "SIGINT" and self.pending["SIGINT"]:
            raise KeyboardInterrupt
        self.pending[name] = True

    def __enter__(self):
        for name in ("SIGINT", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None:
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def get_action(self):
        for name in ("SIGINT", "SIGHUP"):
            if self.pending[name]:
                self.pending[name] = False
                effect = self.effects[name]
                if effect != "none":
                    log.info("%s received: %s", name, effect)
                return effect
        return "none"
