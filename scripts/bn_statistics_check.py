"""Does a saved model's decision leakage come from its BatchNorm statistics? One benchmark run's model, scored on
test_balanced twice: as saved, and with every BatchNorm layer's running statistics recomputed on training images.

    python scripts/bn_statistics_check.py runs/benchmark/mri/pair/n6400/resample_avg@strong_aug/seed0
    python scripts/bn_statistics_check.py RUN_DIR --model model_last.pt --images 1280 --json out.json

The averaged weights (``average_epochs``, :mod:`mimmx.averaging`) carry an exponential average of the running
statistics too. While the weights move fast, that average is not the statistics of the averaged network's own
activations, and a factor that shifts image intensity (MRI field strength) shifts the scores through the mismatch.
Recomputing the statistics (``mimmx.averaging.recompute_batchnorm``, torch's
``swa_utils.update_bn``) on clean training images drawn equally from every target x factor group separates that
artefact from what the weights themselves have learnt. Both rows print the test_balanced AUROC and the decision
leakage per factor (0.5: none). Methods with ``average_bn_images`` (``resample_avg_bn``) recompute them during
training, before every validation, so that the kept epoch is chosen on the recomputed statistics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark import datalist_name  # noqa: E402
from measurement_context import BUNDLES  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402
from monai.data import DataLoader, Dataset, load_decathlon_datalist  # noqa: E402

from mimmx.averaging import balanced_images, image_batches, recompute_batchnorm  # noqa: E402
from mimmx.data.datalist import datalist_base_dir  # noqa: E402
from mimmx.evaluation import collect_outputs  # noqa: E402
from mimmx.factors import FactorSpec, label_keys, parse_factors  # noqa: E402
from mimmx.methods import REGIMES, method_overrides  # noqa: E402
from mimmx.metrics import auroc, decision_leakage  # noqa: E402
from mimmx.networks import CAUSAL  # noqa: E402


def run_config(run_dir: Path) -> tuple[dict[str, Any], ConfigParser, Path]:
    """The run's settings (run.json), its bundle config with the method's overrides, and its data list."""
    info_file = run_dir / "run.json"
    if not info_file.is_file():
        raise SystemExit(f"{info_file} not found: pass a benchmark run folder (runs/benchmark/<bundle>/...).")
    info = json.loads(info_file.read_text())
    regime = info.get("regime", "default")
    bundle = BUNDLES[info["bundle"]]
    files = [str(bundle / "configs" / "train.yaml")] + [str(bundle / "configs" / f) for f in REGIMES[regime]]
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({"bundle_root": str(bundle), "protocol": info["protocol"], "seed": info["seed"]})
    parser.update(method_overrides(info["method"]))
    file = datalist_name(info["protocol"], info["n_train"], info["seed"], info["method"] == "oracle")
    datalist = run_dir.resolve().parents[4] / f"data_{info['bundle']}" / file
    if not datalist.is_file():
        raise SystemExit(f"{datalist} not found: the benchmark prepares it before the run.")
    return info, parser, datalist


@torch.no_grad()
def score(network: torch.nn.Module, loader: DataLoader, factors: list[FactorSpec]) -> dict[str, Any]:
    """test_balanced AUROC and decision leakage per factor of the causal output."""
    probs, labels, _ = collect_outputs(network, loader, label_keys(factors), "cpu")
    causal, y = probs[CAUSAL], labels[CAUSAL]
    leak = {f.name: round(float(decision_leakage(y, causal[:, 1], labels[f.name])), 3) for f in factors}
    return {"test_balanced_auroc": round(float(auroc(y, causal)), 4), "decision_leakage": leak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a benchmark run folder (with run.json and models/)")
    ap.add_argument("--model", default="model.pt", help="file under models/ (model.pt: the kept epoch)")
    ap.add_argument("--images", type=int, default=1280, help="training images for the recomputed statistics")
    ap.add_argument("--json", type=Path, help="also write both rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    info, parser, datalist = run_config(args.run_dir)
    network = parser.get_parsed_content("network_def")
    model_file = args.run_dir / "models" / args.model
    network.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
    factors = parse_factors(parser.get_parsed_content("model_factors"))
    clean = parser.get_parsed_content("validate#preprocessing")
    batch_size = int(parser.get_parsed_content("batch_size"))
    base = datalist_base_dir(datalist)
    test = load_decathlon_datalist(str(datalist), False, "test_balanced", base_dir=base)
    train = load_decathlon_datalist(str(datalist), False, "train", base_dir=base)
    test_loader = DataLoader(Dataset(test, clean), batch_size=batch_size)
    images = balanced_images(train, clean, factors, args.images, seed=int(info["seed"]))
    rows = {"as_saved": score(network, test_loader, factors)}
    try:
        recompute_batchnorm(network, image_batches(images, batch_size))
    except ValueError as err:
        raise SystemExit(str(err)) from err
    rows["bn_recomputed"] = score(network, test_loader, factors)
    result = {"run": str(args.run_dir), "model": args.model, "images": args.images, **rows}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
