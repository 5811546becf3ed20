"""Bootstrap resamples held as one flat index array, so that a metric is computed for all of them at once.

Calling a statistic once per resample (1000 resamples x every metric x every group x every split) made the
bootstrap most of an evaluation's time. Here the resamples are two flat arrays, the row drawn and the resample it
belongs to, and a metric is a few ``np.bincount`` calls over them: per-resample sums, counts per class or per
distinct score. The draws are those of a plain loop over ``numpy.random.default_rng(seed)``, so the intervals are
the ones the per-resample loop gave for the same seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["Resamples"]


@dataclass(frozen=True)
class Resamples:
    """``count`` resamples of ``n`` rows: entry ``i`` is row ``rows[i]`` of resample ``owner[i]``.

    ``owner`` is non-decreasing, so a resample's rows are contiguous. The identity (one resample holding every row
    once) turns a vectorised metric into its plain value.
    """

    rows: np.ndarray
    owner: np.ndarray
    count: int

    @classmethod
    def identity(cls, n: int) -> Resamples:
        """One resample: the rows themselves."""
        return cls(np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64), 1)

    @classmethod
    def draw(cls, n: int, n_boot: int, seed: int, clusters: np.ndarray | None = None) -> Resamples:
        """``n_boot`` resamples of ``n`` rows with replacement, or of whole clusters when some cluster (patient) has
        several rows: images of one patient are not independent, and resampling them one by one gives intervals that
        are too narrow."""
        rng = np.random.default_rng(seed)
        if clusters is not None:
            clusters = np.asarray(clusters).reshape(-1)
            if clusters.shape[0] != n:
                raise ValueError(f"clusters must give one id per row ({n}), got {clusters.shape[0]}")
            _, cluster_of = np.unique(clusters, return_inverse=True)
            k = int(cluster_of.max()) + 1 if n else 0
            if k < n:  # some patient has several rows
                draws = np.stack([rng.integers(0, k, size=k) for _ in range(n_boot)]).reshape(-1)
                return cls._of_clusters(cluster_of, k, draws, n_boot)
        rows = rng.integers(0, n, size=(n_boot, n)).reshape(-1).astype(np.int64)
        return cls(rows, np.repeat(np.arange(n_boot, dtype=np.int64), n), n_boot)

    @classmethod
    def _of_clusters(cls, cluster_of: np.ndarray, k: int, draws: np.ndarray, n_boot: int) -> Resamples:
        """Each drawn cluster's rows in row order, the draws of one resample after another."""
        order = np.argsort(cluster_of, kind="stable")
        size = np.bincount(cluster_of, minlength=k)
        start = np.concatenate([[0], np.cumsum(size)[:-1]])
        lengths = size[draws]
        first = np.repeat(start[draws], lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        per_resample = lengths.reshape(n_boot, -1).sum(axis=1)
        return cls(order[first + within], np.repeat(np.arange(n_boot, dtype=np.int64), per_resample), n_boot)

    def sizes(self) -> np.ndarray:
        """Rows per resample (float, to divide by)."""
        return np.bincount(self.owner, minlength=self.count).astype(np.float64)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per resample, the sum of ``values`` over its rows: shape (count,)."""
        return np.bincount(self.owner, weights=np.asarray(values, np.float64)[self.rows], minlength=self.count)

    def sums_by(self, codes: np.ndarray, n_codes: int, values: np.ndarray | None = None) -> np.ndarray:
        """Per resample and code (class, bin, distinct score), the sum of ``values`` (default: the row count) over
        its rows with that code: shape (count, n_codes)."""
        cell = self.owner * n_codes + np.asarray(codes, np.int64)[self.rows]
        weights = None if values is None else np.asarray(values, np.float64)[self.rows]
        return np.bincount(cell, weights=weights, minlength=self.count * n_codes).reshape(self.count, n_codes)

    def indices(self) -> list[np.ndarray]:
        """The row indices of each resample, for a statistic that has no vectorised form."""
        return np.split(self.rows, np.searchsorted(self.owner, np.arange(1, self.count)))

    def chunks(self, max_entries: int) -> Iterator[Resamples]:
        """Consecutive groups of whole resamples with about ``max_entries`` rows x codes each, to bound memory."""
        bounds = np.searchsorted(self.owner, np.arange(self.count + 1))
        per_chunk = max(1, int(max_entries) // max(1, int(bounds[1] - bounds[0]) if self.count else 1))
        for a in range(0, self.count, per_chunk):
            b = min(a + per_chunk, self.count)
            sl = slice(bounds[a], bounds[b])
            yield Resamples(self.rows[sl], self.owner[sl] - a, b - a)
