"""A process's resident memory, sampled while a test drives it (the peak, not only the end:
a buffer freed afterwards still had to fit)."""

from __future__ import annotations

import threading

import psutil

MiB = 1024 * 1024


class RssWatch:
    """`with RssWatch(pid) as watch: ...` then `watch.start`, `watch.peak`, `watch.end`."""

    def __init__(self, pid: int, every_s: float = 0.01) -> None:
        self._process = psutil.Process(pid)
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-watch", daemon=True)
        self.start = self.peak = self.end = 0

    def rss(self) -> int:
        return self._process.memory_info().rss

    def __enter__(self) -> RssWatch:
        self.start = self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        self.end = self.rss()
        self.peak = max(self.peak, self.end)

    def _sample(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.peak = max(self.peak, self.rss())
            except psutil.Error:
                return

    def report(self) -> str:
        return (
            f"start {self.start / MiB:.1f} MiB, "
            f"peak {self.peak / MiB:.1f} MiB (+{(self.peak - self.start) / MiB:.1f}), "
            f"end {self.end / MiB:.1f} MiB (+{(self.end - self.start) / MiB:.1f})"
        )


class PeakRss:
    """A process's exact peak resident memory over a stretch of a test, from the kernel's
    own high-water mark (VmHWM), which Linux lets the process's owner reset (clear_refs 5):
    no sampling, so no spike is missed. `with PeakRss(pid) as rss: ...`, then `rss.before`
    (resident at the start), `rss.peak`, `rss.rise` (peak - before)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = 0

    def _status(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    def __enter__(self) -> PeakRss:
        with open(f"/proc/{self.pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # the high-water mark starts again from the resident memory now
        self.before = self._status("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        self.peak = self._status("VmHWM")

    @property
    def rise(self) -> int:
        return self.peak - self.before

    def report(self) -> str:
        return f"resident {self.before / MiB:.0f} MiB before, peak {self.peak / MiB:.0f} MiB (+{self.rise / MiB:.0f})"
