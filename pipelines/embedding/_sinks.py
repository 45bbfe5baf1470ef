"""The feature sets a job writes: encoded rows wait per set until a partition fills, then commit in the background.

At most one commit is in flight while the next chunk is encoded: memory stays bounded and partitions keep their order.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

import featurestore
from featurestore.errors import UsageError
from featurestore.storage import CONTENT_HASH, EMBEDDING, fixed_size_list
from pipelines.embedding._screen import hash_column, need_column
from pipelines.embedding._source_keys import Committed


class Sink:
    """One feature set a job writes: its writer, its encoder, and what it already holds."""

    def __init__(self, writer: featurestore.Writer, encoder: Any, fingerprint: str, keep: list[str] | None = None) -> None:
        self.writer, self.encoder, self.fingerprint = writer, encoder, fingerprint
        self.keep = list(keep or [])  # source columns stored beside the vectors
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.indexed = False  # see ``attach``
        self.committed: Committed | None = None
        self.updates = False  # the screen saw a held key with new content (views must then keep the newest row)

    def attach(self, committed: Committed | None) -> None:
        """Look committed rows up by source row number in ``committed`` (``SourceKeys.committed``; None: the version
        holds none of the source's keys) instead of by key in the writer's dict of every committed row, and commit
        without the writer checking again: nothing per row stays in memory."""
        self.indexed, self.committed = True, committed

    def held(self, table: pa.Table, keys: list[str], rows: np.ndarray | None) -> np.ndarray | None:
        """The committed content hash of each row of ``table`` (None where its key is not held), as an object array;
        None when the version holds nothing. ``rows``: the rows' numbers in the source, needed once attached."""
        if not self.indexed:
            raise UsageError("Sink.held needs the job's key index: call attach() first (see run_indexed).")
        if self.committed is None or rows is None or not len(rows):
            return None if self.committed is None else np.full(table.num_rows, None, dtype=object)
        return self.committed.hashes(int(rows[0]), int(rows[-1]) + 1)[rows - rows[0]]

    def commit(self, table: pa.Table) -> int:
        """Write ``table`` as one partition (the writer skips rows it holds, unless the screen already did)."""
        return self.writer.append(table, screened=self.indexed, updates=self.updates)


class Sinks:
    """A job's sinks and their one background committer; ``close`` waits for it."""

    def __init__(self, sinks: list[Sink], keys: list[str], partition_rows: int) -> None:
        self.sinks, self.keys, self.partition_rows = sinks, keys, partition_rows
        self._commits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featurestore-commit")
        self._inflight: Future | None = None
        # Error rows may be stored from the encoder's reading thread while this one commits: one writer call at a time.
        self._lock = threading.RLock()

    def add(self, chunk: pa.Table, vectors: list[np.ndarray]) -> None:
        """An encoded chunk (screened rows, see ``_screen.Screen``) with one block of vectors per sink."""
        for i, (sink, block) in enumerate(zip(self.sinks, vectors)):
            if block.shape[0] != chunk.num_rows:
                raise UsageError(f"The encoder returned {block.shape[0]} vectors for {chunk.num_rows} texts.")
            need = chunk.column(need_column(i)).to_numpy(zero_copy_only=False)
            part = chunk.select(self.keys).append_column(CONTENT_HASH, chunk.column(hash_column(i)))
            part = part.append_column(EMBEDDING, fixed_size_list(block))
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
            parts.append((sink, pa.concat_tables(sink.pending)))
            sink.pending, sink.pending_rows = [], 0
        with self._lock:
            self.wait()  # at most one commit in flight: bounded memory, ordered partitions
            self._inflight = self._commits.submit(lambda: [sink.commit(table) for sink, table in parts])

    def wait(self) -> None:
        """Until the commit in flight is done; its error, if any, is raised here."""
        if self._inflight is not None:
            self._inflight.result()
            self._inflight = None

    def record_errors(self, errors: pa.Table | None) -> None:
        """Store error rows (keys, ``kind``, ``message``) in every set, once the commit in flight is done."""
        if errors is not None:
            with self._lock:
                self.wait()
                for sink in self.sinks:
                    sink.writer.record_errors(errors)

    def close(self) -> None:
        self._commits.shutdown(wait=True)
