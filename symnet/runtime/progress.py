"""What fit shows and hears while it runs: a progress bar per epoch, and Ctrl-C
turned into a flag that stops training between compiled calls."""

from __future__ import annotations

import signal
import sys
import threading

try:   # signal's C module: signal.signal converts handlers to enums (~20 µs a fit call)
    import _signal as _sig
except ImportError:  # pragma: no cover - another Python
    _sig = signal

from .history import History


class Progress:
    """A tqdm bar over epochs; a plain line per epoch without tqdm."""

    def __init__(self, enabled, epochs: int, method: str):
        if enabled is None:
            enabled = sys.stderr is not None and sys.stderr.isatty()
        self.enabled, self.bar = bool(enabled), None
        if self.enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=epochs, desc=f"fit {method}", unit="epoch", leave=True)
            except ImportError:
                pass

    def epoch(self, hist: History):
        if not self.enabled:
            return
        info = {"loss": f"{hist.final_loss:.4g}"}
        for term, values in (getattr(hist, "terms", None) or {}).items():   # loss terms
            if values and term != "loss":
                info[term] = f"{values[-1]:.4g}"
        if hist.val_loss:
            info["val_loss"] = f"{hist.val_loss[-1]:.4g}"
        if hist.val_accuracy:
            info["val_acc"] = f"{hist.val_accuracy[-1]:.2%}"
        if self.bar is not None:
            self.bar.set_postfix(info)
            self.bar.update(1)
        else:
            print(f"epoch {hist.epochs}: " + ", ".join(f"{k} {v}" for k, v in info.items()),
                  file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class SigintFlag:
    """While active (main thread only), Ctrl-C sets ``raised`` instead of raising, so
    training stops between compiled calls with nothing half done.  A second Ctrl-C
    raises KeyboardInterrupt as usual."""

    def __init__(self):
        self.raised, self.old = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self.old = _sig.signal(signal.SIGINT, self._handle)
            except (ValueError, OSError):
                self.old = None
        return self

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc):
        if self.old is not None:
            _sig.signal(signal.SIGINT, self.old)
