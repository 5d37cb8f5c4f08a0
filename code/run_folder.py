"""A run's folder and what keeps runs from mixing in it: artefact checks, an exclusive lock, and
the signals a cluster scheduler sends before it kills a job.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal


class Interrupted(Exception):
    """Training stopped on SIGTERM or SIGINT after saving ``last.pth``; the message says how to
    resume."""


class RunFolder:
    """The folder of one run (``--out_dir``).

    :meth:`check` (before anything is written) refuses a folder that holds any artefact of a run
    unless it is resumed (``--resume``) or replaced (``--overwrite``); :meth:`open` creates it and
    takes an exclusive ``fcntl`` lock on ``.lock`` inside it for the life of the run, so a second
    run in the same folder stops with the PID of the one that holds it. With ``--overwrite`` the
    old run is set aside in ``.replaced`` and only removed when the new run ends (or stops on a
    signal with its own ``last.pth``); if the new run fails, the old one is put back. A
    ``.replaced`` that a killed replacement left behind is never removed: a further
    ``--overwrite`` is refused. A new run that fails before its first training step
    (:attr:`started`; bad data found while loading) removes what it wrote, and the folder if it
    made it, so the same command can be rerun.
    """

    ARTEFACTS = ("last.pth", "best.pth", "best.json", "config.json", "log.txt", "tb")
    REPLACED = ".replaced"

    def __init__(self, path: str, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        self.path, self.resume, self.overwrite = path, resume, overwrite
        self._lock = None
        self._made = False
        self.started = False  # set by the engine when the training loop begins

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def training_pid(self) -> str | None:
        """The PID (as ``.lock`` holds it) of a run training in this folder now, or None."""
        try:
            fd = os.open(self.file(".lock"), os.O_RDONLY)
        except OSError:  # none, or another user's: nothing to tell
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it (a shared lock is released when fd closes)
        except BlockingIOError:
            return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)

    def existing(self) -> list[str]:
        return [a for a in self.ARTEFACTS if os.path.exists(self.file(a))]

    def check(self) -> None:
        """FileExistsError / FileNotFoundError naming the folder, before anything is written."""
        if self.resume:
            if not os.path.exists(self.file("last.pth")):
                raise FileNotFoundError(f"--resume: {self.file('last.pth')} does not exist")
        elif self.existing() and not self.overwrite:
            raise FileExistsError(f"{self.path} already holds a run ({', '.join(self.existing())}); pass "
                                  "--resume to continue it, --overwrite to replace it, or another --exp")
        aside = self.file(self.REPLACED)
        if self.overwrite and os.path.exists(aside):
            raise FileExistsError(f"{aside} holds a run set aside by an --overwrite that has not ended (still "
                                  "running, or killed): another --overwrite would delete it; move its files back "
                                  f"into {self.path} or remove it first")

    def open(self) -> "RunFolder":
        """Create the folder and lock it; with ``overwrite``, then set the old run's files aside."""
        self._made = not os.path.exists(self.path)
        os.makedirs(self.path, exist_ok=True)
        lock = open(self.file(".lock"), "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise FileExistsError(f"{self.path} is in use by another run (PID {holder}); wait for it "
                                  "or choose another --exp") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock
        if self.overwrite:
            aside = self.file(self.REPLACED)
            os.makedirs(aside)  # none left by a killed replacement: check() refused that
            for a in self.existing():
                os.replace(self.file(a), os.path.join(aside, a))
        return self

    def close(self, failed: bool = False) -> None:
        """Release the lock; with ``overwrite``, drop the old run, or restore it if ``failed``."""
        if self._lock is None:
            return
        aside = self.file(self.REPLACED)
        if self.overwrite and os.path.isdir(aside):
            if failed:
                self._remove_artefacts()
                for a in os.listdir(aside):
                    os.replace(os.path.join(aside, a), self.file(a))
            _remove(aside)
        failed_start = failed and not self.started and not self.resume and not self.overwrite
        if failed_start:
            self._remove_artefacts()
        self._lock.close()  # closing the file releases the lock
        self._lock = None
        if failed_start and self._made and os.listdir(self.path) == [".lock"]:
            _remove(self.path)

    def _remove_artefacts(self) -> None:
        """Remove what a failed run wrote (its artefacts), before the old run is put back or
        the folder is left for a rerun."""
        for a in self.existing():
            _remove(self.file(a))

    def __enter__(self):
        return self.open()

    def __exit__(self, exc_type, exc, tb):
        self.close(failed=exc_type is not None and not issubclass(exc_type, Interrupted))


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


class StopSignals:
    """Within the ``with`` block, SIGTERM and SIGINT only set :attr:`received` (the signal's
    name), so the training loop can save and stop between two steps; handlers are restored on
    exit. Outside the main thread (where Python cannot install handlers) it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: str | None = None
        self._old = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __enter__(self):
        try:
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:
            self._old = {}
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
