"""Contenders in fresh processes, alternating, timed by the clock and by the CPU time of
their work: on a machine shared with other work the clock also counts the time a
process waited for a core, the CPU time does not (both are printed; ratios of either).

The code of a contender is what :func:`common.convert_script` (or a plain script of the
same shape) gives: it sets ``start = time.perf_counter()`` and ends printing the seconds
since and its peak RSS."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable

START = "start = time.perf_counter()"
END = "print(time.perf_counter() - start"


def with_cpu(code: str) -> str:
    """``code`` printing the CPU seconds of its work too (a line ``cpu <seconds>``)."""
    lines = code.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip() == START)
    last = max(i for i, line in enumerate(lines) if line.startswith(END))
    indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
    lines.insert(last, "print('cpu', time.process_time() - cpu_start)")
    lines.insert(first + 1, f"{indent}cpu_start = time.process_time()")
    return "\n".join(lines) + "\n"


def fresh(code: str) -> tuple[float, float, int]:
    """Seconds by the clock, CPU seconds and peak RSS (KiB) of one run of ``code``."""
    proc = subprocess.run(
        [sys.executable, "-c", with_cpu(code)], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(proc.stderr)
    lines = proc.stdout.splitlines()
    cpu = next(float(line.split()[1]) for line in lines if line.startswith("cpu "))
    seconds, peak = lines[-1].split()
    return float(seconds), cpu, int(peak)


def alternate(
    rounds: int, contenders: dict[str, Callable[[int], str]]
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[int]]]:
    """Each contender's code (given the round) in a fresh process, alternating: clock
    seconds, CPU seconds and peak RSS per round."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    rss: dict[str, list[int]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name, code in contenders.items():
            seconds, used, peak = fresh(code(r))
            times[name].append(seconds)
            cpu[name].append(used)
            rss[name].append(peak)
    return times, cpu, rss


def show(
    amount: int,
    unit: str,
    what: dict[str, str],
    times: dict[str, list[float]],
    cpu: dict[str, list[float]],
    ours: str = "xchange",
) -> None:
    """Each contender's rate (median clock seconds), its clock and CPU seconds (median,
    min, every round), then xchange's ratio to each reference: by clock medians and
    mins, and by CPU medians and mins (a ratio > 1: xchange is faster)."""
    med = statistics.median
    for name in times:
        print(
            f"  {name:<10} {amount / med(times[name]):>9,.0f} {unit}  ({what[name]})\n"
            f"             clock median {med(times[name]):.2f} s, min {min(times[name]):.2f} s "
            f"({', '.join(f'{t:.2f}' for t in times[name])}); CPU median "
            f"{med(cpu[name]):.2f} s, min {min(cpu[name]):.2f} s "
            f"({', '.join(f'{t:.2f}' for t in cpu[name])})"
        )
    for ref in times:
        if ref == ours:
            continue
        print(
            f"  ratio to {ref}: clock {med(times[ref]) / med(times[ours]):.2f}x "
            f"(mins {min(times[ref]) / min(times[ours]):.2f}x), CPU "
            f"{med(cpu[ref]) / med(cpu[ours]):.2f}x (mins {min(cpu[ref]) / min(cpu[ours]):.2f}x)"
        )
