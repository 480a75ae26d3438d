"""Timers for one layer call: CUDA events around CUDA-graph replays, or a CPU clock.

Both return a :class:`Measurement` of per-call milliseconds, one sample per
timed block, after warm-up. A timer is any object with
``measure(fn) -> Measurement``, so tests plug in a fake one.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Tuple


@dataclass(frozen=True)
class Measurement:
    """Per-call times (ms), one per timed block, and how many calls each block averaged."""

    samples_ms: Tuple[float, ...]
    calls_per_block: int

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def iqr_ms(self) -> float:
        if len(self.samples_ms) < 4:
            return max(self.samples_ms) - min(self.samples_ms)
        q = statistics.quantiles(self.samples_ms, n=4)
        return q[2] - q[0]


class CpuTimer:
    """Wall-clock timer for CPU execution (the CPU twin of CudaGraphTimer)."""

    def __init__(self, warmup: int = 2, blocks: int = 5, target_block_ms: float = 5.0,
                 max_calls: int = 1000, clock: Callable[[], float] = time.perf_counter):
        self.warmup, self.blocks, self.target_block_ms = warmup, blocks, target_block_ms
        self.max_calls, self.clock = max_calls, clock

    def measure(self, fn: Callable[[], object]) -> Measurement:
        for _ in range(self.warmup):
            fn()
        t0 = self.clock()
        fn()
        one_ms = max((self.clock() - t0) * 1e3, 1e-6)
        calls = int(min(self.max_calls, max(1, self.target_block_ms // one_ms)))
        samples = []
        for _ in range(self.blocks):
            t0 = self.clock()
            for _ in range(calls):
                fn()
            samples.append((self.clock() - t0) * 1e3 / calls)
        return Measurement(tuple(samples), calls)


class CudaGraphTimer:
    """CUDA events around replays of a CUDA graph that holds ``inner`` calls.

    The graph removes CPU launch overhead, so the time is what the GPU spends
    on the layer when calls run back to back (as inside a captured model).
    The per-call time is first estimated from replays of a one-call graph
    (an upper bound: it includes the gap between replays), then ``inner`` is
    chosen so that one replay lasts about ``target_replay_ms`` and each timed
    block about ``target_block_ms`` (at least ``min_replays`` replays). Blocks of 1 ms repeat
    about as well as blocks of 2 ms (the calibration used 2 ms until plan v3's runs: 0.54% against
    0.45% median difference between two timings of 241 plan rows on an H100,
    benchmarks/data/probe-speed/) and take a quarter less wall time per layer.
    """

    def __init__(self, warmup: int = 3, blocks: int = 5, target_block_ms: float = 1.0,
                 target_replay_ms: float = 0.25, max_inner: int = 64, min_replays: int = 3):
        self.warmup, self.blocks = warmup, blocks
        self.target_block_ms, self.target_replay_ms = target_block_ms, target_replay_ms
        self.max_inner, self.min_replays = max_inner, min_replays

    def prepare(self, seconds: float = 1.0) -> None:
        """Keep the GPU busy for ``seconds`` so that clocks have ramped up before timing."""
        import torch

        a = torch.randn(4096, 4096, device="cuda")
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                a = torch.tanh(a @ a)
            torch.cuda.synchronize()

    @staticmethod
    def _capture(fn, calls: int):
        import torch

        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        graph.replay()
        return graph

    def measure(self, fn: Callable[[], object]) -> Measurement:
        import torch

        graph, inner, one_ms = graph_of(fn, self.target_replay_ms, self.max_inner, self.warmup)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        replays = int(max(self.min_replays, min(500, self.target_block_ms // (one_ms * inner))))
        samples = []
        for _ in range(self.blocks):
            start.record()
            for _ in range(replays):
                graph.replay()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / (replays * inner))
        del graph
        return Measurement(tuple(samples), replays * inner)


def replay_ms(graph, replays: int = 5) -> float:
    """Milliseconds per replay of ``graph``, ``replays`` back to back (CUDA events)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return max(start.elapsed_time(end) / replays, 1e-4)


def graph_of(fn: Callable[[], object], target_replay_ms: float, max_inner: int = 64, warmup: int = 3):
    """(graph, inner, one_ms): ``fn`` warmed up on a side stream, then captured ``inner`` times in
    one CUDA graph so that a replay lasts about ``target_replay_ms``; ``one_ms`` is the time of one
    call from replays of a one-call graph (an upper bound: it includes the gaps between replays)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = CudaGraphTimer._capture(fn, 1)
    one_ms = replay_ms(graph)
    inner = int(min(max_inner, max(1, target_replay_ms // one_ms)))
    if inner > 1:
        del graph
        graph = CudaGraphTimer._capture(fn, inner)
    return graph, inner, one_ms
