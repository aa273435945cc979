"""Why does the public route's ratio to the minimal pass-through move between machines?

    python bench/run.py --investigate [--rounds 3] [--duration 4]      (about 7 minutes)

Measures, in interleaved rounds, the minimal pass-through and authproxy's public route with
its access log (stdout) in a file on ext4 (as in the table), in a file on tmpfs, on /dev/null,
and with ``log.access: false``, under three load set-ups:

- ``wrk -t2``: the table's set-up; wrk, nginx and the proxy share both cores;
- ``wrk -t2 + a busy neighbour``: the same while one extra process spins (another tenant);
- ``pinned`` (1 worker only): wrk -t1 and nginx on CPU 0, the proxy alone on CPU 1 (``taskset``).

For each: req/s and its ratio to the minimal pass-through (median and per-round range), CPU µs
per request of the proxy, read/write syscalls and context switches per request (from
/proc/PID/io and /status: fewer per request means more requests handled per event-loop pass),
wrk's CPU per request, and how much CPU other processes took. The finding is in bench/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402
from bench.stack import Stack, authproxy_config  # noqa: E402
from tests.support.processes import ProxyProcess, free_port  # noqa: E402


def pin(pids: list[int], cpus: str) -> None:
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def io_counters(pids: list[int]) -> tuple[int, int, int]:
    """(read syscalls, write syscalls, context switches) summed over ``pids`` and their threads."""
    reads = writes = switches = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("syscr:"):
                    reads += int(line.split()[1])
                elif line.startswith("syscw:"):
                    writes += int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    switches += int(line.split()[1])
        except OSError:
            pass
    return reads, writes, switches


class Neighbour:
    """One busy process (a pure-Python loop) standing in for another tenant's work."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def proxy_with_log(stack: Stack, workers: int, work: Path, name: str, log_to: Path | None, access_log: bool) -> ProxyProcess:
    """authproxy's public route with its stdout (the access log) in ``log_to`` (a file on ext4, on tmpfs,
    or /dev/null through a symlink), or with ``log.access: false``."""
    assert stack.nginx is not None and stack.provider is not None and stack.table is not None
    port = free_port()
    directory = work / name
    directory.mkdir(parents=True, exist_ok=True)
    if log_to is not None:
        log_to.parent.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.log").symlink_to(log_to)
    return ProxyProcess(
        authproxy_config(f"http://127.0.0.1:{port}", workers, stack.provider.issuer, stack.nginx.url, stack.table.url,
                         "30s", access_log=access_log),
        directory, name=name, port=port)


