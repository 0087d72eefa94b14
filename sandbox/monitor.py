"""Resource usage of a running build, measured from the host with psutil."""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True, kw_only=True)
class ResourceUsage:
    """What a build used; sampled, so a very short build may show less than it used."""

    peak_memory_bytes: int = 0
    cpu_seconds: float = 0.0
    bytes_written: int = 0
    tasks_started: int = 0
    samples: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "peak_memory_bytes": self.peak_memory_bytes,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "bytes_written": self.bytes_written,
            "tasks_started": self.tasks_started,
            "samples": self.samples,
        }


class ResourceMonitor:
    """Samples the process tree under a container's first process.

    CPU time and bytes written count every live process plus what each has reaped
    (the kernel folds a reaped child's totals into its parent), so nothing is counted
    twice. Memory is the sum of resident set sizes, an upper bound when pages are shared.
    """

    def __init__(self) -> None:
        self.peak_memory_bytes = 0
        self.cpu_seconds = 0.0
        self.bytes_written = 0
        self.samples = 0
        self.current_memory_bytes = 0

    def sample(self, init_pid: int) -> None:
        """Take one sample; a vanished process tree leaves the last values in place."""
        try:
            init = psutil.Process(init_pid)
            processes = [init, *init.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        cpu = 0.0
        written = 0
        for process in processes:
            try:
                with process.oneshot():
                    rss += process.memory_info().rss
                    times = process.cpu_times()
                    cpu += times.user + times.system + times.children_user + times.children_system
                    written += process.io_counters().write_chars
            except psutil.Error:
                continue  # exited between listing and reading
        self.current_memory_bytes = rss
        self.peak_memory_bytes = max(self.peak_memory_bytes, rss)
        self.cpu_seconds = max(self.cpu_seconds, cpu)
        self.bytes_written = max(self.bytes_written, written)
        self.samples += 1

    def usage(self, *, tasks_started: int) -> ResourceUsage:
        return ResourceUsage(
            peak_memory_bytes=self.peak_memory_bytes,
            cpu_seconds=self.cpu_seconds,
            bytes_written=self.bytes_written,
            tasks_started=tasks_started,
            samples=self.samples,
        )
