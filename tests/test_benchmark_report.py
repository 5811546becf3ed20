"""scripts/benchmark.py: rows from run folders, aggregation over seeds, the Markdown tables and the plot."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(inverted: float, leak: float) -> dict:
    return {
        "test_id_auroc": 0.95,
        "test_inverted_auroc": inverted,
        "test_balanced_auroc": 0.7,
        "worst_group_auroc": 0.6,
        "decision_leakage": {"sex": leak, "age": 0.5},
        "decision_leakage_ci": {"sex": [leak - 0.02, leak + 0.02], "age": [0.48, 0.52]},
        "decision_leakage_null": {"sex": 0.53, "age": 0.53},
        "leakage_auc": {"sex": 0.8, "age": 0.55},
        "test_inverted_auroc_ci_halfwidth": 0.025,
    }


def _fake_run(
    work: Path, bundle: str, protocol: str, method: str, seed: int, inverted: float, seconds: float, regime: str = ""
):
    folder = f"{method}@{regime}" if regime else method
    out = work / bundle / ("any" if method == "oracle" else protocol) / "n1600" / folder / f"seed{seed}"
    (out / "eval").mkdir(parents=True)
    spec = {"bundle": bundle, "protocol": protocol, "n_train": 1600, "method": method, "seed": seed}
    if regime:
        spec["regime"] = regime
    (out / "run.json").write_text(json.dumps({**spec, "smallest_group": 3 + seed}))
    for sel in ("model", "last_epoch", "balanced_val_selection"):
        value = inverted if sel == "model" else inverted - 0.1
        (out / "eval" / f"metrics_{sel}.json").write_text(json.dumps({"summary": _summary(value, 0.6 + seed / 10)}))
    leak = "val_decision_leakage_sex"
    history = [  # val AUROC ties (the first best is kept); the group-balanced one peaks later
        {"epoch": 1, "epoch_seconds": 99.0, "val_auc": 0.9, "val_balanced_auc": 0.6, leak: 0.7},
        {"epoch": 2, "epoch_seconds": seconds, "val_auc": 0.9, "val_balanced_auc": 0.8, leak: 0.5},
    ]
    (out / "eval" / "history.json").write_text(json.dumps(history))
    return out


def test_rows_aggregation_and_markdown_from_partial_runs(bench, tmp_path: Path) -> None:
    work = tmp_path / "runs"
    _fake_run(work, "cxr", "pair", "erm", 0, 0.2, 1.0)
    _fake_run(work, "cxr", "pair", "erm", 1, 0.4, 1.0)
    _fake_run(work, "cxr", "pair", "mimmx", 0, 0.5, 2.0)
    _fake_run(work, "cxr", "any", "oracle", 0, 0.9, 1.5)
    unfinished = _fake_run(work, "cxr", "pair", "dcor", 0, 0.5, 1.0)
    (unfinished / "eval" / "metrics_last_epoch.json").unlink()  # still running: left out

    rows = bench.collect_rows(work, {"cxr": ["single", "pair"]})
    assert sorted((r["protocol"], r["method"], r["seed"]) for r in rows) == [
        ("pair", "erm", 0), ("pair", "erm", 1), ("pair", "mimmx", 0), ("pair", "oracle", 0), ("single", "oracle", 0)
    ]  # fmt: skip
    mimmx = next(r for r in rows if r["method"] == "mimmx")
    assert mimmx["epoch_time_vs_erm"] == pytest.approx(2.0)  # the first (warm-up) epoch is left out
    assert mimmx["last_epoch"]["test_inverted_auroc"] == pytest.approx(0.4)
    assert mimmx["decision_leakage"] == {"sex": 0.6, "age": 0.5} and mimmx["smallest_group"] == 3
    assert (mimmx["selected_epoch"], mimmx["balanced_val_epoch"]) == (1, 2)
    assert mimmx["val_balanced_auroc"] == pytest.approx(0.6)  # the group-balanced val AUROC of the kept epoch
    assert mimmx["val_decision_leakage"] == {"sex": pytest.approx(0.7)}  # also read at the kept epoch
    assert mimmx["regime"] == "default"

    tables = bench.aggregate(rows)
    erm = tables[("cxr", "pair", 1600, "default")]["erm"]
    assert erm["seeds"] == 2
    assert erm["test_inverted_auroc"]["mean"] == pytest.approx(0.3)
    assert erm["test_inverted_auroc"]["sd"] == pytest.approx(0.1414, abs=1e-3)
    assert erm["decision_leakage"]["sex"]["mean"] == pytest.approx(0.65)
    assert erm["decision_leakage_halfwidth"]["sex"]["mean"] == pytest.approx(0.02)  # from each row's 95% CI
    assert erm["decision_leakage_null"]["age"]["mean"] == pytest.approx(0.53)
    assert erm["smallest_group"] == 3
    assert erm["selected_epoch"] == [1, 1] and erm["balanced_val_epoch"] == [2, 2]
    assert list(tables[("cxr", "pair", 1600, "default")]) == ["erm", "mimmx", "oracle"]  # METHODS order

    text = bench.markdown({"command": "python scripts/benchmark.py --x", "missing": 4}, rows)
    assert "## CXR, protocol `pair`, train 1600" in text and "## CXR, protocol `single`, train 1600" in text
    assert "| erm | 2 | 0.950 ± 0.000 | 0.300 ± 0.141 |" in text
    assert "| mimmx | 1 | 0.950 | 0.500 | 0.025 |" in text
    assert "decision sex" in text and "probe age" in text and "partial: 4 run(s)" in text
    assert "partial" not in bench.markdown({"missing": 0}, rows)
    assert "Smallest target x factor group of the training split: 3 images" in text
    assert " | 1, 1 / 2, 2 |" in text and " | 1 / 2 |" in text  # erm (two seeds), oracle (one)

    figure = tmp_path / "benchmark.png"
    bench.plot(figure, rows)
    assert figure.stat().st_size > 1000

    frontier = tmp_path / "frontier.png"
    assert not bench.plot_frontier(frontier, rows) and not frontier.exists()  # no pair/all cell at 6400 or more
    large = [{**r, "n_train": 6400} for r in rows]
    assert bench.highest_leakage(bench.aggregate(large)[("cxr", "pair", 6400, "default")]["erm"]) == pytest.approx(0.65)
    assert bench.plot_frontier(frontier, large) and frontier.stat().st_size > 1000
    text = bench.markdown({"frontier_figure": "results/frontier.png"}, large)
    assert "## Decision leakage against worst group" in text and "](results/frontier.png)" in text


def test_cohort_size_covers_the_scarcest_bucket(bench) -> None:
    sizes = bench.split_sizes(1600)
    ladder = [{"a": 0.9, "b": 0.9}]
    n = bench.cohort_size(ladder, sizes, keep=1.0)
    # the scarcest supply is a bucket with both factors against the target: share 0.5 * 0.38^2 of the cohort;
    # test_inverted alone asks it for 1500 * 0.5 * 0.81
    assert n * 0.5 * 0.38**2 >= 1500 * 0.5 * 0.81
    assert bench.cohort_size(ladder, bench.split_sizes(6400), keep=1.0) > n
    assert bench.cohort_size(ladder + [{"a": 0.5, "b": 0.5}], sizes, keep=0.5) >= 2 * n - 100


def _entry(inverted: float, worst: float, leak: dict[str, float], balanced: float = 0.8, seeds: int = 3) -> dict:
    one = {"mean": None, "sd": 0.0, "n": seeds}
    return {
        "seeds": seeds,
        "test_inverted_auroc": {**one, "mean": inverted},
        "test_balanced_auroc": {**one, "mean": balanced},
        "worst_group_auroc": {**one, "mean": worst},
        "decision_leakage": {f: {**one, "mean": v} for f, v in leak.items()},
    }


def test_targets_on_pair_at_6400_name_the_best_competitor_and_each_miss(bench) -> None:
    table = {
        "erm": _entry(0.60, 0.90, {"sex": 0.8}),
        "balanced_ce": _entry(0.80, 0.95, {"sex": 0.6}),
        "mimmx": _entry(0.78, 0.97, {"sex": 0.55}),
        "mimmx_no_queue": _entry(0.99, 0.99, {"sex": 0.5}),  # an ablation of MIMM-X: not a competitor
        "oracle": _entry(0.95, 0.95, {"sex": 0.5}),
    }
    lines = bench.targets(table, "pair", 6400)
    assert lines[0].startswith("test_inverted >= ERM + 0.15: 0.780 vs 0.600") and lines[0].endswith("met")
    assert "best other balanced_ce 0.800 -> **not met**" in lines[1]
    assert "best other balanced_ce 0.950 -> met" in lines[2]
    assert "highest sex 0.550 -> met" in lines[3]  # rows without CIs: no noise figures
    one = {"sd": 0.0, "n": 3}
    table["mimmx"]["decision_leakage_halfwidth"] = {"sex": {**one, "mean": 0.021}}
    table["mimmx"]["decision_leakage_null"] = {"sex": {**one, "mean": 0.532}}
    line = bench.targets(table, "pair", 6400)[3]
    assert "highest sex 0.550 (95% CI +-0.021; no dependence reads up to 0.532) -> met" in line


def test_targets_under_a_regime_are_checked_on_mimmx_s_setting_for_it(bench) -> None:
    """Under strong_aug the rules of docs/results.md chose a setting of MIMM-X's own (MIMMX_SETTINGS); the collapsed
    default is not what is checked there."""
    setting = bench.MIMMX_SETTINGS["strong_aug"]
    assert setting != "mimmx"
    table = {
        "erm": _entry(0.50, 0.88, {"sex": 0.8}),
        "balanced_ce_avg": _entry(0.99, 0.99, {"sex": 0.52}),
        "mimmx": _entry(0.35, 0.64, {"sex": 0.67}),
        setting: _entry(0.97, 0.97, {"sex": 0.52}),
    }
    lines = bench.targets(table, "pair", 6400, "strong_aug")
    assert lines[0] == f"MIMM-X's setting in this regime: `{setting}`"
    assert lines[1].startswith("test_inverted >= ERM + 0.15: 0.970 vs 0.500")
    assert "0.970 vs best other balanced_ce_avg 0.990 -> **not met**" in lines[2]
    assert bench.targets(table, "pair", 6400)[0].startswith("test_inverted >= ERM + 0.15: 0.350")  # default: mimmx


def test_targets_elsewhere_ask_for_no_loss_against_erm(bench) -> None:
    table = {"erm": _entry(0.20, 0.6, {}, balanced=0.7, seeds=1), "mimmx": _entry(0.25, 0.55, {}, 0.7, seeds=1)}
    lines = bench.targets(table, "all", 1600)
    assert [line.split(" ->")[1].split(" (")[0].strip() for line in lines] == ["met", "met", "**not met**"]
    assert "1 seed; the issue asks for 3" in lines[0]
    assert bench.targets({"erm": table["erm"]}, "pair", 6400) == []


def test_recorded_rows_are_kept_and_only_replaced_by_the_same_run(bench, tmp_path: Path) -> None:
    """A clean clone has no run folders: the documents keep every recorded row and add the new ones."""
    work = tmp_path / "runs"
    _fake_run(work, "cxr", "pair", "erm", 0, 0.2, 1.0)  # measured again: replaces the recorded seed-0 ERM row
    _fake_run(work, "cxr", "pair", "mimmx", 1, 0.7, 3.0)  # new
    old = {"protocol": "pair", "n_train": 1600, "decision_leakage": {}, "probe_leakage": {}}
    recorded = [
        {**old, "bundle": "cxr", "method": "erm", "seed": 0, "test_inverted_auroc": 0.9, "epoch_seconds": 5.0},
        {**old, "bundle": "cxr", "method": "mimmx", "seed": 0, "test_inverted_auroc": 0.6, "epoch_seconds": 2.0},
        {**old, "bundle": "mri", "method": "erm", "seed": 0, "test_inverted_auroc": 0.4, "epoch_seconds": 9.0},
    ]
    record = tmp_path / "benchmark.json"
    record.write_text(json.dumps({"runs": recorded}))

    rows = bench.merge_rows(bench.recorded_rows(record), bench.collect_rows(work))
    by_key = {(r["bundle"], r["method"], r["seed"]): r for r in rows}
    assert sorted(by_key) == [("cxr", "erm", 0), ("cxr", "mimmx", 0), ("cxr", "mimmx", 1), ("mri", "erm", 0)]
    assert by_key[("cxr", "erm", 0)]["test_inverted_auroc"] == pytest.approx(0.2)  # the new measurement
    assert by_key[("cxr", "mimmx", 0)]["test_inverted_auroc"] == pytest.approx(0.6)  # kept from the record
    # relative epoch times follow the ERM row that is now there (1.0 s), recorded rows included
    assert by_key[("cxr", "mimmx", 0)]["epoch_time_vs_erm"] == pytest.approx(2.0)
    assert by_key[("cxr", "mimmx", 1)]["epoch_time_vs_erm"] is None  # no ERM run of seed 1
    assert bench.recorded_rows(tmp_path / "absent.json") == []


def test_a_regime_is_a_section_of_its_own_with_its_own_erm_reference(bench, tmp_path: Path) -> None:
    """Runs of another training regime never mix with the default's: own rows, own tables, own targets."""
    work = tmp_path / "runs"
    _fake_run(work, "cxr", "pair", "erm", 0, 0.2, 1.0)
    _fake_run(work, "cxr", "pair", "erm", 0, 0.3, 4.0, regime="strong_aug")  # same seed, other regime: a row too
    _fake_run(work, "cxr", "pair", "mimmx", 0, 0.6, 8.0, regime="strong_aug")
    measured = bench.collect_rows(work)
    erm = next(r for r in measured if r["method"] == "erm" and r["regime"] == "default")
    old = {k: v for k, v in erm.items() if k != "regime"}  # a row recorded before regimes existed
    recorded = [{**old, "method": "mimmx", "epoch_seconds": 2.0, "test_inverted_auroc": 0.5}]
    rows = bench.merge_rows(recorded, measured)
    assert sorted((r["regime"], r["method"]) for r in rows) == [
        ("default", "erm"),
        ("default", "mimmx"),
        ("strong_aug", "erm"),
        ("strong_aug", "mimmx"),
    ]  # the recorded row, from before regimes, is a default one
    by_key = {(r["regime"], r["method"]): r for r in rows}
    assert by_key[("strong_aug", "mimmx")]["epoch_time_vs_erm"] == pytest.approx(2.0)  # its own regime's ERM
    assert by_key[("default", "mimmx")]["epoch_time_vs_erm"] == pytest.approx(2.0)
    tables = bench.aggregate(rows)
    assert set(tables) == {("cxr", "pair", 1600, "default"), ("cxr", "pair", 1600, "strong_aug")}
    assert tables[("cxr", "pair", 1600, "strong_aug")]["erm"]["test_inverted_auroc"]["mean"] == pytest.approx(0.3)
    text = bench.markdown({}, rows)
    assert (
        "## CXR, protocol `pair`, train 1600\n" in text
        and "## CXR, protocol `pair`, train 1600, regime `strong_aug`" in text
    )
    assert "- **strong_aug**: " in text
    assert "| mimmx | 1 / 1 | 0.500 -> 0.600 |" in text  # beside its own default-regime run
    figure = tmp_path / "benchmark.png"
    bench.plot(figure, rows)  # "mimmx [strong_aug]" is a line of its own
    assert figure.stat().st_size > 1000

    spec = {"bundle": "cxr", "protocol": "pair", "n_train": 1600, "method": "erm", "seed": 2, "regime": "strong_aug"}
    assert bench.run_dir(work, spec) == work / "cxr" / "pair" / "n1600" / "erm@strong_aug" / "seed2"
    assert bench.run_dir(work, {**spec, "regime": "default"}).parent.name == "erm"
    configs = bench.BUNDLES["cxr"] / "configs"

    def config_files(run_id: str, regime: str) -> str:
        cmd = bench.bundle_command(run_id, bench.BUNDLES["cxr"], {}, regime)
        return cmd[cmd.index("--config_file") + 1]

    assert config_files("training", "default") == str(configs / "train.yaml")
    merged = [str(configs / name) for name in ("train.yaml", "strong_augmentation.yaml")]
    assert config_files("training", "strong_aug") == str(merged)
    assert config_files("evaluating", "strong_aug") == str([*merged, str(configs / "evaluate.yaml")])