def main(args: argparse.Namespace) -> int:
    import shutil

    work = run.WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shm = Path("/dev/shm") / f"authproxy-bench-{__import__('os').getpid()}"
    workers = [int(w) for w in args.workers.split(",")]
    duration = args.duration if args.duration != run.DURATION else 4
    stack = Stack(work, workers, want_apache=False, want_cold=False)
    extra: dict[tuple[str, int], ProxyProcess] = {}
    samples: dict[tuple[str, str, int], list[run.Sample]] = {}
    io: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
    kinds = ["minimal", "public, log file on ext4", "public, log file on tmpfs", "public, log to /dev/null",
             "public, access log off"]
    variants = ["wrk -t2", "wrk -t2 + a busy neighbour", "pinned"]
    try:
        stack.start()
        for w in workers:
            extra[("tmpfs", w)] = proxy_with_log(stack, w, work, f"tmpfs-{w}", shm / f"access-{w}.log", True)
            extra[("null", w)] = proxy_with_log(stack, w, work, f"null-{w}", Path("/dev/null"), True)
            extra[("off", w)] = proxy_with_log(stack, w, work, f"off-{w}", None, False)
        nginx_pids = run.process_tree(stack.nginx.process.pid)  # type: ignore[union-attr]
        every_cpu = "0-%d" % ((__import__("os").cpu_count() or 2) - 1)
        for round_number in range(args.rounds):
            print(f"round {round_number + 1}/{args.rounds}", flush=True)
            for variant in variants:
                for w in workers:
                    if variant == "pinned" and w != 1:
                        continue
                    minimal = stack.minimal[w]

                    def tree(pid: int):  # type: ignore[no-untyped-def]
                        return lambda: run.process_tree(pid)

                    targets = [
                        run.Target(kinds[0], w, f"http://127.0.0.1:{minimal.port}/bench",
                                   pids=(lambda m: lambda: m.pids)(minimal)),
                        run.Target(kinds[1], w, f"{stack.proxies[w].url}/public/bench", pids=tree(stack.proxies[w].pid)),
                        run.Target(kinds[2], w, f"{extra[('tmpfs', w)].url}/public/bench", pids=tree(extra[("tmpfs", w)].pid)),
                        run.Target(kinds[3], w, f"{extra[('null', w)].url}/public/bench", pids=tree(extra[("null", w)].pid)),
                        run.Target(kinds[4], w, f"{extra[('off', w)].url}/public/bench", pids=tree(extra[("off", w)].pid)),
                    ]
                    for target in targets:
                        neighbour = Neighbour() if "neighbour" in variant else None
                        threads = 1 if variant in ("wrk -t1", "pinned") else 2
                        if variant == "pinned":
                            target.wrk_prefix = ["taskset", "-c", "0"]
                            pin(nginx_pids, "0")
                            pin(target.pids(), "1")
                        before = io_counters(target.pids())
                        try:
                            sample = run.measure(target, nginx_pids, duration, threads, args.connections)
                        finally:
                            if neighbour is not None:
                                neighbour.stop()
                            if variant == "pinned":
                                pin(nginx_pids, every_cpu)
                                pin(target.pids(), every_cpu)
                        after = io_counters(target.pids())
                        # the warm-up's requests are in the counters too: count them at the measured rate
                        requests = sample.rps * (duration + run.WARMUP)
                        io.setdefault((variant, target.key, w), []).append(
                            tuple((b - a) / requests for a, b in zip(before, after)))  # type: ignore[arg-type]
                        samples.setdefault((variant, target.key, w), []).append(sample)
                        print(f"  {variant:<27}" + run.describe(target, sample)
                              + "  syscalls r/w per req %.2f/%.2f  switches per req %.3f" % io[(variant, target.key, w)][-1],
                              flush=True)
    finally:
        for process in extra.values():
            process.stop()
        stack.stop()
        shutil.rmtree(shm, ignore_errors=True)

    med = run.median
    lines = [
        "| load set-up | workers | target | req/s median (range) | vs minimal (per-round range) | CPU µs/req (of which kernel) | "
        "read/write syscalls per req | context switches per req | wrk µs/req | other processes, % of a core |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in variants:
        for w in workers:
            if (variant, kinds[0], w) not in samples:
                continue
            m = samples[(variant, kinds[0], w)]
            for kind in kinds:
                runs, counters = samples[(variant, kind, w)], io[(variant, kind, w)]
                ratio = "-"
                if kind != kinds[0]:
                    ratios = [a.rps / b.rps for a, b in zip(runs, m)]
                    ratio = f"{med([s.rps for s in runs]) / med([s.rps for s in m]):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                lines.append(
                    f"| {variant} | {w} | {kind} | {med([s.rps for s in runs]):.0f} ({min(s.rps for s in runs):.0f}-"
                    f"{max(s.rps for s in runs):.0f}) | {ratio} | {med([s.cpu_us for s in runs]):.0f} "
                    f"({min(s.cpu_us for s in runs):.0f}-{max(s.cpu_us for s in runs):.0f}; "
                    f"{med([s.sys_us or 0 for s in runs]):.0f}) "
                    f"| {med([c[0] for c in counters]):.2f} / {med([c[1] for c in counters]):.2f} "
                    f"| {med([c[2] for c in counters]):.3f} | {med([s.wrk_cpu_us for s in runs]):.0f} "
                    f"| {med([s.foreign for s in runs]):.0f} |"
                )
    text = "\n".join(lines)
    print(text)
    (work / "investigate.md").write_text(text + "\n")
    return 0
