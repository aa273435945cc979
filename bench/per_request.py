"""Where a request's cost goes, in figures that hold on a busy machine.

    python bench/per_request.py                         instructions (callgrind) and syscalls (strace) per request
    python bench/per_request.py --cprofile              plus Python functions by share of the worker's time
    python bench/per_request.py --targets inject --requests 3000 --connections 4

One authproxy (``workers: 1``: the process that serves is the one measured) in front of the
bench's nginx, with the bench's routes, dynalite store and a real sign-in (bench/stack.py).
For each target, after a warm-up, ``wrk -t1`` sends load for a fixed time and the figures are
divided by the requests it completed:

- ``Ir/req``: instructions the worker executed (valgrind's callgrind, instrumentation switched
  on only around the measured load). Repeatable within about 1 % whatever else the machine runs,
  unlike CPU time (bench/README.md: a core runs up to 1.5x slower when its neighbours are busy).
  Under callgrind the worker runs ~50x slower, so each event-loop pass finds more requests
  waiting than under wrk at full speed: the figure is the code's cost, a little below what
  one wake-up per request adds.
- syscalls per request by name (``strace -c -f`` attached to the worker at full speed).
- with ``--cprofile``: the top Python functions by own and cumulative time per request (the
  profiler's own overhead inflates every figure; the shares are what to read).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import stack as bench_stack  # noqa: E402
from tests.support.processes import ProxyProcess  # noqa: E402

PATHS = {"public": "/public/bench", "login": "/login/bench", "inject": "/inject/bench"}
WORKER = HERE / "profiled_worker.py"


class _Prefixed(ProxyProcess):
    """``authproxy run`` started through ``PREFIX`` (valgrind, or the cProfile wrapper)."""

    PREFIX: list[str] = []

    def __init__(self, settings: dict, workdir: Path, **kwargs: object) -> None:
        original = subprocess.Popen

        def popen(command: list[str], *args: object, **kw: object) -> subprocess.Popen:
            if command[:3] == [sys.executable, "-m", "authproxy"] and self.PREFIX:
                command = [*self.PREFIX, *command[3:]]
            return original(command, *args, **kw)  # type: ignore[call-overload]

        subprocess.Popen = popen  # type: ignore[misc]
        try:
            super().__init__(settings, workdir, wait=False, **kwargs)  # type: ignore[arg-type]
        finally:
            subprocess.Popen = original  # type: ignore[misc]
        self.wait_ready(timeout=600.0)


def wrk(url: str, cookie: str | None, seconds: int, connections: int) -> int:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    if cookie:
        command[1:1] = ["-H", f"Cookie: {cookie}"]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"wrk: {bad.group(1)} non-2xx answers from {url}")
    return requests


def callgrind_totals(out_dir: Path, pid: int) -> int:
    total = 0
    for path in out_dir.glob(f"callgrind.out.{pid}*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def measure_callgrind(proxy: ProxyProcess, out_dir: Path, url: str, cookie: str | None, seconds: int,
                      connections: int) -> float:
    for path in out_dir.glob(f"callgrind.out.{proxy.pid}*"):
        path.unlink()
    wrk(url, cookie, 2, connections)  # warm-up, uninstrumented
    subprocess.run(["callgrind_control", "-z", str(proxy.pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-i", "on", str(proxy.pid)], check=True, capture_output=True)
    requests = wrk(url, cookie, seconds, connections)
    subprocess.run(["callgrind_control", "-i", "off", str(proxy.pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-d", str(proxy.pid)], check=True, capture_output=True)
    print(f"  ({requests} requests measured)", flush=True)
    return callgrind_totals(out_dir, proxy.pid) / requests


def measure_strace(proxy: ProxyProcess, url: str, cookie: str | None, seconds: int, connections: int,
                   ) -> tuple[dict[str, float], float]:
    wrk(url, cookie, 1, connections)
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out.name, "-p", str(proxy.pid)],
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        cpu_before = _cpu(proxy.pid)
        requests = wrk(url, cookie, seconds, connections)
        cpu = _cpu(proxy.pid) - cpu_before
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
        calls: dict[str, float] = {}
        for line in out.read().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3]) / requests
    return calls, cpu / requests * 1e6


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="public,login,inject")
    parser.add_argument("--seconds", type=int, default=10, help="measured load per target (callgrind)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--no-callgrind", action="store_true")
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args()
    targets = args.targets.split(",")
    work = Path(tempfile.mkdtemp(prefix="authproxy-profile-"))
    bench_stack.ProxyProcess = _Prefixed  # type: ignore[misc]
    modes = ([] if args.no_callgrind else ["callgrind"]) + ([] if args.no_strace else ["strace"]) + (
        ["cprofile"] if args.cprofile else [])
    results: dict[str, dict[str, object]] = {t: {} for t in targets}
    for mode in modes:
        if mode == "callgrind":
            _Prefixed.PREFIX = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                f"--callgrind-out-file={work}/callgrind.out.%p", sys.executable, "-m", "authproxy"]
        elif mode == "cprofile":
            _Prefixed.PREFIX = [sys.executable, str(WORKER), f"{work}/cprofile"]
        else:
            _Prefixed.PREFIX = []
        stack = bench_stack.Stack(work / mode, [1], want_apache=False, want_cold=False,
                                  access_log=not args.no_access_log)
        try:
            stack.start()
            proxy = stack.proxies[1]
            for target in targets:
                url = proxy.url + PATHS[target]
                cookie = None if target == "public" else stack.session_cookie
                if mode == "callgrind":
                    ir = measure_callgrind(proxy, work, url, cookie, args.seconds, args.connections)
                    results[target]["Ir/req"] = ir
                    print(f"{target:8} {ir:12,.0f} instructions/request", flush=True)
                elif mode == "strace":
                    calls, cpu = measure_strace(proxy, url, cookie, 4, args.connections)
                    results[target]["syscalls"] = calls
                    shown = ", ".join(f"{name} {n:.2f}" for name, n in sorted(calls.items(), key=lambda kv: -kv[1])
                                      if n >= 0.01)
                    print(f"{target:8} syscalls/request: {shown}  (cpu {cpu:.0f} us/req under strace)", flush=True)
                else:
                    wrk(url, cookie, 1, args.connections)
                    os.kill(proxy.pid, signal.SIGUSR1)  # the wrapper starts profiling
                    time.sleep(0.2)
                    requests = wrk(url, cookie, 5, args.connections)
                    os.kill(proxy.pid, signal.SIGUSR2)  # ... stops, writes its stats
                    time.sleep(1.0)
                    _print_profile(Path(f"{work}/cprofile.{proxy.pid}"), requests, target)
        finally:
            stack.stop()
    return 0


def _print_profile(path: Path, requests: int, target: str) -> None:
    import pstats

    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"--- {target}: {requests} requests, profiled {total / requests * 1e6:.0f} us/req "
          "(inflated by the profiler; read the shares)")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:30]  # type: ignore[attr-defined]
    for (file, line, name), (_, calls, own, cumulative, _) in rows:
        short = file.replace(str(ROOT) + "/", "").replace(sys.prefix, "~")
        print(f"  own {own / total * 100:5.1f}%  cum {cumulative / total * 100:5.1f}%  calls/req {calls / requests:5.2f}"
              f"  {name} ({short}:{line})")
    print(f"  (stats kept in {path}: python -m pstats)")


if __name__ == "__main__":
    sys.exit(main())
