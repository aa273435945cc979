"""``authproxy run`` under cProfile, switched on by SIGUSR1 and off (stats written) by SIGUSR2.

    python bench/profiled_worker.py OUT_PREFIX run --config FILE      (bench/per_request.py starts it)

The stats go to ``OUT_PREFIX.<pid>``. Only for ``workers: 1`` (the process that serves).
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    prefix, argv = sys.argv[1], sys.argv[2:]
    if os.environ.get("BENCH_PROFILER") == "pyinstrument":  # sampling: less distortion of small functions
        from pyinstrument import Profiler

        sampler = Profiler(interval=0.0002, async_mode="disabled")

        def start(signum: int, frame: object) -> None:
            sampler.start()

        def stop(signum: int, frame: object) -> None:
            sampler.stop()
            Path(f"{prefix}.{os.getpid()}.txt").write_text(sampler.output_text(unicode=False, show_all=False))
            sampler.reset()
    else:
        profiler = cProfile.Profile()

        def start(signum: int, frame: object) -> None:
            profiler.enable()

        def stop(signum: int, frame: object) -> None:
            profiler.disable()
            profiler.dump_stats(f"{prefix}.{os.getpid()}")
            profiler.clear()

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from authproxy.cli import main as authproxy

    return authproxy(argv)


if __name__ == "__main__":
    sys.exit(main())
