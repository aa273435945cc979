"""Load benchmark: authproxy against a minimal pass-through and Apache httpd + mod_auth_openidc.

    make bench                                  the whole table (about 12 minutes), into bench/RESULTS.md
    python bench/run.py --quick                 one short round of everything, printed only
    python bench/run.py --targets public,minimal --workers 2 --rounds 5
    python bench/run.py --investigate           the public-route ratio experiments (bench/README.md)

Targets (``--targets``, comma-separated keys), each at the same wrk settings against the same
nginx upstream, for workers 1 and 2:

    direct         nginx itself (no proxy)
    minimal        bench/minimal_proxy.py, the least an aiohttp pass-through does
    public         authproxy, auth: public
    login          authproxy, auth: login, session cached, nothing injected
    inject         the same, injecting Authorization: Bearer {access_token} + X-User-Email + X-User-Groups
    cold           the inject route on an authproxy whose session cache lives 1 ms (every request reads
                   the store: dynalite on loopback; 64 signed-in sessions used in turn)
    bearer         authproxy, auth: bearer, a valid RFC 9068 JWT (aud enforced), 2 claim headers
    fwd            authproxy's forward-auth /oauth2/auth for a signed-in caller (the inject route's headers)
    apache-login   Apache + mod_auth_openidc, signed in, injecting the same three headers
    apache-bearer  Apache + mod_auth_openidc as an OAuth 2.0 resource server (JWT against the JWKS, same aud)
    fwd-rate       forward-auth at a constant 1,000 req/s (bench/rate.py): p50/p95/p99 from scheduled send

Rounds interleave: every target runs once per round, and the table gives each target's median
and range over the rounds. Everything binds 127.0.0.1 on free ports and stops when the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import apache as apache_peer  # noqa: E402
from bench import rate as rate_generator  # noqa: E402
from bench.stack import Stack  # noqa: E402

WORK = HERE / ".work"
DURATION = int(os.environ.get("BENCH_DURATION", "8"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
WARMUP = 1
RATE = 1000.0
ALL_TARGETS = ["direct", "minimal", "public", "login", "inject", "cold", "bearer", "fwd", "apache-login", "apache-bearer",
               "fwd-rate"]
LABELS = {
    "direct": "direct nginx",
    "minimal": "minimal aiohttp pass-through",
    "public": "authproxy public route",
    "login": "authproxy login, cached session, nothing injected",
    "inject": "authproxy login, cached, Bearer + 2 claim headers",
    "cold": "authproxy login, cache 1 ms (store read), Bearer + 2 claims",
    "bearer": "authproxy bearer route, valid JWT, 2 claim headers",
    "fwd": "authproxy forward-auth /oauth2/auth, signed in",
    "apache-login": "Apache + mod_auth_openidc, signed in, Bearer + 2 claims",
    "apache-bearer": "Apache + mod_auth_openidc, oauth20 resource server (JWT)",
}
# Which Apache row a target is compared with.
PEER = {"login": "apache-login", "inject": "apache-login", "cold": "apache-login", "fwd": "apache-login",
        "bearer": "apache-bearer", "public": "apache-login", "apache-login": "apache-login",
        "apache-bearer": "apache-bearer"}
FORWARD_HEADERS = [("X-Original-URI", "/inject/bench"), ("X-Original-Method", "GET")]


# --- processes and their counters ---------------------------------------------------------------

def process_tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            pids.append(int(child))
            frontier.append(int(child))
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


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids``, all their threads."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_split(pids))


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal, sum(values[:8])


def to_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def scrape(admin_url: str) -> dict[str, float]:
    """The samples of authproxy's /metrics that the bench reads, summed by what it needs."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(admin_url + "/metrics", timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    totals = {"store_get": 0.0, "store_ops": 0.0, "requests": 0.0, "authenticated": 0.0, "cache_misses": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "authproxy_store_operation_duration_seconds_count":
                totals["store_ops"] += sample.value
                if sample.labels.get("operation") == "get":
                    totals["store_get"] += sample.value
            elif sample.name == "authproxy_requests_total":
                totals["requests"] += sample.value
            elif sample.name == "authproxy_auth_total" and sample.labels.get("outcome") in ("session", "bearer"):
                totals["authenticated"] += sample.value
            elif sample.name == "authproxy_session_cache_misses_total":
                totals["cache_misses"] += sample.value
    return totals


