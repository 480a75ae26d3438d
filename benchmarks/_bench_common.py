"""Shared pieces of the CPU benchmarks: machine description, measurements, doc sections.

Each benchmark prints its tables, saves its raw timings as CSV under
benchmarks/data/ and, with ``--doc``, replaces its own section of
docs/performance.md (between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``),
so every number in that file comes from a script run.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")
sys.path.insert(0, REPO)


@dataclass
class Measurement:
    """Raw wall times (s) of one task, as torch.utils.benchmark keeps them."""

    task: Dict[str, object]
    times: List[float] = field(default_factory=list)
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def ok(self) -> bool:
        return bool(self.times) and not self.error


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> Dict[str, str]:
    """What the numbers were measured on."""
    import numpy
    import torch

    info = {
        "cpu": f"{cpu_name()}, {os.cpu_count()} cores",
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch threads": str(torch.get_num_threads()),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    try:
        info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return info


def machine_lines(info: Dict[str, str]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


def doc_header(raw_path: str, info: Dict[str, str]) -> List[str]:
    """The opening lines of every generated doc section: the command, its raw output, the machine."""
    return [f"Command: `{command_line()}` (raw timings: `{raw_path}`).", "", "Machine:", "",
            machine_lines(info), ""]


def md_table(headers: List[str], rows: List[List[str]]) -> str:
    """A GitHub markdown table; cells are already text."""
    align = ["---" if i == 0 else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_doc_section(path: str, name: str, text: str) -> None:
    """Replace the ``name`` section of ``path`` (appended if the markers are absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    try:
        with open(path, encoding="utf-8") as f:
            doc = f.read()
    except FileNotFoundError:
        doc = ""
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip() + ("\n\n" if doc else "") + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])


# Runs ``python -m torch_alpha_profiler ARGS`` and reports the peak resident memory of that
# process from /proc/self/status (VmHWM, reset by exec). wait4's ru_maxrss is no use here:
# Linux carries the forking parent's peak over into the child.
_CLI = """
import atexit, runpy, sys

def _peak():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                sys.stderr.write("VmHWM_KB " + line.split()[1] + "\\n")

atexit.register(_peak)
sys.argv = ["alpha-profiler"] + sys.argv[1:]
runpy.run_module("torch_alpha_profiler", run_name="__main__", alter_sys=True)
"""


def run_cli(args, pythonpath: str):
    """(wall s, peak RSS KiB, stderr) of ``alpha-profiler ARGS`` with the package in ``pythonpath``."""
    import re
    import subprocess
    import tempfile
    import time

    env = dict(os.environ, PYTHONPATH=pythonpath)
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CLI] + list(args), cwd=pythonpath, env=env,
                              stdout=subprocess.DEVNULL, stderr=err)
        wall = time.perf_counter() - t0
        err.seek(0)
        text = err.read().decode()
    if proc.returncode:
        raise RuntimeError(f"alpha-profiler {' '.join(args[:2])} failed ({proc.returncode}): {text[-500:]}")
    peak = re.search(r"VmHWM_KB (\d+)", text)
    return wall, int(peak.group(1)) if peak else -1, text


def import_cost(pythonpath: str):
    """(wall s, peak RSS KiB) of an interpreter that only imports the command line module."""
    import subprocess
    import time

    code = ("import torch_alpha_profiler.cli\n"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=pythonpath, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=pythonpath), check=True).stdout
    return time.perf_counter() - t0, int(out.strip())
