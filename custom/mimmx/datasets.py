"""MONAI's CacheDataset, filled so that an unusable image stops the run with its name, not with an abort.

``CacheDataset`` loads its items in a thread pool; when one item fails (a 4D volume in a cohort of 3D scans) the
pool is torn down while its threads are still inside native readers, and the process dies at exit with
"terminate called without an active exception" (status 134) after the useful error scrolled by. Here the cache is
filled in the calling thread (MONAI uses one worker thread for ``num_workers`` 0 or 1 anyway), or, with more
workers, the pool is closed and joined before the first error is raised, so the run ends with the named
:class:`~mimmx.errors.DataError` and an ordinary non-zero status.
"""

from __future__ import annotations

from multiprocessing.pool import ThreadPool

from monai.data import CacheDataset
from tqdm import tqdm

__all__ = ["CheckedCacheDataset"]


class CheckedCacheDataset(CacheDataset):
    """``monai.data.CacheDataset`` whose cache filling fails cleanly (see the module docstring); same arguments."""

    def _fill_cache(self, indices: list[int] | None = None) -> list:
        if self.cache_num <= 0:
            return []
        indices = list(range(self.cache_num)) if indices is None else list(indices)
        bar = tqdm(total=len(indices), desc="Loading dataset", disable=not self.progress)
        try:
            if not self.num_workers or self.num_workers <= 1:
                out = []
                for idx in indices:
                    out.append(self._load_cache_item(idx))
                    bar.update()
                return out
            pool = ThreadPool(self.num_workers)
            try:
                out = []
                for item in pool.imap(self._load_cache_item, indices):
                    out.append(item)
                    bar.update()
                return out
            finally:
                pool.close()
                pool.join()
        finally:
            bar.close()
