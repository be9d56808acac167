"""LiteRT interpreters: a pool per model version, each interpreter with its own thread.

One LiteRT interpreter is not thread-safe, so each model version owns a small pool. Each
interpreter is bound to one dedicated worker thread: requests to it always run on the same
thread, so its XNNPACK state, its buffers and the thread's malloc arena stay hot. At low load
the pool hands out the most recently used interpreter (LIFO), so one hot pair serves everything;
under concurrency the others join in. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

from ai_edge_litert.interpreter import Interpreter

P = ParamSpec("P")
T = TypeVar("T")


class _Slot:
    def __init__(self, interpreter: Interpreter, name: str) -> None:
        self.interpreter = interpreter
        self.lock = threading.Lock()
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


class InterpreterPool:
    """`size` interpreters on one model file, each with a dedicated thread."""

    def __init__(self, model_path: Path, num_threads: int, size: int, name: str = "model") -> None:
        content = model_path.read_bytes()
        self.size = size
        self._slots: list[_Slot] = []
        for index in range(size):
            interpreter = Interpreter(model_content=content, num_threads=num_threads)
            interpreter.allocate_tensors()
            self._slots.append(_Slot(interpreter, f"{name}-{index}"))
        self._free: asyncio.LifoQueue[_Slot] | None = None

    def _queue(self) -> asyncio.LifoQueue[_Slot]:
        # Created on first async use, inside the serving event loop (models load in other threads).
        if self._free is None:
            self._free = asyncio.LifoQueue()
            for slot in self._slots:
                self._free.put_nowait(slot)
        return self._free

    async def run(self, fn: Callable[[Interpreter], T]) -> T:
        """Run `fn(interpreter)` on a free interpreter's own thread; waits for one if all are busy."""
        free = self._queue()
        slot = await free.get()
        try:
            return await asyncio.get_running_loop().run_in_executor(slot.thread, self._locked, slot, fn)
        finally:
            free.put_nowait(slot)

    @staticmethod
    def _locked(slot: _Slot, fn: Callable[[Interpreter], T]) -> T:
        with slot.lock:  # uncontended when called through run(); guards against direct blocking users
            return fn(slot.interpreter)

    @contextmanager
    def blocking(self) -> Iterator[Interpreter]:
        """The first interpreter, in the calling thread: for warm-up, checks and in-process benchmarks."""
        slot = self._slots[0]
        with slot.lock:
            yield slot.interpreter

    def each(self) -> Iterator[Interpreter]:
        """Every interpreter in turn (for warm-up), each under its lock, in the calling thread."""
        for slot in self._slots:
            with slot.lock:
                yield slot.interpreter


def tune_allocator() -> None:
    """Keep large buffers (decoded frames, input tensors) in the heap instead of fresh mmaps.

    glibc serves allocations over its mmap threshold with a new mapping each time, so every
    request page-faults its multi-megabyte buffers in again; measured here, that doubled the
    in-process time of a 640x640 detector. Raising the threshold lets freed buffers be reused.
    No-op where mallopt does not exist (musl, macOS).
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's maximum for this setting
    mallopt(m_trim_threshold, 128 * 1024 * 1024)
