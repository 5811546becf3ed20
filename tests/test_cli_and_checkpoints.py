"""The mimmx command's errors and help, and hashed, strictly loaded, atomically written model files."""

from __future__ import annotations

import shlex

import pytest
import torch

from mimmx.checkpoints import TrainingCheckpoint, hash_file, latest_checkpoint, load_strict, load_weights, save_weights
from mimmx.cli import main
from mimmx.errors import CheckpointError, DataError
from mimmx.methods import METHODS, method_arguments


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "generate", "splits", "audit", "evaluate", "predict", "export", "report", "methods"):
        assert f"\n  {command} " in out


def test_a_named_error_is_one_line_and_debug_shows_the_traceback(capsys, tmp_path):
    missing = tmp_path / "nowhere.json"
    assert main(["splits", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mimmx: error: ") and str(missing) in err
    with pytest.raises(DataError):
        main(["splits", str(missing), "--debug"])


def test_predict_errors_name_the_pattern(capsys, tmp_path):
    assert main(["predict", "bundles/mimmx_cxr", str(tmp_path / "*.png")]) == 1
    assert "matches no image file" in capsys.readouterr().err


def test_methods_prints_valid_shell(capsys):
    main(["methods"])
    lines = capsys.readouterr().out.splitlines()[1::2]
    printed = [shlex.split(line) for line in lines if "(the bundle as shipped)" not in line]
    assert printed == [method_arguments(m) for m in METHODS if method_arguments(m)]


def test_weights_are_hashed_and_a_changed_file_is_refused(tmp_path):
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "model.pt"
    digest = save_weights(net.state_dict(), path)
    assert hash_file(path).read_text().split() == [digest, "model.pt"]
    assert save_weights(net.state_dict(), tmp_path / "again.pt") == digest, "equal weights, equal bytes"
    load_strict(torch.nn.Linear(3, 2), load_weights(path), str(path))
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(CheckpointError, match=r"model\.pt: SHA-256 .* does not match"):
        load_weights(path)


def test_strict_loading_names_missing_unexpected_and_misshaped_keys():
    state = {"weight": torch.zeros(2, 4), "extra": torch.zeros(1)}
    with pytest.raises(CheckpointError) as info:
        load_strict(torch.nn.Linear(3, 2), state, "m.pt")
    message = str(info.value)
    assert "missing keys ['bias']" in message and "unexpected keys ['extra']" in message
    assert "weight (2, 4) vs network (2, 3)" in message


def test_training_checkpoint_keeps_the_newest_and_restores_it(tmp_path):
    from ignite.engine import Engine

    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    saver = TrainingCheckpoint(tmp_path, {"model": net, "trainer": engine})
    for epoch in (1, 2):
        engine.state.epoch, engine.state.iteration, engine.state.max_epochs = epoch, 3 * epoch, 5
        engine.state.epoch_length = 3
        saver.save(engine)
    assert latest_checkpoint(tmp_path).name == "training_checkpoint_epoch=2.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "training_checkpoint_epoch=2.pt",
        "training_checkpoint_epoch=2.pt.sha256",
    ]
    fresh_net, fresh = torch.nn.Linear(2, 2), Engine(lambda e, b: None)
    fresh.state.max_epochs = 5
    TrainingCheckpoint(tmp_path, {"model": fresh_net, "trainer": fresh}, resume_from="latest").restore(fresh)
    assert fresh.state.epoch == 2 and torch.equal(fresh_net.weight, net.weight)
