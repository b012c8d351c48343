"""The one harness every benchmark case runs in: wall and CPU time, the memory and CPU of this
process and of the processes it starts (a local Ray's raylet, workers and actors are its
descendants), and one JSON line per case.

Processes are found and sampled with psutil; the kernel's exact peak-RSS mark (``VmHWM``) is
added where Linux provides it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psutil
import torch

__all__ = ["ProcessSampler", "emit", "peak_rss_mib", "reset_peak_rss", "run_case", "timed"]

T = TypeVar("T")


def timed(fn: Callable[[], T], device: torch.device | str = "cpu") -> tuple[T, float, float]:
    """``(fn(), wall seconds, CPU seconds of this process)``; waits for CUDA work on a GPU device."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn()
    if cuda:
        torch.cuda.synchronize()
    return result, time.perf_counter() - start, time.process_time() - cpu_start


def _kernel_memory_kib(pid: int) -> dict[str, int]:
    """Linux's peak-RSS mark ``VmHWM`` and private resident memory ``RssAnon`` of ``pid`` (KiB);
    empty where the kernel has no such file."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmHWM", "RssAnon")))
    except OSError:
        return {}
    return {key: int(value.split()[0]) for key, value in fields.items()}


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux ``clear_refs`` 5); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """This process's peak RSS since the last :func:`reset_peak_rss` (else since it started)."""
    kib = _kernel_memory_kib(os.getpid()).get("VmHWM")
    if kib is None:  # no VmHWM: the lifetime peak (ru_maxrss is KiB on Linux)
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024, 1)


class ProcessSampler:
    """Samples this process's descendants from a background thread while a job runs.

    The process tree is rescanned every ``rescan`` seconds and the known processes are sampled
    every ``interval`` seconds, to keep the sampler's own cost small on 2 cores. Per process: its
    titles (Ray retitles a worker when it becomes an actor), the largest RSS and private memory
    (RssAnon) sampled, the kernel's peak mark where available, and the CPU time used while watched (a process that exits
    loses at most its last ``interval``). Processes already running when the watch began with a
    title a summary asks for (a previous job's actors, shutting down) are left out of it.
    """

    def __init__(self, interval: float = 0.1, rescan: float = 0.5):
        self.interval, self.rescan = interval, rescan
        self.procs: dict[int, dict[str, Any]] = {}
        self.sampler_cpu_s = 0.0
        self._handles: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _scan(self) -> list[psutil.Process]:
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return list(self._handles.values())
        for child in children:
            self._handles.setdefault(child.pid, child)
        return [self._handles[c.pid] for c in children]

    def _sample(self, procs: list[psutil.Process], first: bool = False) -> None:
        for proc in procs:
            try:
                with proc.oneshot():
                    title = " ".join(" ".join(proc.cmdline()).split())[:200]  # Ray pads its titles
                    cpu = sum(proc.cpu_times()[:2])
                    rss = proc.memory_info().rss
            except psutil.Error:
                continue
            kernel = _kernel_memory_kib(proc.pid)
            record = self.procs.get(proc.pid)
            if record is None:
                record = self.procs[proc.pid] = {
                    "titles": set(), "start_title": title if first else "", "cpu0": cpu if first else 0.0,
                    "rss": 0, "anon": 0, "peak": 0,
                }  # fmt: skip
            record["cpu"] = cpu
            if title:  # an exiting process has none
                record["titles"].add(title)
            record["rss"] = max(record["rss"], rss)
            record["anon"] = max(record["anon"], 1024 * kernel.get("RssAnon", 0))
            record["peak"] = max(record["peak"], 1024 * kernel.get("VmHWM", 0), rss)

    def _run(self) -> None:
        cpu_start = time.thread_time()
        procs, scanned = [], 0.0
        while not self._stop.wait(self.interval):
            if time.monotonic() - scanned >= self.rescan:
                procs, scanned = self._scan(), time.monotonic()
            self._sample(procs)
        self._sample(self._scan())
        self.sampler_cpu_s = time.thread_time() - cpu_start

    def __enter__(self) -> ProcessSampler:
        self._sample(self._scan(), first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_seconds(self) -> float:
        """CPU time the descendants used while watched."""
        return sum(p.get("cpu", 0.0) - p["cpu0"] for p in self.procs.values())

    def cpu_by_title(self, top: int = 8) -> dict[str, float]:
        """CPU seconds used while watched, summed per process title (its Ray titles, else its program)."""
        totals: dict[str, float] = {}
        for proc in self.procs.values():
            words = {w for t in proc["titles"] for w in t.split(" ")}
            ray_titles = sorted(w for w in words if w.startswith("ray::") and not w.endswith("IDLE"))
            program = os.path.basename(min(proc["titles"], key=len, default="?").split(" ")[0])
            title = ",".join(ray_titles) or program
            totals[title] = totals.get(title, 0.0) + proc.get("cpu", 0.0) - proc["cpu0"]
        ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
        return {title: round(cpu, 2) for title, cpu in ranked}

    def peak(self, match: Callable[[str], bool]) -> dict[str, Any]:
        """Peak memory (MiB) of the largest watched process whose title ``match`` accepts."""
        procs = [
            p for p in self.procs.values()
            if any(map(match, p["titles"])) and not (p["start_title"] and match(p["start_title"]))
        ]  # fmt: skip
        if not procs:
            return {"processes": 0}
        top = max(procs, key=lambda p: p["peak"])
        titles = sorted(t for t in top["titles"] if match(t))
        return {
            "processes": len(procs),
            "title": next((t for t in titles if t.startswith("ray::")), titles[0]),
            "peak_rss_mib": round(top["peak"] / 2**20, 1),
            "sampled_rss_mib": round(top["rss"] / 2**20, 1),
            "sampled_anon_mib": round(top["anon"] / 2**20, 1),
        }

    def summary(self) -> dict[str, Any]:
        """Descendants while watched: how many, their CPU seconds and the largest one's peak."""
        largest = self.peak(lambda title: True) if self.procs else {"processes": 0}
        largest.pop("processes", None)
        return {"processes": len(self.procs), "cpu_s": round(self.cpu_seconds(), 2), "largest": largest}


def run_case(name: str, run: Callable[[Any], dict[str, Any]], args: Any) -> dict[str, Any]:
    """Run one case under the harness: its figures plus ``harness`` (wall and CPU seconds, this
    process's peak RSS since the case began or last reset it, and what its descendants used)."""
    reset_peak_rss()
    with ProcessSampler(interval=0.5, rescan=2.0) as sampler:
        figures, wall_s, cpu_s = timed(lambda: run(args), getattr(args, "device", "cpu"))
    out = {"case": name, **figures}
    out["harness"] = {
        "wall_s": round(wall_s, 2),
        "cpu_s": round(cpu_s, 2),
        "peak_rss_mib": peak_rss_mib(),
        "descendants": sampler.summary(),
    }
    return out


def emit(figures: dict[str, Any]) -> None:
    """Print one case's figures as one JSON line."""
    print(json.dumps(figures), flush=True)