def test_every_regime_merges_files_both_bundles_have(bench) -> None:
    """A regime names config files by bundle-relative name: each must exist in every bundle, and the merged
    strong_aug_long config trains 40 epochs with strong_aug's augmentation."""
    from monai.bundle import ConfigParser

    for regime, names in bench.REGIMES.items():
        for bundle in bench.BUNDLES.values():
            missing = [n for n in names if not (bundle / "configs" / n).is_file()]
            assert not missing, f"regime {regime}: {bundle.name} lacks {missing}"
    assert set(bench.MIMMX_SETTINGS) == set(bench.REGIMES)
    for bundle in bench.BUNDLES.values():
        parser = ConfigParser()
        parser.read_config([str(bundle / "configs" / n) for n in ("train.yaml", *bench.REGIMES["strong_aug_long"])])
        assert parser["max_epochs"] == 40
        assert (
            parser["erase_size"]
            == ConfigParser.load_config_file(str(bundle / "configs" / "strong_augmentation.yaml"))["erase_size"]
        )


def test_estimate_reads_each_run_s_epoch_time_from_the_record(bench) -> None:
    """--estimate: a planned run trains its epochs at the recorded seconds per epoch of its own method (its own regime
    first), else ERM's, else another size's scaled; runs of a bundle with no row are counted, not guessed."""
    rows = [
        {"bundle": "cxr", "n_train": 6400, "method": "erm", "epoch_seconds": 10.0},
        {"bundle": "cxr", "n_train": 6400, "method": "mimmx", "epoch_seconds": 30.0},
        {"bundle": "cxr", "n_train": 6400, "method": "mimmx", "epoch_seconds": 60.0, "regime": "strong_aug"},
    ]
    plan = [{"bundle": "cxr", "n_train": 6400, "method": m, "regime": "default"} for m in ("erm", "mimmx", "dfr")]
    plan += [{"bundle": "mri", "n_train": 1600, "method": "erm", "regime": "default"}]
    scaled = {"bundle": "cxr", "n_train": 1600, "method": "mimmx", "regime": "default"}
    assert bench.epoch_seconds_of(scaled, rows) == pytest.approx(30.0 / 4)  # from 6400, by the images per epoch
    lines = bench.estimate(plan, rows, {"max_epochs": 72}, jobs=2)
    # (10 + 30 + 10 for dfr, from ERM) s x 72 epochs / 2 jobs = 1800 s = 0.5 h
    assert "| cxr | 6400 | default | 3 | 0 | 0.5 |" in lines
    assert "| mri | 1600 | default | 1 | 1 | 0.0 |" in lines
    assert bench.epoch_seconds_of({**plan[1], "regime": "strong_aug"}, rows) == 60.0
    # the budget: a regime's own files set it (strong_aug_long), else the benchmark's 20 of every recorded row
    assert bench.regime_epochs("strong_aug_long") == 40 and bench.regime_epochs("strong_aug") is None
    assert bench.BENCHMARK_EPOCHS == 20 and set(bench.LADDER_METHODS) <= set(bench.METHODS)


