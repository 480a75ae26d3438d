"""The energy stage of a calibration: board power while one plan row runs back to back.

NVML's energy counter (``nvmlDeviceGetTotalEnergyConsumption``) advances in
steps, tens of milliseconds apart on data-centre GPUs, so reading it around a
millisecond block measures the step, not the block. :class:`PowerMeter` keeps
the device busy with the row's calls for ``seconds``, polls the counter between
chunks of calls, and divides the energy between the first and the last step it
saw (after a short warm-up) by the wall time between them: the row's average
board power, to about a poll's precision over a window of a few hundred ms.
Energy per call is that power times the time per call.

The energy plan (:func:`energy_plan`) is a subset of the forward layer and op
plans and of the training plan; rows go to ``PREFIX-energy.csv`` as they are
taken, with ``watts`` and ``energy_mj`` (per call), and are fitted in energy.py.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from .measure import Progress, RESULT_COLUMNS, build_layer, run_rows
from .train import done_keys, row_key

ENERGY_COLUMNS = ("source", "op", "d0", "d1", "d2", "d3") + tuple(
    c for c in RESULT_COLUMNS if c not in ("status", "iqr_ms", "energy_mj")) + (
    "input_grad", "cls", "watts", "energy_mj", "window_s", "counter_steps", "busy", "status")


@dataclass(frozen=True)
class PowerReading:
    """Average board power (W) while a function ran back to back, and its time per call."""

    ms_per_call: float
    watts: float
    window_s: float  # wall time between the first and last counter step used
    steps: int  # counter steps seen in the window
    # time per call of back-to-back replays over the time per call while measured: below 1, the
    # device idled between chunks (the CPU fell behind) and the power is not the calls' own
    busy: float = 1.0

    @property
    def joules_per_call(self) -> float:
        return self.watts * self.ms_per_call / 1e3


class PowerMeter:
    """Average power while ``fn`` runs back to back, from an energy counter (joules).

    On CUDA (``cuda=True``) the calls are captured in a CUDA graph of about
    ``replay_ms`` and replayed in chunks of at least ``chunk_ms`` and of three
    counter reads (a read takes milliseconds), at most four chunks queued ahead
    of the GPU, so the GPU does not idle while the CPU polls the counter
    (``busy`` checks it); without CUDA (the CPU twin) chunks are plain calls. A counter
    step's instant is taken as the midpoint between the poll that saw it and
    the one before. Runs until ``seconds`` past ``warmup_s`` with at least
    ``min_steps`` steps, or ``max_seconds``.
    """

    def __init__(self, counter: Callable[[], float], seconds: float = 0.3, warmup_s: float = 0.05,
                 chunk_ms: float = 5.0, replay_ms: float = 1.0, min_steps: int = 3,
                 max_seconds: float = 2.0, cuda: bool = True, clock: Callable[[], float] = time.perf_counter):
        self.counter, self.seconds, self.warmup_s = counter, seconds, warmup_s
        self.chunk_ms, self.replay_ms, self.min_steps = chunk_ms, replay_ms, min_steps
        self.max_seconds, self.cuda, self.clock = max_seconds, cuda, clock

    def _cuda_runner(self, fn, chunk_ms):
        import torch

        from .timers import graph_of, replay_ms

        graph, inner, _ = graph_of(fn, self.replay_ms)
        one_replay_ms = replay_ms(graph, 10)
        replays = int(max(1, -(-chunk_ms // one_replay_ms)))

        def chunk():
            for _ in range(replays):
                graph.replay()
            event = torch.cuda.Event()
            event.record()
            return event, replays * inner

        return chunk, torch.cuda.Event, one_replay_ms / inner

    def _cpu_runner(self, fn, chunk_ms):
        fn()
        t0 = self.clock()
        fn()
        calls = int(max(1, chunk_ms / max((self.clock() - t0) * 1e3, 1e-6)))

        def chunk():
            for _ in range(calls):
                fn()
            return None, calls

        return chunk, None, None

    def measure(self, fn: Optional[Callable[[], object]]) -> PowerReading:
        """Power while ``fn`` runs; ``fn=None`` measures the idle device (ms_per_call is 0)."""
        t0 = self.clock()
        for _ in range(5):
            self.counter()
        read_ms = (self.clock() - t0) * 1e3 / 5
        chunk_ms = max(self.chunk_ms, 3 * read_ms)
        alone_ms = None
        if fn is None:
            def chunk():
                time.sleep(chunk_ms / 1e3)
                return None, 0
            event_cls = None
        else:
            chunk, event_cls, alone_ms = (self._cuda_runner if self.cuda else self._cpu_runner)(fn, chunk_ms)
        timing = event_cls is not None
        if timing:
            start, end = event_cls(enable_timing=True), event_cls(enable_timing=True)
            start.record()
        queued: deque = deque()
        steps: List[tuple] = []
        calls = 0
        t_begin = prev_poll = self.clock()
        last = self.counter()
        while True:
            event, n = chunk()
            calls += n
            if event is not None:
                queued.append(event)
                if len(queued) > 4:
                    queued.popleft().synchronize()
            value, now = self.counter(), self.clock()
            if value != last and now - t_begin >= self.warmup_s:
                steps.append(((prev_poll + now) / 2, value))
            last, prev_poll = value, now
            span = steps[-1][0] - steps[0][0] if len(steps) > 1 else 0.0
            if (span >= self.seconds and len(steps) >= self.min_steps) or now - t_begin > self.max_seconds:
                break
        if timing:
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end) / max(calls, 1)
        else:
            ms = (self.clock() - t_begin) * 1e3 / calls if calls else 0.0
        if len(steps) < 2:
            raise RuntimeError(f"the energy counter advanced {len(steps)} time(s) in {self.max_seconds} s; "
                               "cannot measure power")
        (t0, e0), (t1, e1) = steps[0], steps[-1]
        busy = min(1.0, alone_ms / ms) if alone_ms and ms > 0 else 1.0
        return PowerReading(ms_per_call=ms, watts=(e1 - e0) / (t1 - t0), window_s=t1 - t0, steps=len(steps),
                            busy=busy)


def energy_plan(layer_plan: Sequence[Dict[str, str]], op_plan: Sequence[Dict[str, str]],
                train_rows: Sequence[Dict[str, str]], layer_every: int = 30, op_every: int = 6,
                train_every: int = 40) -> List[Dict[str, str]]:
    """Every ``layer_every``-th forward layer row, ``op_every``-th op row (kernels only) and
    ``train_every``-th training row (train.train_plan), tagged by ``source``."""
    from .opplan import KINDS

    rows = [dict(r, source="layer") for r in layer_plan[::layer_every]]
    rows += [dict(r, source="op", kind="") for r in [r for r in op_plan if r["op"] in KINDS][::op_every]]
    trains = [r for r in train_rows if r.get("input_grad", "1") != "0"]  # the fit leaves those out
    rows += [dict(r, source="train_" + r["source"]) for r in trains[::train_every]]
    return rows


def measure_energy(plan: Sequence[Dict[str, str]], out_csv: str, meter: PowerMeter, device: str = "cuda",
                   dtype: str = "float32", resume: bool = True,
                   progress: Optional[Progress] = None) -> List[Dict[str, str]]:
    """Power and energy per call of every row of ``plan`` (energy_plan); rows are appended as taken."""
    import torch

    from .opplan import builder
    from .train import layer_step, op_step

    done = done_keys(out_csv) if resume else set()
    dt = getattr(torch, dtype)

    def time_row(i, r):
        source = r["source"]
        if source == "layer":
            layer, x = build_layer(r, device, dtype, seed=i)
            cls = r["kind"]

            def fn():
                with torch.no_grad():
                    layer(x)
        elif source == "op":
            cls, build = builder(r["op"])
            inner_fn = build(tuple(int(r[f"d{j}"]) for j in range(4)), device, dt)

            def fn():
                with torch.no_grad():
                    inner_fn()
        elif source == "train_layer":
            cls, fn = r["kind"], layer_step(r, device, dtype, seed=i)
        else:
            cls, fn = op_step(r, device, dtype)
        reading = meter.measure(fn)
        return {"time_ms": f"{reading.ms_per_call:.6g}", "calls": "", "cls": cls,
                "watts": f"{reading.watts:.5g}", "energy_mj": f"{reading.joules_per_call * 1e3:.6g}",
                "window_s": f"{reading.window_s:.4g}", "counter_steps": str(reading.steps),
                "busy": f"{reading.busy:.3f}"}

    return run_rows(plan, out_csv, ENERGY_COLUMNS, lambda r: row_key(r) in done,
                    time_row, dict(dtype=dtype), device, resume, progress)