# --- one measurement ----------------------------------------------------------------------------

@dataclass
class Target:
    key: str
    workers: int | None
    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    cookies: list[str] = field(default_factory=list)  # more than one: used in turn (wrk Lua script)
    pids: Callable[[], list[int]] = list
    admin_url: str | None = None  # authproxy: where its metrics are
    side_pids: Callable[[], list[int]] = list  # the store, whose CPU is reported apart
    wrk_prefix: list[str] = field(default_factory=list)  # e.g. taskset for the investigation

    @property
    def label(self) -> str:
        return LABELS.get(self.key, self.key)


@dataclass
class Sample:
    rps: float
    p50: float
    p99: float
    errors: int
    cpu_us: float | None = None
    rss: float | None = None
    wrk_cpu_us: float | None = None
    upstream_cpu_us: float | None = None
    store_cpu_us: float | None = None
    steal: float = 0.0  # % of the machine's time stolen by the hypervisor during the run
    busy: float = 0.0  # % of both cores busy
    foreign: float = 0.0  # CPU (% of one core) used by processes outside target, wrk, upstream and store
    store_gets_per_req: float | None = None
    store_ops_per_req: float | None = None
    p95: float | None = None
    send_lag_p99: float | None = None
    sys_us: float | None = None  # the kernel's part of cpu_us


def wrk_script(target: Target) -> Path | None:
    if len(target.cookies) <= 1:
        return None
    path = WORK / f"wrk-{target.key}-{target.workers}.lua"
    entries = ",\n".join(json.dumps(cookie) for cookie in target.cookies)
    fixed = "".join(f"  headers[{json.dumps(name)}] = {json.dumps(value)}\n" for name, value in target.headers)
    path.write_text(
        f"local cookies = {{\n{entries}\n}}\nlocal n = 0\n"
        "request = function()\n  n = n + 1\n  local headers = {}\n" + fixed
        + "  headers[\"Cookie\"] = cookies[(n % #cookies) + 1]\n  return wrk.format(nil, nil, headers)\nend\n"
    )
    return path