def test_a_broken_record_is_refused_by_name(bench, tmp_path: Path) -> None:
    record = tmp_path / "benchmark.json"
    record.write_text(json.dumps({"runs": [{"bundle": "cxr", "protocol": "pair", "seed": 0}]}))
    with pytest.raises(SystemExit, match=r"benchmark.json: runs\[0\] lacks"):
        bench.recorded_rows(record)
    record.write_text("{not json")
    with pytest.raises(SystemExit, match="not a benchmark record"):
        bench.recorded_rows(record)


def test_each_finished_run_reaches_the_documents_before_the_next_one_ends(bench, tmp_path, monkeypatch) -> None:
    """A benchmark stopped (or failing) part-way keeps the rows of the runs that finished, beside the record."""
    work, record, markdown = tmp_path / "runs", tmp_path / "benchmark.json", tmp_path / "benchmarks.md"
    recorded = bench.collect_row(_fake_run(tmp_path / "elsewhere", "mri", "pair", "erm", 0, 0.1, 2.0))
    record.write_text(json.dumps({"runs": [recorded]}))

    on_disk_before_mimmx_ended: list[tuple] = []

    def fake_run(spec, common, env, reuse):
        if spec["method"] == "mimmx":  # what the documents hold while this run is still going (a real run lasts
            deadline = time.monotonic() + 30  # minutes; the main thread writes as soon as the ERM run is collected)
            while time.monotonic() < deadline and len(bench.recorded_rows(record)) < 2:
                time.sleep(0.05)
            on_disk_before_mimmx_ended.extend((r["bundle"], r["method"]) for r in bench.recorded_rows(record))
            raise RuntimeError("mimmx failed")
        return _fake_run(work, spec["bundle"], spec["protocol"], spec["method"], spec["seed"], 0.3, 1.0)

    monkeypatch.setattr(bench, "run_one", fake_run)
    monkeypatch.setattr(bench, "prepare_data", lambda spec, common, oracle: "datalist.json")
    monkeypatch.setattr(bench, "smallest_group", lambda datalist: 3)
    argv = ["benchmark.py", "--bundles", "cxr", "--protocols", "pair", "--sizes", "1600", "--methods", "mimmx"]
    argv += ["--seeds", "1", "--jobs", "1", "--work_dir", str(work), "--json", str(record), "--markdown", str(markdown)]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit):  # one run failed: the exit status says so
        bench.main()
    # the ERM run's row was written before the next run ended (a failure raised inside a run is caught by main)
    assert sorted(on_disk_before_mimmx_ended) == [("cxr", "erm"), ("mri", "erm")] and "erm" in markdown.read_text()
    rows = json.loads(record.read_text())["runs"]
    assert sorted((r["bundle"], r["method"]) for r in rows) == [("cxr", "erm"), ("mri", "erm")]


def test_a_row_says_in_which_epoch_an_mi_penalty_began(bench):
    """The first epoch with a logged MI weight above 0, for the partition term and the decision term alike."""
    partition = [{"epoch": 1, "weight_factor_mi": 0.0}, {"epoch": 2, "weight_factor_mi": 0.25}]
    decision = [{"epoch": 1, "weight_decision_mi": 0.0}, {"epoch": 2}, {"epoch": 3, "weight_decision_mi": 1.0}]
    assert bench.penalty_start_epoch(partition) == 2
    assert bench.penalty_start_epoch(decision) == 3
    assert bench.penalty_start_epoch([{"epoch": 1, "weight_factor_mi": 0.0}, {"epoch": 2}]) is None  # never began
