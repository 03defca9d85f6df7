"""Scoring that runs while images are generated: a bounded queue to one scorer thread.

On a GPU machine the per-image scorers (NudeNet, classifiers) run mostly on the CPU; scored after generation
they leave the GPU idle.  Here the engine hands every finished batch to a queue, and a thread scores it with
each per-image scorer of the benchmark and stores the raw scores, so that by the end of generation most
images are already scored and the ordinary scoring pass finds them in the store.  The queue is bounded: a
scorer slower than the UNet holds generation back instead of piling images up in memory.

The thread writes through its own connection to the store (SQLite in WAL mode takes one writer at a time and
waits for the lock).  An error in the thread is raised again in the caller when the block ends.

What it achieved is measured, not assumed: ``Overlap.stats`` has the seconds the scorers were busy, how many
of those fell while generation was still running (hidden), and the generation time; the runner adds them up
in the run manifest as ``overlap``.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

QUEUE_BATCHES = 4  # batches waiting for the scorer before generation waits for it


@dataclass
class OverlapStats:
    generation_s: float = 0.0  # wall time of the generation the scorer ran beside
    scoring_s: float = 0.0  # time the scorer thread spent scoring
    hidden_s: float = 0.0  # scoring time that fell while generation was still running
    images: int = 0

    def add(self, other: OverlapStats) -> None:
        self.generation_s += other.generation_s
        self.scoring_s += other.scoring_s
        self.hidden_s += other.hidden_s
        self.images += other.images

    def as_dict(self) -> dict:
        share = self.hidden_s / self.scoring_s if self.scoring_s else None
        return {"generation_s": round(self.generation_s, 3), "scoring_s": round(self.scoring_s, 3), "hidden_s": round(self.hidden_s, 3),
                "images_scored_during_generation": self.images, "hidden_share": None if share is None else round(share, 3)}


@dataclass
class Overlap:
    """``with Overlap(store_root, scorers) as overlap: engine.generate(..., on_batch=overlap.submit)``."""

    store_root: object
    scorers: list  # per-image scorers (``needs_reference`` is False)
    stats: OverlapStats = field(default_factory=OverlapStats)

    def __post_init__(self):
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self._error: BaseException | None = None
        self._generation_end: float | None = None
        self._thread = threading.Thread(target=self._work, name="harness-scorer", daemon=True)

    def __enter__(self) -> Overlap:
        self._started = time.perf_counter()
        return self

    def submit(self, batch: list[tuple[str, object]]) -> None:
        """A finished batch: (image key, spec) pairs whose PNGs and rows are stored."""
        if not self.scorers or self._error is not None:
            return
        if not self._thread.is_alive():
            if self._thread.ident is not None:  # it ended: a batch put on its full queue would block generation
                return
            self._thread.start()  # started on the first batch: nothing generated, no thread
        self._queue.put(batch)

    def __exit__(self, exc_type, exc, tb):
        self._generation_end = time.perf_counter()
        if self._thread.is_alive():
            self.stats.generation_s = self._generation_end - self._started
            self._queue.put(None)
            self._thread.join()
        if self._error is not None and exc_type is None:
            raise self._error
        return False

    def _work(self) -> None:
        import io

        from PIL import Image

        from harness.api import HarnessError, checked_score
        from harness.store import Store

        store = None
        try:
            store = Store(self.store_root)
        except Exception as err:  # noqa: BLE001 - e.g. "database is locked" past its patience: raised in the caller, in one line
            self._error = HarnessError(f"scoring beside generation could not open the store {self.store_root} ({err}); "
                                       "run the same command again (finished work is kept)")
            self._error.__cause__ = err
        try:
            while (batch := self._queue.get()) is not None:
                if self._error is not None:
                    continue  # drain, so that the generating side never blocks on a full queue
                began = time.perf_counter()
                try:
                    images = []
                    for key, _ in batch:
                        data = store.files.read(store.image_path(key), "cached image")  # never score a damaged file
                        with Image.open(io.BytesIO(data)) as image:
                            images.append(image.convert("RGB"))
                    specs = [spec for _, spec in batch]
                    for scorer in self.scorers:
                        versions = {key: scorer.raw_version(spec) for key, spec in batch}
                        known = store.raw_scores_per_version(scorer.name, versions)
                        todo = [index for index, (key, _) in enumerate(batch) if key not in known]
                        if todo:
                            raws = checked_score(scorer, [images[i] for i in todo], [specs[i] for i in todo])
                            store.add_raw_scores_per_version(scorer.name, versions, {batch[i][0]: raw for i, raw in zip(todo, raws)})
                    self.stats.images += len(batch)
                except BaseException as err:  # raised again in the caller
                    self._error = err
                ended = time.perf_counter()
                generation_end = self._generation_end or ended
                self.stats.scoring_s += ended - began
                self.stats.hidden_s += max(0.0, min(ended, generation_end) - began)
        finally:
            if store is not None:
                store.close()
