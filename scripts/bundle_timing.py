"""A bundle's own training step on synthetic tensors, timed, for scripts/scaling.py.

The network, optimiser, loss terms (MIMM-X's ``[head_ce_balanced, factor_mi]`` or ERM's ``[head_ce]``) and the
training augmentation come from the bundle's train.yaml through MONAI's ConfigParser, and the step is
:class:`mimmx.engines.MIMMXTrainer`'s; only the cached, preprocessed images are replaced by random tensors of the
configured size (what the cache holds after preprocessing), so no cohort has to be on disk. Each measurement runs
in a forked child, so its peak memory is its own and not what an earlier, larger one left behind. The parent
runs no torch computation before forking: a fork taken after torch's OpenMP pool has worked can hang in the child.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from measurement_context import BUNDLES

ERM_TERMS = "$[@loss#head_ce]"  # the bundle's documented ERM switch


def preload() -> None:
    """Import what the measurements use before forking, so no child pays for the imports (seconds on a busy
    machine) inside what it measures."""
    import ignite.engine  # noqa: F401
    import monai.bundle  # noqa: F401
    import monai.transforms  # noqa: F401

    import mimmx.engines  # noqa: F401
    import mimmx.losses  # noqa: F401
    import mimmx.losses.group_weights  # noqa: F401
    import mimmx.networks  # noqa: F401


def bundle_parser(bundle: str, overrides: Mapping[str, Any] | None = None, extra_files: Sequence[str] = ()) -> Any:
    """train.yaml (plus overlays in ``extra_files``, names under configs/) of ``bundle`` with ``overrides`` set."""
    from monai.bundle import ConfigParser

    root = BUNDLES[bundle]
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / "train.yaml"), *(str(root / "configs" / f) for f in extra_files)])
    parser["bundle_root"] = str(root)
    parser["device"] = "$torch.device('cpu')"
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def synthetic_factors(count: int) -> list[dict]:
    """``count`` binary factors named f1..fK (the grid's factor axis)."""
    return [{"name": f"f{k + 1}", "column": f"f{k + 1}", "classes": [0, 1], "weight": 1.0} for k in range(count)]


def synthetic_items(n: int, shape: Sequence[int], factor_names: Sequence[str], seed: int = 0) -> list[dict]:
    """``n`` data-list items with a (1, *shape) image in [0, 1] and random binary target and factor labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n, 1 + len(factor_names)), generator=g)
    return [
        {
            "image": torch.rand(1, *shape, generator=g),
            "label": int(labels[i, 0]),
            **{name: int(labels[i, k + 1]) for k, name in enumerate(factor_names)},
        }
        for i in range(n)
    ]


def build_trainer(
    parser: Any, items: list[dict], mimmx: bool, max_epochs: int = 1, epoch_length: int | None = None
) -> Any:
    """The bundle's MIMMXTrainer over ``items`` with its augmentation, batch size, network, optimiser and terms.

    ``epoch_length`` below the loader's length makes each Ignite "epoch" a block of that many iterations, the
    loader continuing where the previous block stopped (to alternate short blocks of two trainers)."""
    import torch
    from monai.data import DataLoader, Dataset, set_track_meta
    from monai.transforms import Compose

    from mimmx.engines import MIMMXTrainer
    from mimmx.losses.group_weights import group_loss_weights

    factors = parser.get_parsed_content("model_factors")
    parser["loss"]["head_ce_balanced"]["group_weights"] = group_loss_weights(
        items, factors, parser.get_parsed_content("num_classes")
    )
    if not mimmx:
        parser["loss_terms"] = ERM_TERMS
    set_track_meta(False)  # as train.yaml's `training` does once the cache is filled
    torch.manual_seed(0)
    network = parser.get_parsed_content("network")
    loader = DataLoader(
        Dataset(items, Compose(parser.get_parsed_content("augmentation_transforms"))),
        batch_size=parser.get_parsed_content("batch_size"),
        shuffle=True,
        drop_last=True,
        num_workers=0,
    )
    return MIMMXTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=network,
        optimizer=parser.get_parsed_content("optimizer"),
        factors=factors,
        loss_terms=parser.get_parsed_content("loss_terms"),
        epoch_length=epoch_length,
    )


def fill_queues(trainer: Any, seed: int = 0) -> None:
    """Fill every loss term's feature queue with random rows, so the first timed step already costs what a step
    costs once training has run long enough (the default queue of 4096 rows fills after about 2.6 epochs)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for term in trainer.objective.values():
        queue = getattr(term, "queue", None)
        if queue is None:
            continue
        parts = {name: torch.randn(queue.size, dim, generator=g) for name, dim in queue.dims.items()}
        labels = {name: torch.randint(0, 2, (queue.size,), generator=g) for name in queue.label_names}
        queue.push(parts, labels)


def iteration_timer(trainer: Any) -> list[float]:
    """Seconds between consecutive completed iterations (the step plus loading the next batch)."""
    from ignite.engine import Events

    seconds: list[float] = []
    last: list[float] = []

    def tick(_: Any) -> None:
        now = time.perf_counter()
        if last:
            seconds.append(now - last[-1])
        last.append(now)

    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: last.clear())
    trainer.add_event_handler(Events.ITERATION_COMPLETED, tick)
    return seconds


def epoch_timer(trainer: Any) -> list[float]:
    """Seconds of each epoch the trainer completes, appended as they finish."""
    from ignite.engine import Events

    seconds: list[float] = []
    start: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: start.append(time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: seconds.append(time.perf_counter() - start[-1]))
    return seconds


def run_epochs(trainer: Any, epochs: int) -> None:
    """Train ``epochs`` more epochs, continuing where the trainer stopped (Ignite resumes a run below max_epochs)."""
    target = (trainer.state.epoch or 0) + epochs
    trainer.state.max_epochs = target
    trainer.run()


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset this process's peak resident set (Linux: 5 > /proc/self/clear_refs); False where that is unavailable."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _child(fn: Callable[[], dict], conn: Any, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    base = _status_kib("VmRSS")
    exact = _reset_peak() and base is not None
    start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        out = fn()
        peak = _status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_rss_mib"] = (peak - (base if exact else start_max)) / 1024
        out["peak_rss_method"] = "VmHWM after clear_refs" if exact else "ru_maxrss growth"
        conn.send(out)
    except BaseException as e:  # the parent re-raises it with the child's message
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


def isolated(fn: Callable[[], dict], threads: int) -> dict:
    """Run ``fn`` in a forked child with ``threads`` torch threads; its result plus the child's peak RSS growth."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(fn, send, threads))
    child.start()
    send.close()
    result = receive.recv()
    child.join()
    if "error" in result:
        raise RuntimeError(f"measurement failed in the child process: {result['error']}")
    return result
