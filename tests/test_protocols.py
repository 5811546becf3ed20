"""The protocol ladder (protocols/protocol in train.yaml) and the real-CheXpert protocol overlays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from mimmx.data.protocols import protocol_rho
from mimmx.data.synthetic_cxr import generate_cxr_cohort
from mimmx.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CXR = ROOT / "bundles" / "mimmx_cxr" / "configs"
MRI = ROOT / "bundles" / "mimmx_mri" / "configs"
SMALL = {"train": 240, "val": 80, "test_id": 80, "test_inverted": 80, "test_balanced": 96}


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    """A small synthetic CheXpert-format cohort (32 px images), shared by the tests of this module."""
    out = tmp_path_factory.mktemp("cxr_cohort")
    generate_cxr_cohort(out, num_patients=2400, image_size=32, rho=0.62, seed=0, progress=False)
    return out


def _parser(files: list[Path], **overrides) -> ConfigParser:
    parser = ConfigParser(ConfigParser.load_config_files([str(f) for f in files]))
    parser["bundle_root"] = str(ROOT / "bundles" / "mimmx_cxr")
    for key, value in overrides.items():
        parser[key] = value
    return parser


def test_protocol_lookup_and_unknown_name() -> None:
    protocols = {"single": {"sex": 0.9, "age": 0.5}, "all": {"sex": 0.9, "age": 0.9}}
    assert protocol_rho(protocols, "single") == {"sex": 0.9, "age": 0.5}
    with pytest.raises(ConfigError, match=r"protocol: unknown protocol 'pairs'.*\['all', 'single'\]"):
        protocol_rho(protocols, "pairs")
    with pytest.raises(ConfigError, match="protocols#all"):
        protocol_rho({"all": 0.9}, "all")


@pytest.mark.parametrize(
    ("configs", "expected"),
    [
        (CXR, {"single": {"sex": 0.9, "age": 0.5, "devices": 0.5}, "pair": {"sex": 0.9, "age": 0.9, "devices": 0.5}}),
        (MRI, {"single": {"field_strength": 0.9, "site": 0.5}, "pair": {"site": 0.9, "sex": 0.5}}),
    ],
)
def test_bundle_protocols(configs: Path, expected: dict) -> None:
    parser = _parser([configs / "train.yaml"])
    assert parser["protocol"] == "all"
    assert set(parser.get_parsed_content("splits#rho").values()) == {0.9}
    assert parser.get_parsed_content("datalist_file") == "datalist.json"  # the main job's file is unchanged
    for name, rho in expected.items():
        parser = _parser([configs / "train.yaml"], protocol=name)
        assert parser.get_parsed_content("splits#rho").items() >= rho.items()
        assert parser.get_parsed_content("datalist_file") == f"datalist_{name}.json"
    parser = _parser([configs / "train.yaml"], protocol="bogus")
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("splits#rho")
    chain = [info.value, info.value.__cause__, info.value.__context__]
    assert any(isinstance(e, ConfigError) and "single" in str(e) and "pair" in str(e) for e in chain)


def _split_report(datalist: str) -> dict:
    return json.loads(Path(datalist).read_text())["metadata"]["split_report"]


def test_protocol_sets_per_factor_rho_in_the_data_list(cohort_dir: Path) -> None:
    paths = {}
    for name in ("pair", "all"):
        parser = _parser([CXR / "train.yaml"], protocol=name, dataset_dir=str(cohort_dir), **{"splits#sizes": SMALL})
        paths[name] = parser.get_parsed_content("datalist")
    assert paths["pair"] != paths["all"]  # switching protocol never overwrites the other's data list
    pair, full = _split_report(paths["pair"]), _split_report(paths["all"])
    assert pair["rho"] == {"sex": 0.9, "age": 0.9, "devices": 0.5}
    assert full["rho"] == {"sex": 0.9, "age": 0.9, "devices": 0.9}
    for report, devices_rho in ((pair, 0.5), (full, 0.9)):
        train = report["splits"]["train"]
        assert all(b["achieved"] == b["requested"] for b in train["buckets"])  # every bucket filled exactly
        assert train["factors"]["sex"]["rho"] == pytest.approx(0.9, abs=0.02)
        assert train["factors"]["devices"]["rho"] == pytest.approx(devices_rho, abs=0.02)
        inverted = report["splits"]["test_inverted"]["factors"]["devices"]["rho"]
        assert inverted == pytest.approx(1 - devices_rho, abs=0.02)
    # both files survive: asking for "pair" again reuses its file instead of rebuilding it
    mtime = Path(paths["pair"]).stat().st_mtime_ns
    parser = _parser([CXR / "train.yaml"], protocol="pair", dataset_dir=str(cohort_dir), **{"splits#sizes": SMALL})
    assert parser.get_parsed_content("datalist") == paths["pair"]
    assert Path(paths["pair"]).stat().st_mtime_ns == mtime


def test_chexpert_mimm_overlay_builds_the_published_buckets(cohort_dir: Path) -> None:
    overlay = CXR / "protocol_chexpert_mimm.yaml"
    parser = _parser([CXR / "train.yaml", overlay])
    assert parser["cohort"]["synthetic"] is None and parser["image_size"] == [224, 224]
    assert [f["name"] for f in parser["factors"]] == ["sex"]
    sizes = parser["splits"]["sizes"]
    assert sizes["train"] == 21892 and sizes["test_inverted"] == 836 and sizes["test_balanced"] == 964
    # the published bucket counts follow from the overlay's rho and sizes
    from mimmx.data.splits import bucket_counts

    rho = parser.get_parsed_content("splits#rho")["sex"]
    train = bucket_counts({(0, 0): rho / 2, (0, 1): (1 - rho) / 2, (1, 0): (1 - rho) / 2, (1, 1): rho / 2}, 21892)
    swapped = bucket_counts({(0, 0): (1 - rho) / 2, (0, 1): rho / 2, (1, 0): rho / 2, (1, 1): (1 - rho) / 2}, 836)
    assert sorted(train.values()) == [546, 546, 10400, 10400]
    assert sorted(swapped.values()) == [21, 21, 397, 397]
    # and the overlay builds splits from a cohort in CheXpert's format (small sizes here)
    parser = _parser(
        [CXR / "train.yaml", overlay], dataset_dir=str(cohort_dir), **{"splits#sizes": {**SMALL, "test_balanced": 96}}
    )
    report = _split_report(parser.get_parsed_content("datalist"))
    assert list(report["factors"]) == ["sex"] and report["rho"] == {"sex": pytest.approx(0.950119)}
    assert report["splits"]["test_balanced"]["factors"]["sex"]["rho"] == pytest.approx(0.5)


def test_chexpert_multifactor_overlay_keeps_ap_films_and_two_factors(cohort_dir: Path) -> None:
    overlay = CXR / "protocol_chexpert_multifactor.yaml"
    parser = _parser([CXR / "train.yaml", overlay], dataset_dir=str(cohort_dir), **{"splits#sizes": SMALL})
    assert parser["cohort"]["views"] == ["AP"] and parser["image_size"] == [96, 96]
    path = parser.get_parsed_content("datalist")
    content = json.loads(Path(path).read_text())
    report = content["metadata"]["split_report"]
    assert report["rho"] == {"sex": 0.9, "age": 0.9}
    assert content["metadata"]["reader_report"]["dropped"].get("view", 0) > 0  # the PA films were left out
    assert all(b["achieved"] == b["requested"] for b in report["splits"]["train"]["buckets"])


@pytest.mark.parametrize("configs", [CXR, MRI])
def test_evaluate_config_resolves_the_protocol(configs: Path) -> None:
    """evaluate.yaml replaces train.yaml's imports (lists merge whole): it must import protocol_rho too."""
    parser = _parser([configs / "train.yaml", configs / "evaluate.yaml"], protocol="pair")
    assert sorted(parser.get_parsed_content("splits#rho").values()) == [0.5, 0.9, 0.9]
