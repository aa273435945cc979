"""Load benchmark: nginx upstream, wrk load, one table into bench/RESULTS.md.

    make bench            (BENCH_DURATION=10 BENCH_CONNECTIONS=64 by default)

Targets, each at the same wrk settings against the same nginx upstream:
direct nginx; the minimal aiohttp pass-through (bench/minimal_proxy.py) and
authproxy on a public route, each with 1 and 2 worker processes. Everything
binds 127.0.0.1 on free ports and stops when its run ends.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
DURATION = int(os.environ.get("BENCH_DURATION", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
THREADS = 2
BODY = "x" * 1024  # a 1 KiB response, a typical small API answer

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type text/plain; return 200 "{body}"; }}
    }}
}}
"""


@dataclass
class Result:
    name: str
    workers: int | None
    rps: float
    p50_ms: float
    p99_ms: float
    peak_rss_mib: float | None
    errors: int
    cpu_us: float | None  # CPU time of the measured process tree per request: steadier than req/s here


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening")


def process_tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == parent:
                    pids.append(int(entry.name))
                    frontier.append(int(entry.name))
    return pids


def peak_rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def to_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, duration: int) -> tuple[float, float, float, int]:
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = 0
    for match in re.finditer(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in match.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return rps, p50, p99, errors


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(name: str, workers: int | None, port: int, pids: list[int]) -> Result:
    url = f"http://127.0.0.1:{port}/bench"
    run_wrk(url, 2)  # warm-up: connections, pools, caches
    cpu_before = cpu_seconds(pids)
    rps, p50, p99, errors = run_wrk(url, DURATION)
    cpu_us = (cpu_seconds(pids) - cpu_before) / (rps * DURATION) * 1e6 if pids else None
    rss = peak_rss_mib(pids) if pids else None
    result = Result(name, workers, rps, p50, p99, rss, errors, cpu_us)
    print(f"  {name:<28} workers={workers or '-'}  {rps:>9.0f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms"
          f"  rss {rss or 0:.0f} MiB  cpu {cpu_us or 0:.0f} us/req  errors {errors}", flush=True)
    return result


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench: {tool} is missing (make bench installs it)", file=sys.stderr)
            return 1
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", AWS_EC2_METADATA_DISABLED="true")
    nginx_port = free_port()
    (WORK / "nginx.conf").write_text(NGINX_CONF.format(work=WORK, port=nginx_port, body=BODY))
    nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(WORK / "nginx.conf"), "-p", str(WORK)])
    results: list[Result] = []
    try:
        wait_for(nginx_port)
        upstream = f"http://127.0.0.1:{nginx_port}"
        print(f"bench: {DURATION}s per target, {CONNECTIONS} connections, {THREADS} wrk threads", flush=True)
        results.append(measure("direct nginx", None, nginx_port, []))
        for workers in (1, 2):
            port = free_port()
            minimal = [
                subprocess.Popen([sys.executable, str(HERE / "minimal_proxy.py"), str(port), upstream], env=env,
                                 stderr=subprocess.DEVNULL)
                for _ in range(workers)
            ]
            try:
                wait_for(port)
                time.sleep(0.3)
                results.append(measure("minimal aiohttp pass-through", workers, port, [p.pid for p in minimal]))
            finally:
                for process in minimal:
                    stop(process)

            port, admin = free_port(), free_port()
            config = WORK / f"authproxy-{workers}.yaml"
            config.write_text(yaml.safe_dump({
                "listen": f"127.0.0.1:{port}",
                "admin_listen": f"127.0.0.1:{admin}",
                "workers": workers,
                "routes": [{"name": "bench", "upstream": upstream, "auth": "public"}],
            }))
            with open(WORK / f"authproxy-{workers}.log", "wb") as log:
                proxy = subprocess.Popen(
                    [sys.executable, "-m", "authproxy", "run", "--config", str(config)],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                )
                try:
                    wait_for(port)
                    time.sleep(1.0)  # all workers bound
                    results.append(measure("authproxy public route", workers, port, process_tree(proxy.pid)))
                finally:
                    stop(proxy)
    finally:
        stop(nginx)
    write_results(results)
    return 0


def write_results(results: list[Result]) -> None:
    minimal = {r.workers: r.rps for r in results if r.name.startswith("minimal")}
    minimal_cpu = {r.workers: r.cpu_us for r in results if r.name.startswith("minimal")}
    lines = [
        "| target | workers | req/s | p50 ms | p99 ms | peak RSS MiB | CPU µs/req | errors | req/s vs minimal | CPU vs minimal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = f"{r.rps / minimal[r.workers]:.2f}x" if r.workers in minimal else "-"
        cpu_ratio = f"{r.cpu_us / minimal_cpu[r.workers]:.2f}x" if r.cpu_us and minimal_cpu.get(r.workers) else "-"
        rss = f"{r.peak_rss_mib:.0f}" if r.peak_rss_mib is not None else "-"
        cpu = f"{r.cpu_us:.0f}" if r.cpu_us is not None else "-"
        lines.append(
            f"| {r.name} | {r.workers or '-'} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {rss} | {cpu} | {r.errors} "
            f"| {ratio} | {cpu_ratio} |"
        )
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    header = [
        "# Benchmark results",
        "",
        "Written by `make bench` (bench/run.py); each run replaces the load table (soak entries from `make soak` stay). Ratios compare runs of one",
        "session on one machine; absolute numbers vary with the machine and its neighbours.",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- load: wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}s against GET /bench; upstream nginx returns 1 KiB",
        "- authproxy: public route, access log on (to a file), metrics on; minimal: bench/minimal_proxy.py",
        "- the load generator, nginx and the proxy share the same cores; CPU µs/req is the measured",
        "  process tree's user+system time over the requests served (lower is better), steadier than req/s",
        "",
    ]
    # The soak runs' entries (make soak appends them) outlive a new load table.
    previous = (HERE / "RESULTS.md").read_text() if (HERE / "RESULTS.md").exists() else ""
    soaks = previous[previous.index("\n## Soak"):] if "\n## Soak" in previous else ""
    (HERE / "RESULTS.md").write_text("\n".join(header + lines) + "\n" + soaks)
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