def run_wrk(target: Target, duration: int, threads: int, connections: int,
            upstream_pids: list[int]) -> tuple[float, float, float, int, float]:
    """req/s, p50, p99, errors, upstream CPU seconds."""
    command = [*target.wrk_prefix, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    script = wrk_script(target)
    if script is not None:
        command += ["-s", str(script)]
    else:
        headers = list(target.headers) + ([("Cookie", target.cookies[0])] if target.cookies else [])
        for name, value in headers:
            command += ["-H", f"{name}: {value}"]
    command.append(target.url)
    upstream_before = cpu_seconds(upstream_pids)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=duration + 60)
    if process.returncode:
        raise RuntimeError(f"wrk failed: {err.strip()[:500]}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = 0
    for match in re.finditer(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in match.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return rps, p50, p99, errors, cpu_seconds(upstream_pids) - upstream_before


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(target: Target, upstream_pids: list[int], duration: int = DURATION, threads: int = THREADS,
            connections: int = CONNECTIONS) -> Sample:
    run_wrk(target, WARMUP, threads, connections, [])  # warm-up: connections, pools, caches
    pids = target.pids()
    side = target.side_pids()
    metrics_before = scrape(target.admin_url) if target.admin_url else None
    (user_before, sys_before), side_before = cpu_split(pids), cpu_seconds(side)
    machine_before = machine_ticks()
    children_before = children_cpu()
    rps, p50, p99, errors, upstream_cpu = run_wrk(target, duration, threads, connections, upstream_pids)
    wrk_cpu = children_cpu() - children_before  # wrk is the only child reaped in between
    machine_after = machine_ticks()
    requests = rps * duration
    sample = Sample(rps, p50, p99, errors)
    if pids:
        user_after, sys_after = cpu_split(pids)
        sample.cpu_us = (user_after - user_before + sys_after - sys_before) / requests * 1e6
        sample.sys_us = (sys_after - sys_before) / requests * 1e6
        sample.rss = peak_rss_mib(pids)
    if side:
        sample.store_cpu_us = (cpu_seconds(side) - side_before) / requests * 1e6
    sample.wrk_cpu_us = wrk_cpu / requests * 1e6
    sample.upstream_cpu_us = upstream_cpu / requests * 1e6 if upstream_pids and target.key not in ("fwd",) else None
    total = machine_after[2] - machine_before[2] or 1
    sample.busy = 100.0 * (machine_after[0] - machine_before[0]) / total
    sample.steal = 100.0 * (machine_after[1] - machine_before[1]) / total
    ours = ((sample.cpu_us or 0) + (sample.store_cpu_us or 0) + (sample.wrk_cpu_us or 0)
            + (sample.upstream_cpu_us or 0)) * requests / 1e6
    busy_seconds = (machine_after[0] - machine_before[0]) / os.sysconf("SC_CLK_TCK")
    sample.foreign = max(0.0, 100.0 * (busy_seconds - ours) / duration)
    if metrics_before is not None:
        time.sleep(1.2)  # with workers, the supervisor sums the workers' snapshots once a second
        after = scrape(target.admin_url)  # type: ignore[arg-type]
        served = (after["authenticated"] - metrics_before["authenticated"]) or (after["requests"] - metrics_before["requests"])
        if served > 0:
            sample.store_gets_per_req = (after["store_get"] - metrics_before["store_get"]) / served
            sample.store_ops_per_req = (after["store_ops"] - metrics_before["store_ops"]) / served
    return sample


def measure_rate(target: Target, duration: int) -> Sample:
    pids = target.pids()
    cpu_before = cpu_seconds(pids)
    headers = list(target.headers) + ([("Cookie", target.cookies[0])] if target.cookies else [])
    result = asyncio.run(rate_generator.generate(target.url, RATE, duration, headers))
    completed = max(result["completed"], 1)
    sample = Sample(result["achieved_rps"], result["p50_ms"], result["p99_ms"],
                    result["errors"] + result["non_2xx_3xx"])
    sample.p95 = result["p95_ms"]
    sample.send_lag_p99 = result["send_lag_p99_ms"]
    sample.cpu_us = (cpu_seconds(pids) - cpu_before) / completed * 1e6
    sample.rss = peak_rss_mib(pids)
    return sample


def describe(target: Target, sample: Sample) -> str:
    extra = ""
    if sample.p95 is not None:
        extra += f"  p95 {sample.p95:.2f} ms  send-lag p99 {sample.send_lag_p99:.2f} ms"
    if sample.store_gets_per_req is not None:
        extra += f"  store gets/req {sample.store_gets_per_req:.4f}"
    if sample.store_cpu_us is not None:
        extra += f"  store cpu {sample.store_cpu_us:.0f} us/req"
    kernel = f" (sys {sample.sys_us:.0f})" if sample.sys_us is not None else ""
    return (f"  {target.key:<14} w={target.workers or '-'}  {sample.rps:>8.0f} req/s  p50 {sample.p50:.2f}  "
            f"p99 {sample.p99:.2f} ms  cpu {sample.cpu_us or 0:.0f} us/req{kernel}  rss {sample.rss or 0:.0f} MiB  "
            f"wrk {sample.wrk_cpu_us or 0:.0f} us/req  steal {sample.steal:.1f}%  others {sample.foreign:.0f}%  err {sample.errors}{extra}")


# --- the targets of one stack -------------------------------------------------------------------

def build_targets(stack: Stack, keys: list[str], workers: list[int]) -> list[Target]:
    assert stack.nginx is not None and stack.table is not None
    nginx_pid = stack.nginx.process.pid
    table_pid = stack.table.process.pid
    targets: list[Target] = []
    if "direct" in keys:
        targets.append(Target("direct", None, f"{stack.nginx.url}/bench", pids=lambda: process_tree(nginx_pid)))
    for w in workers:
        proxy, minimal = stack.proxies[w], stack.minimal[w]
        tree = (lambda pid: lambda: process_tree(pid))(proxy.pid)
        if "minimal" in keys:
            targets.append(Target("minimal", w, f"http://127.0.0.1:{minimal.port}/bench",
                                  pids=(lambda m: lambda: m.pids)(minimal)))
        if "public" in keys:
            targets.append(Target("public", w, f"{proxy.url}/public/bench", pids=tree, admin_url=proxy.admin_url))
        if "login" in keys:
            targets.append(Target("login", w, f"{proxy.url}/login/bench", cookies=[stack.session_cookie], pids=tree,
                                  admin_url=proxy.admin_url))
        if "inject" in keys:
            targets.append(Target("inject", w, f"{proxy.url}/inject/bench", cookies=[stack.session_cookie], pids=tree,
                                  admin_url=proxy.admin_url))
        if "cold" in keys and w in stack.cold:
            cold = stack.cold[w]
            targets.append(Target("cold", w, f"{cold.url}/inject/bench", cookies=stack.cold_cookies,
                                  pids=(lambda pid: lambda: process_tree(pid))(cold.pid), admin_url=cold.admin_url,
                                  side_pids=lambda: process_tree(table_pid)))
        if "bearer" in keys:
            targets.append(Target("bearer", w, f"{proxy.url}/bearer/bench",
                                  headers=[("Authorization", f"Bearer {stack.bearer_token}")], pids=tree,
                                  admin_url=proxy.admin_url))
        if "fwd" in keys:
            targets.append(Target("fwd", w, f"{proxy.url}/oauth2/auth", headers=FORWARD_HEADERS,
                                  cookies=[stack.session_cookie], pids=tree, admin_url=proxy.admin_url))
        if w in stack.apaches:
            server = stack.apaches[w]
            apache_tree = (lambda pid: lambda: process_tree(pid))(server.pid)
            if "apache-login" in keys:
                targets.append(Target("apache-login", w, f"{server.url}/login/bench", cookies=[stack.apache_cookies[w]],
                                      pids=apache_tree))
            if "apache-bearer" in keys:
                targets.append(Target("apache-bearer", w, f"{server.url}/bearer/bench",
                                      headers=[("Authorization", f"Bearer {stack.bearer_token}")], pids=apache_tree))
        if "fwd-rate" in keys:
            targets.append(Target("fwd-rate", w, f"{proxy.url}/oauth2/auth", headers=FORWARD_HEADERS,
                                  cookies=[stack.session_cookie], pids=tree))
    return targets


def check(target: Target) -> None:
    """Each target answers 200, and the injecting ones hand the upstream the three headers."""
    if target.key in ("fwd", "fwd-rate"):
        url = target.url
    else:
        url = re.sub(r"/bench$", "/check", target.url)
    headers = dict(target.headers)
    if target.cookies:
        headers["Cookie"] = target.cookies[0]
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        status, body, answer = response.status, response.read().decode(errors="replace"), response.headers
    assert status == 200, (target.key, status)
    if target.key in ("inject", "cold", "apache-login"):
        assert body.startswith("authorization=Bearer ") and "email=alice@example.com|groups=admins" in body, (target.key, body)
    if target.key in ("bearer", "apache-bearer"):
        assert body.startswith("authorization=Bearer ey") and "email=alice@example.com|groups=admins" in body, (target.key, body)
    if target.key in ("fwd", "fwd-rate"):
        assert answer.get("Authorization", "").startswith("Bearer ") and answer.get("X-User-Email") == "alice@example.com", \
            (target.key, dict(answer))
    if target.key in ("bearer", "apache-bearer"):  # and without a token: refused
        try:
            urllib.request.urlopen(target.url, timeout=10)  # noqa: S310 - loopback
            raise AssertionError(f"{target.key}: a request without a token was let through")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401, (target.key, exc.code)


# --- the table ----------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values)


def span(values: list[float], fmt: str) -> str:
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def summary_rows(targets: list[Target], samples: dict[tuple[str, int | None], list[Sample]]) -> list[str]:
    by_key = {(t.key, t.workers): t for t in targets}
    lines = [
        "| target | workers | req/s median (range) | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | vs Apache req/s (per-round range) | CPU/req vs Apache | vs minimal req/s | CPU/req vs minimal | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (key, workers), runs in samples.items():
        if key == "fwd-rate":
            continue
        target = by_key[(key, workers)]
        rps = [s.rps for s in runs]
        cpu = [s.cpu_us for s in runs if s.cpu_us is not None]
        rss = [s.rss for s in runs if s.rss is not None]
        versus = cpu_vs_peer = "-"
        peer = PEER.get(key)
        if peer and (peer, workers) in samples and key != peer:
            peer_runs = samples[(peer, workers)]
            ratios = [a.rps / b.rps for a, b in zip(runs, peer_runs)]
            versus = f"{median(rps) / median([s.rps for s in peer_runs]):.2f}x ({span(ratios, '{:.2f}')})"
            peer_cpu = [s.cpu_us for s in peer_runs if s.cpu_us is not None]
            if cpu and peer_cpu:
                cpu_vs_peer = f"{median(cpu) / median(peer_cpu):.2f}x"
        vs_minimal = cpu_vs_minimal = "-"
        if key not in ("minimal", "direct") and ("minimal", workers) in samples:
            minimal_runs = samples[("minimal", workers)]
            ratios = [a.rps / b.rps for a, b in zip(runs, minimal_runs)]
            vs_minimal = f"{median(rps) / median([s.rps for s in minimal_runs]):.2f}x ({span(ratios, '{:.2f}')})"
            minimal_cpu = [s.cpu_us for s in minimal_runs if s.cpu_us is not None]
            if cpu and minimal_cpu:
                cpu_vs_minimal = f"{median(cpu) / median(minimal_cpu):.2f}x"
        cells = [
            target.label, str(workers or "-"),
            f"{median(rps):.0f} ({span(rps, '{:.0f}')})",
            f"{median([s.p50 for s in runs]):.2f} ({span([s.p50 for s in runs], '{:.2f}')})",
            f"{median([s.p99 for s in runs]):.2f} ({span([s.p99 for s in runs], '{:.2f}')})",
            f"{median(cpu):.0f} ({span(cpu, '{:.0f}')})" if cpu else "-",
            f"{max(rss):.0f}" if rss else "-",
            versus, cpu_vs_peer, vs_minimal, cpu_vs_minimal, str(sum(s.errors for s in runs)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def rate_rows(samples: dict[tuple[str, int | None], list[Sample]]) -> list[str]:
    rows = [(workers, runs) for (key, workers), runs in samples.items() if key == "fwd-rate"]
    if not rows:
        return []
    lines = [
        f"| forward-auth at a constant {RATE:.0f} req/s | workers | achieved req/s | p50 ms | p95 ms | p99 ms "
        "| generator send lag p99 ms | CPU µs/req | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workers, runs in rows:
        def cell(values: list[float], fmt: str = "{:.2f}") -> str:
            return f"{fmt.format(median(values))} ({span(values, fmt)})"
        lines.append("| /oauth2/auth, signed in, 3 headers | " + " | ".join([
            str(workers), cell([s.rps for s in runs], "{:.0f}"), cell([s.p50 for s in runs]),
            cell([s.p95 for s in runs]), cell([s.p99 for s in runs]), cell([s.send_lag_p99 for s in runs]),
            cell([s.cpu_us for s in runs], "{:.0f}"), str(sum(s.errors for s in runs))]) + " |")
    return lines


def notes(samples: dict[tuple[str, int | None], list[Sample]]) -> list[str]:
    lines = []
    for (key, workers), runs in samples.items():
        gets = [s.store_gets_per_req for s in runs if s.store_gets_per_req is not None]
        ops = [s.store_ops_per_req for s in runs if s.store_ops_per_req is not None]
        if gets and key != "public":
            store_cpu = [s.store_cpu_us for s in runs if s.store_cpu_us is not None]
            lines.append(
                f"- store reads per authenticated request, {key} w{workers}: {median(gets):.4f} "
                f"(range {span(gets, '{:.4f}')}); all store operations {median(ops):.4f}"
                + (f"; the store's own CPU {median(store_cpu):.0f} µs/req (dynalite, not in the CPU column)" if store_cpu else "")
            )
    wrk = [s.wrk_cpu_us for runs in samples.values() for s in runs if s.wrk_cpu_us]
    steal = [s.steal for runs in samples.values() for s in runs]
    foreign = [s.foreign for runs in samples.values() for s in runs if s.wrk_cpu_us]
    if wrk:
        lines.append(f"- wrk's own CPU: {median(wrk):.0f} µs/req median over all wrk runs; "
                     f"hypervisor steal during the runs: median {median(steal):.1f} %, max {max(steal):.1f} %; "
                     f"CPU of processes outside the bench (other work on the machine) during the runs: median "
                     f"{median(foreign):.0f} %, max {max(foreign):.0f} % of one core")
    return lines


def calibrate() -> float:
    """Milliseconds for a fixed pure-Python loop, best of 5: how fast one core of this machine is
    right now (turbo, generation, a busy SMT sibling), to set CPU µs/req of two runs side by side."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for number in range(300_000):
            total += number % 7
        best = min(best, time.perf_counter() - started)
    return best * 1e3


CALIBRATION: list[float] = []
CODE: list[str] = []


def code_version() -> str:
    """The commit measured, and whether authproxy/ had changes not committed yet."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "authproxy"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return commit + (" with uncommitted changes under authproxy/" if dirty else "")


def machine_line() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mhz = [float(line.split(":", 1)[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
           if line.startswith("cpu MHz")]
    freq = f", {median(mhz):.0f} MHz" if mhz else ""
    speed = f"; calibration loop {median(CALIBRATION):.1f} ms (lower is faster)" if CALIBRATION else ""
    return (f"{os.cpu_count()} CPUs ({cpu}{freq}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}{speed}")


HISTORY_MARK = "\n## History"
SOAK_MARK = "\n## Soak"


def write_results(args: argparse.Namespace, table: list[str], rates: list[str], extra: list[str], rounds: int) -> None:
    previous = (HERE / "RESULTS.md").read_text() if (HERE / "RESULTS.md").exists() else ""
    # make soak's entries (at the end) and the hand-written history outlive a new table.
    soaks = previous[previous.index(SOAK_MARK):] if SOAK_MARK in previous else ""
    before_soaks = previous[: previous.index(SOAK_MARK)] if SOAK_MARK in previous else previous
    history = before_soaks[before_soaks.index(HISTORY_MARK):].rstrip("\n") + "\n" if HISTORY_MARK in before_soaks else ""
    header = [
        "# Benchmark results",
        "",
        "Written by `make bench` (bench/run.py): each run replaces the table; `## History` (kept by hand) and the",
        "`## Soak` entries of `make soak` stay. Ratios compare targets of one run on one machine; absolute numbers vary",
        "with the machine and its neighbours.",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine_line()}",
        f"- code: {CODE[0] if CODE else code_version()}",
        f"- load: wrk -t{args.threads} -c{args.connections} -d{args.duration}s (after a {WARMUP} s warm-up) per target; "
        f"{rounds} interleaved rounds, median (min-max); upstream nginx `return 200` with 1 KiB",
        "- authproxy: DynamoDB store (dynalite on loopback), session cache 30 s unless stated, access log on (to a file),",
        "  metrics on; sessions and tokens from real sign-ins at the test oidc-provider (tests/peers/oidc_provider.mjs)",
        "- Apache 2.4 + mod_auth_openidc (Debian): event MPM, `workers` processes x "
        f"{apache_peer.THREADS_PER_CHILD} threads, server-cache sessions in shm, access log to a file",
        "- CPU µs/req: user+system time of the target's process tree over the requests served; peak RSS: VmHWM summed over",
        "  the tree (the authproxy instance serves several rows, so its peak is the highest of them)",
        "- vs Apache: login, inject, cold, fwd and public against Apache signed in; bearer against Apache in oauth20 mode",
        "",
    ]
    body = header + table + [""] + (rates + [""] if rates else []) + extra + [""]
    (HERE / "RESULTS.md").write_text("\n".join(body) + ("\n" + history if history else "") + soaks)


# --- the run ------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help=f"comma-separated: {','.join(ALL_TARGETS)}")
    parser.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=int, default=DURATION, help=f"seconds per wrk run (default {DURATION})")
    parser.add_argument("--rate-duration", type=int, default=8, help="seconds per constant-rate run (default 8)")
    parser.add_argument("--threads", type=int, default=THREADS, help=f"wrk threads (default {THREADS})")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help=f"wrk connections (default {CONNECTIONS})")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s runs; prints, writes nothing")
    parser.add_argument("--write", action="store_true", help="write bench/RESULTS.md even for a partial run")
    parser.add_argument("--no-write", action="store_true", help="never write bench/RESULTS.md")
    parser.add_argument("--investigate", action="store_true", help="the public-route ratio experiments (bench/investigate.py)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.rate_duration = 1, 3, 3
    return args


def main() -> int:
    args = parse_args()
    if args.investigate:
        from bench import investigate

        return investigate.main(args)
    keys = [key.strip() for key in args.targets.split(",") if key.strip()]
    unknown = set(keys) - set(ALL_TARGETS)
    if unknown:
        print(f"bench: unknown targets {sorted(unknown)}", file=sys.stderr)
        return 2
    workers = [int(w) for w in args.workers.split(",")]
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench: {tool} is missing (make bench installs it)", file=sys.stderr)
            return 1
    want_apache = any(key.startswith("apache") for key in keys)
    if want_apache and apache_peer.available():
        print(f"bench: {apache_peer.available()} missing (make bench installs it); Apache rows skipped", file=sys.stderr)
        keys = [key for key in keys if not key.startswith("apache")]
        want_apache = False
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    CALIBRATION.append(calibrate())
    CODE.append(code_version())
    started = time.monotonic()
    stack = Stack(WORK, workers, want_apache=want_apache, want_cold="cold" in keys)
    samples: dict[tuple[str, int | None], list[Sample]] = {}
    try:
        stack.start()
        print(f"bench: stack up in {time.monotonic() - started:.0f} s; {args.rounds} rounds, {args.duration} s per target, "
              f"wrk -t{args.threads} -c{args.connections}", flush=True)
        targets = build_targets(stack, keys, workers)
        for target in targets:
            check(target)
        upstream_pids = process_tree(stack.nginx.process.pid)  # type: ignore[union-attr]
        for round_number in range(args.rounds):
            print(f"round {round_number + 1}/{args.rounds}", flush=True)
            # rotate the order so no target always runs first or last in a round
            shift = round_number * max(1, len(targets) // args.rounds)
            for target in targets[shift:] + targets[:shift]:
                if target.key == "fwd-rate":
                    sample = measure_rate(target, args.rate_duration)
                else:
                    sample = measure(target, upstream_pids if target.key != "direct" else [], args.duration,
                                     args.threads, args.connections)
                samples.setdefault((target.key, target.workers), []).append(sample)
                print(describe(target, sample), flush=True)
    finally:
        stack.stop()
    ordered = {(t.key, t.workers): samples[(t.key, t.workers)] for t in targets if (t.key, t.workers) in samples}
    table, rates, extra = summary_rows(targets, ordered), rate_rows(ordered), notes(ordered)
    if not args.quick:
        from bench import session_rss

        print("bench: RSS with 10,000 cached sessions (bench/session_rss.py)", flush=True)
        extra.append("- " + session_rss.measure(10_000)[0])
    print("\n".join(table + [""] + rates + [""] + extra))
    CALIBRATION.append(calibrate())
    print(f"bench: {time.monotonic() - started:.0f} s in all; {machine_line()}")
    (WORK / "samples.json").write_text(json.dumps({f"{k}/{w}": [s.__dict__ for s in runs] for (k, w), runs in ordered.items()},
                                                  indent=1))
    complete = set(keys) == set(ALL_TARGETS) and workers == [1, 2] and not args.quick
    if not args.no_write and (complete or args.write):
        write_results(args, table, rates, extra, args.rounds)
        print("bench: bench/RESULTS.md written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
