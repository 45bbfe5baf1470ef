"""The feature sets a job writes: encoded rows wait per set until a partition fills, then commit in the background.

At most one commit is in flight while the next chunk is encoded: memory stays bounded and partitions keep their order.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

import featurestore
from featurestore import _format as fmt

from ._screen import hash_column, need_column


class Sink:
    """One feature set a job writes: its writer, its encoder, and what it already holds."""

    def __init__(self, writer: featurestore.Writer, encoder: Any, fingerprint: str, keep: list[str] | None = None) -> None:
        self.writer, self.encoder, self.fingerprint = writer, encoder, fingerprint
        self.keep = list(keep or [])  # source columns stored beside the vectors
        self.committed = writer.committed_hashes()
        self.pending: list[pa.Table] = []
        self.pending_rows = 0


class Sinks:
    """A job's sinks and their one background committer; ``close`` waits for it."""

    def __init__(self, sinks: list[Sink], keys: list[str], partition_rows: int) -> None:
        self.sinks, self.keys, self.partition_rows = sinks, keys, partition_rows
        self._commits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featurestore-commit")
        self._inflight: Future | None = None

    def add(self, chunk: pa.Table, vectors: list[np.ndarray]) -> None:
        """An encoded chunk (screened rows, see ``_screen.Screen``) with one block of vectors per sink."""
        for i, (sink, block) in enumerate(zip(self.sinks, vectors)):
            if block.shape[0] != chunk.num_rows:
                raise RuntimeError(f"The encoder returned {block.shape[0]} vectors for {chunk.num_rows} texts.")
            need = chunk.column(need_column(i)).to_numpy(zero_copy_only=False)
            part = chunk.select(self.keys).append_column(fmt.CONTENT_HASH, chunk.column(hash_column(i)))
            part = part.append_column(fmt.EMBEDDING, fmt.fixed_size_list(block))
            for c in sink.keep:
                part = part.append_column(c, chunk.column(c))
            if not need.all():
                part = part.filter(pa.array(need))
            if not part.num_rows:
                continue
            sink.pending.append(part)
            sink.pending_rows += part.num_rows
        self.flush(force=False)

    def flush(self, *, force: bool) -> None:
        """Commit every sink whose pending rows fill a partition (every sink with any, when ``force``)."""
        ready = [s for s in self.sinks if s.pending and (force or s.pending_rows >= self.partition_rows)]
        if not ready:
            return
        parts = []
        for sink in ready:
            parts.append((sink.writer, pa.concat_tables(sink.pending)))
            sink.pending, sink.pending_rows = [], 0
        self.wait()  # at most one commit in flight: bounded memory, ordered partitions
        self._inflight = self._commits.submit(lambda: [writer.append(table) for writer, table in parts])

    def wait(self) -> None:
        """Until the commit in flight is done; its error, if any, is raised here."""
        if self._inflight is not None:
            self._inflight.result()
            self._inflight = None

    def record_errors(self, errors: pa.Table | None) -> None:
        """Store the job's error rows (keys, ``kind``, ``message``) in every set."""
        if errors is not None:
            for sink in self.sinks:
                sink.writer.record_errors(errors)

    def close(self) -> None:
        self._commits.shutdown(wait=True)
