"""Where training batches come from: the whole decoded dataset in memory, or streamed from its memory map.

Below the memory budget nothing changes: `DeviceData` copies the decoded cache into one tensor (on the
GPU when it fits) and every batch is an index into it. Above the budget (`max_memory_gb`, by default
half of the RAM available when the run starts, shared by the processes of this machine) the copy would
not fit, so `StreamedData` gathers each batch from the memory-mapped cache instead: the rows are read
in ascending order (sequential reads on disk), put back in the batch's own order (so the result is
bit-identical to the in-memory path), and the next batches are read by a background thread while the
current one trains. On a GPU the rows go through pinned memory with non-blocking copies.
"""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from engine.data.pixels import to_tensor
from engine.train.loop import DeviceData

#: the share of the RAM available at the start of a run that the decoded dataset may take (`max_memory_gb: 0`)
AUTO_MEMORY_SHARE = 0.5
#: batches read ahead by the background thread
PREFETCH_DEPTH = 2
#: bytes read through the map before its pages are dropped from this process (the page cache keeps them)
DROP_EVERY_BYTES = 256 << 20


def available_memory_bytes() -> int:
    """RAM the kernel can hand out now without swapping (`MemAvailable` in /proc/meminfo); page cache counts as
    available. Falls back to total physical memory where /proc is missing."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_budget_bytes(max_memory_gb: float, processes_here: int = 1) -> int:
    """Bytes one process may spend on the decoded dataset: `max_memory_gb` (GB = 1e9 bytes) when set, else
    `AUTO_MEMORY_SHARE` of the available RAM; split between the processes of this machine, since each
    one would hold its own copy."""
    total = max_memory_gb * 1e9 if max_memory_gb > 0 else AUTO_MEMORY_SHARE * available_memory_bytes()
    return int(total / max(1, processes_here))


def processes_on_this_machine() -> int:
    """torchrun's LOCAL_WORLD_SIZE (processes on this node), 1 outside torchrun."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def open_data(
    images: np.ndarray,
    labels: np.ndarray,
    device: torch.device,
    multilabel: bool,
    max_memory_gb: float,
    notes: list[str] | None = None,
) -> DeviceData:
    """The in-memory `DeviceData` when the decoded dataset fits the memory budget, else a `StreamedData`
    (and a note saying so, for the run's log and summary)."""
    budget = memory_budget_bytes(max_memory_gb, processes_on_this_machine())
    if images.nbytes <= budget:
        return DeviceData(images, labels, device, multilabel)
    if notes is not None:
        notes.append(
            f"The decoded dataset ({images.nbytes / 1e9:.2f} GB) is larger than the memory budget "
            f"({budget / 1e9:.2f} GB), so batches were read from the cache on disk as training went."
        )
    return StreamedData(images, labels, device, multilabel)


class StreamedData(DeviceData):
    """The decoded dataset left on disk: each batch gathered from the memory map (sorted rows, read ahead).

    Every read happens on one background thread, which owns the map: `prefetch` queues the next
    batches, `batch` takes a queued one (or reads it now). Pages read through the map are dropped from
    this process every `DROP_EVERY_BYTES`, so its resident memory stays flat however large the file is;
    the kernel's page cache still keeps what fits."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, multilabel: bool) -> None:
        self.device = device
        self.labels = torch.from_numpy(labels.astype(np.float32 if multilabel else np.int64))
        self.shape = images.shape
        self.pin = device.type == "cuda" and torch.cuda.is_available()
        self._map: mmap.mmap | None = None
        self.rows = self._own_map(images)
        self._read_since_drop = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loupe-prefetch")
        self._pending: OrderedDict[bytes, Future[torch.Tensor]] = OrderedDict()

    def _own_map(self, images: np.ndarray) -> np.ndarray:
        """A read-only map of the cache file of our own (so its pages can be dropped), or the array itself
        when it is not a file-backed memmap (tests, arrays already in memory)."""
        filename = getattr(images, "filename", None)
        if not isinstance(images, np.memmap) or not filename:
            return images
        with open(filename, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        # batches are rows scattered over the file: without this the kernel reads ahead around every row
        # (up to megabytes each); measured on a 30 GB cache, a batch of 128 random rows took 1.9-2.3 s cold
        # with read-ahead and 0.03-0.06 s without (bench/RESULTS.md)
        self._map.madvise(mmap.MADV_RANDOM)
        return np.ndarray(images.shape, dtype=images.dtype, buffer=self._map, offset=int(images.offset))

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, idx: np.ndarray) -> torch.Tensor:
        """Rows `idx` (any order, repeats allowed) as a uint8 NHWC tensor, read in ascending file order."""
        order = np.argsort(idx, kind="stable")
        rows = np.take(self.rows, idx[order], axis=0)  # ascending offsets: sequential reads
        out = np.empty_like(rows)
        out[order] = rows  # back in the batch's own order
        tensor = torch.from_numpy(out)
        self._read_since_drop += out.nbytes
        if self._map is not None and self._read_since_drop >= DROP_EVERY_BYTES:
            self._map.madvise(mmap.MADV_DONTNEED)  # read-only file pages: dropped here, kept in the page cache
            self._read_since_drop = 0
        return tensor.pin_memory() if self.pin else tensor

    def prefetch(self, upcoming: list[np.ndarray]) -> None:
        for idx in upcoming[:PREFETCH_DEPTH]:
            key = np.asarray(idx, dtype=np.int64).tobytes()
            if key not in self._pending:
                self._pending[key] = self._pool.submit(self._read, np.asarray(idx, dtype=np.int64))
        while len(self._pending) > PREFETCH_DEPTH + 1:  # a batch that was never asked for (the plan changed)
            self._pending.popitem(last=False)[1].cancel()

    def batch(self, idx: np.ndarray, channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        future = self._pending.pop(idx.tobytes(), None)
        if future is None:
            future = self._pool.submit(self._read, idx)
        x = to_tensor(future.result().to(self.device, non_blocking=True))
        if not channels_last:
            x = x.contiguous()
        return x, self.labels[torch.from_numpy(idx)].to(self.device, non_blocking=True)

    def close(self) -> None:
        """Stop the reader thread and unmap the file (also done when the object is collected)."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)
        if self._map is not None:
            self.rows = np.empty((0, *self.shape[1:]), np.uint8)
            self._map.close()
            self._map = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to clean up
            pass
