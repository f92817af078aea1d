"""Training on real COCO photographs with a tiny POET: learning, exact resume, bad data, crash safety."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from poet.checkpoint import read_checkpoint
from poet.errors import DatasetError, PoetError
from poet.model import PoetConfig, build_model
from poet.processing import PreprocessConfig
from poet.train import precision
from poet.train.config import TrainConfig, parse_config
from poet.train.criterion import SetCriterion
from poet.train.dataset import CocoKeypoints, collate
from poet.train.loop import Trainer
from poet.train.transforms import TrainTransform

TINY_MODEL = dict(
    backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=2, dim_feedforward=64, num_queries=8
)


def tiny_training(coco_root: Path, output: Path, **overrides) -> TrainConfig:
    values = dict(
        data=str(coco_root),
        input_size=[160, 160],
        epochs=1,
        batch_size=2,
        num_workers=0,
        output_dir=str(output),
        eval_every=0,
        progress=False,
        tensorboard=False,
        lr_backbone=1e-4,
        **TINY_MODEL,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_loader_reads_coco_train_and_val(coco):
    preprocess = PreprocessConfig(input_size=(256, 256))
    for split in ("train2017", "val2017"):
        dataset = CocoKeypoints(
            coco / "annotations" / f"person_keypoints_{split}.json",
            coco / split,
            preprocess,
            TrainTransform((256, 256)),
        )
        images = json.loads((coco / "annotations" / f"person_keypoints_{split}.json").read_text())["images"]
        assert len(dataset) >= 4 and len(dataset) + dataset.skipped.reasons["without people"] == len(images)
        batch = collate([dataset[i] for i in range(len(dataset))])
        assert batch.images.shape[0] == len(dataset) and batch.images.shape[2] <= 256
        for target in batch.targets:
            keypoints = target["keypoints"]
            assert keypoints.shape[1] == 54 and ((keypoints >= 0) & (keypoints <= 1)).all()
            # Label 0 exactly for people without a visible keypoint, and their centre is unsupervised.
            no_visible = keypoints[:, 5::3].sum(dim=1) == 0
            assert torch.equal(target["labels"] == 0, no_visible)
            assert torch.equal(keypoints[:, 2] == 0, no_visible)


def test_loader_workers_kept_across_epochs_augment_each_epoch_anew(coco, tmp_path):
    """The training loader's workers outlive an epoch and still draw that epoch's augmentation."""
    trainer = Trainer(tiny_training(coco, tmp_path, num_workers=2))
    assert trainer.loader.persistent_workers
    loaded = []
    for epoch in (0, 1):
        trainer.sampler.set_epoch(epoch)
        trainer.train_set.set_epoch(epoch)
        order = list(trainer.sampler)
        batches = list(trainer.loader)
        expected = [collate([trainer.train_set[i] for i in order[2 * k : 2 * k + 2]]) for k in range(len(batches))]
        for batch, wanted in zip(batches, expected, strict=True):
            assert torch.equal(batch.images, wanted.images)
        loaded.append({int(t["image_id"]): t["keypoints"] for b in batches for t in b.targets})
    assert any(not torch.equal(loaded[0][i], loaded[1][i]) for i in loaded[0].keys() & loaded[1].keys())


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))],
)
def test_step_stages_split_the_epoch_time(coco, tmp_path, device):
    """Every stage of a step is timed (on CUDA by stream events, without a synchronize a stage) and the
    stages add up to no more than the epoch took."""
    trainer = Trainer(tiny_training(coco, tmp_path, device=device, max_steps_per_epoch=2))
    started = time.perf_counter()
    stats = trainer.train_one_epoch(0)
    elapsed = time.perf_counter() - started
    assert stats.steps == 2
    assert set(stats.seconds) == {"data", "forward", "matching_and_loss", "backward_and_step"}
    assert all(seconds > 0 for seconds in stats.seconds.values())
    assert 0.5 * elapsed < sum(stats.seconds.values()) <= elapsed


def test_batch_without_padding_has_no_mask_and_the_same_outputs(coco):
    """Same-size images need no padding mask; the model's answer is the one an all-False mask gives."""
    dataset = CocoKeypoints(
        coco / "annotations" / "person_keypoints_val2017.json",
        coco / "val2017",
        PreprocessConfig(input_size=(128, 128)),
    )
    mixed = collate([dataset[i] for i in range(4)])  # photographs of different shapes: padded
    assert mixed.mask is not None and mixed.mask.any()
    same = collate([dataset[0], dataset[0]])
    assert same.mask is None
    model = build_model(PoetConfig(**TINY_MODEL, dropout=0.0)).eval()
    all_false = torch.zeros(2, *same.images.shape[2:], dtype=torch.bool)
    without, with_false = model(same.images, None), model(same.images, all_false)
    for key in ("pred_logits", "pred_kpts"):
        assert torch.equal(without[key], with_false[key])


def test_a_few_steps_on_a_fixed_batch_lower_the_loss(coco_batch):
    torch.manual_seed(0)
    batch = coco_batch
    model = build_model(PoetConfig(**TINY_MODEL, dropout=0.0)).train()
    criterion = SetCriterion(num_decoder_layers=2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(30):
        total = criterion.weighted_total(criterion(model(batch.images, batch.mask), batch.targets))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5]), losses


@pytest.mark.parametrize(
    ("encoder_aux_coef", "mixed"), [(0.0, False), (1.0, False), (0.0, True)], ids=["authors", "encoder-aux", "amp"]
)
def test_resumed_run_reproduces_the_uninterrupted_run_exactly(coco, tmp_path, monkeypatch, encoder_aux_coef, mixed):
    settings = dict(epochs=3, max_steps_per_epoch=3, lr_drops=[2], dropout=0.1, encoder_aux_coef=encoder_aux_coef)
    if mixed:  # bfloat16 autocast and channels-last tensors, emulated where the CPU lacks bfloat16 instructions
        monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: True)
        settings.update(amp=True, channels_last=True)
    straight = Trainer(tiny_training(coco, tmp_path / "straight", **settings))
    straight.fit()
    interrupted = Trainer(tiny_training(coco, tmp_path / "resumed", **{**settings, "epochs": 1}))
    interrupted.fit()
    resumed = Trainer(
        tiny_training(coco, tmp_path / "resumed", **settings, resume=str(tmp_path / "resumed" / "checkpoint.pth"))
    )
    assert resumed.start_epoch == 1
    resumed.fit()
    for epoch in (1, 2):
        assert resumed.step_losses[epoch] == straight.step_losses[epoch]
    final_a = read_checkpoint(tmp_path / "straight" / "checkpoint.pth")
    final_b = read_checkpoint(tmp_path / "resumed" / "checkpoint.pth")
    assert all(torch.equal(final_a.state_dict[k], final_b.state_dict[k]) for k in final_a.state_dict)
    assert resumed.precision.dtype == (torch.bfloat16 if mixed else None)
    rows = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("epoch,lr,loss")
    # The training-only encoder head resumes too, outside the model's (the authors') state dict.
    assert ("encoder_head" in final_a.extra) == (encoder_aux_coef > 0)
    assert not any(key.startswith("head.") for key in final_a.state_dict)
    if encoder_aux_coef > 0:
        head_a, head_b = final_a.extra["encoder_head"], final_b.extra["encoder_head"]
        assert all(torch.equal(head_a[k], head_b[k]) for k in head_a)
        assert "loss_enc_kpts" in rows[0]


def test_resuming_with_the_encoder_head_needs_a_checkpoint_that_has_one(coco, tmp_path):
    Trainer(tiny_training(coco, tmp_path, max_steps_per_epoch=1)).fit()
    resumed = tiny_training(coco, tmp_path, epochs=2, encoder_aux_coef=1.0, resume=str(tmp_path / "checkpoint.pth"))
    with pytest.raises(PoetError, match="trained without --encoder-aux-coef"):
        Trainer(resumed)


def test_one_epoch_on_coco_with_evaluation_and_best_checkpoint(coco, tmp_path):
    trainer = Trainer(tiny_training(coco, tmp_path, eval_every=1, eval_limit=6, batch_size=4))
    history = trainer.fit()
    assert history[0]["val_AP"] >= 0.0 and history[0]["images_per_second"] > 0
    assert (tmp_path / "best.pth").is_file() and (tmp_path / "checkpoint.pth").is_file()
    assert {p.name for p in tmp_path.iterdir()} == {"best.pth", "checkpoint.pth", "metrics.csv"}


def _copy_coco(coco: Path, destination: Path) -> Path:
    shutil.copytree(coco, destination)
    for path in destination.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return destination


def test_bad_images_are_skipped_counted_and_reported(coco, tmp_path):
    root = _copy_coco(coco, tmp_path / "coco")
    # Trained on the validation split here: it has an image without people as well.
    annotations = json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text())
    with_people = sorted({a["image_id"] for a in annotations["annotations"]})
    names = {i["id"]: i["file_name"] for i in annotations["images"]}
    (root / "val2017" / names[with_people[0]]).unlink()
    (root / "val2017" / names[with_people[1]]).write_bytes(b"broken jpeg")
    trainer = Trainer(tiny_training(root, tmp_path / "out", batch_size=4, train_split="val2017"))
    assert trainer.train_set.skipped.reasons["missing image files"] == 1
    assert trainer.train_set.skipped.reasons["without people"] > 0
    history = trainer.fit()
    assert history[0]["skipped_images"] == 1


def test_coco_file_with_missing_keys_stops_before_training(coco, tmp_path):
    root = _copy_coco(coco, tmp_path / "coco")
    path = root / "annotations" / "person_keypoints_train2017.json"
    data = json.loads(path.read_text())
    del data["images"]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="person_keypoints_train2017.json has no 'images'"):
        Trainer(tiny_training(root, tmp_path / "out"))


def test_config_file_and_flags(tmp_path):
    (tmp_path / "recipe.yaml").write_text("epochs: 7\nlr: 0.0003\ninput_size: [192, 160]\n")
    (tmp_path / "recipe.toml").write_text("epochs = 9\nbatch_size = 6\n")
    config = parse_config(["--config", str(tmp_path / "recipe.yaml"), "--lr", "0.001"])
    assert (config.epochs, config.lr, config.input_size) == (7, 0.001, [192, 160])
    assert parse_config(["--config", str(tmp_path / "recipe.toml")]).batch_size == 6
    # PyYAML reads 1e-4 (no dot) as a string; it is taken as the number it spells.
    (tmp_path / "exponent.yaml").write_text("lr: 1e-4\nlr_backbone: 0\n")
    assert parse_config(["--config", str(tmp_path / "exponent.yaml")]).lr == 1e-4
    (tmp_path / "typo.yaml").write_text("epohcs: 3\n")
    with pytest.raises(PoetError, match=r"typo\.yaml: unknown option 'epohcs' \(did you mean 'epochs'\?\)"):
        parse_config(["--config", str(tmp_path / "typo.yaml")])
    (tmp_path / "narrow.yaml").write_text("backbone: resnet18\nbackbone_width: 20\n")
    with pytest.raises(PoetError, match=r"narrow\.yaml: backbone_width must be a positive multiple of 8"):
        parse_config(["--config", str(tmp_path / "narrow.yaml")])
    with pytest.raises(PoetError, match="--backbone must be one of"):
        parse_config(["--backbone", "vgg16"])
    with pytest.raises(PoetError, match="--encoder-aux-coef must be 0 or more, got -1.0"):
        parse_config(["--encoder-aux-coef", "-1"])


def test_every_bundled_recipe_passes_the_checks():
    from poet.train.config import bundled_recipes

    for name in bundled_recipes():
        config = parse_config(["--config", name])
        assert config.model_config() and config.preprocess()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr: fast\n", "lr must be a finite number, got 'fast' (a string)"),
        ("lr: [0.1, 0.2]\n", "lr must be a number, not a list or table, got [0.1, 0.2] (a list)"),
        ("lr: null\n", "lr must be a number, got null"),
        ("lr: .nan\n", "lr must be a finite number, got nan"),
        ("lr: -0.001\n", "lr must be above 0, got -0.001"),
        ("epochs: true\n", "epochs must be a whole number, got True (a boolean)"),
        ("epochs: 2.5\n", "epochs must be a whole number, got 2.5"),
        ("epochs: 0\n", "epochs must be at least 1, got 0"),
        ("batch_size: 0\n", "batch_size must be at least 1, got 0"),
        ("batch_size: '8'\n", "batch_size must be a whole number, got '8' (a string)"),
        ("input_size: 128\n", "input_size must be a list of whole numbers, got 128 (write [128, 128] for a square)"),
        ("input_size: [128]\n", "input_size must be two whole numbers of at least 32 (height width), got [128]"),
        ("input_size: [16, 128]\n", "input_size must be two whole numbers of at least 32"),
        ("input_size: [128.5, 128]\n", "input_size[0] must be a whole number, got 128.5"),
        ("lr_drops: 5\n", "lr_drops must be a list of whole numbers, got 5 (write [5])"),
        ("lr_drops: [0]\n", "lr_drops must be epochs of at least 1"),
        ("flip_prob: 1.5\n", "flip_prob must be a probability from 0 to 1, got 1.5"),
        ("min_scale: 0\n", "min_scale must be above 0 and at most 1"),
        ("dropout: 1\n", "dropout must be at least 0 and below 1"),
        ("amp: 'no'\n", "amp must be true or false, got 'no' (a string)"),
        ("data: 2017\n", "data must be a string, got 2017 (quote it in the file)"),
        ("device: gpu\n", "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("nheads: 7\n", "nheads 7 does not divide hidden_dim 256"),
        ("nheads: 0\n", "nheads must be at least 1, got 0"),
        ("backbone: resnet51\n", "got 'resnet51' (did you mean 'resnet50'?)"),
        ("position_embedding: learned\ninput_size: [2048, 2048]\n", "'learned' has 50 positions a side"),
        ("learning_rate: 0.1\n", "unknown option 'learning_rate' (did you mean 'lr'?)"),
        ("lr: 0.1\nepochs: 3\nlr: 0.2\n", "is not valid YAML: the key 'lr' is given twice at line 3, column 1"),
        ("lr: [0.1\nepochs: 3\n", "is not valid YAML: expected ',' or ']', but got ':' at line 2, column 7"),
        ("- lr\n- epochs\n", "expected a mapping of option names to values, got ['lr', 'epochs'] (a list)"),
        ("lr: !!python/object/apply:os.system ['true']\n", "is not valid YAML: could not determine a constructor"),
    ],
)
def test_bad_config_values_are_one_line_naming_the_file_and_option(tmp_path, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(PoetError) as info:
        parse_config(["--config", str(path)])
    line = str(info.value)
    assert line.startswith(str(path)) and message in line and "\n" not in line


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.toml", "lr = \n", r"bad\.toml is not valid TOML: Invalid value \(at line 1, column 6\)"),
        ("nested.toml", "[model]\nlr = 1\n", r"nested\.toml: unknown option 'model'"),
        ("epochs.toml", "epochs = 3.0\n", r"epochs\.toml: epochs must be a whole number, got 3.0"),
    ],
)
def test_bad_toml_configs_are_one_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(PoetError, match=message) as info:
        parse_config(["--config", str(tmp_path / name)])
    assert "\n" not in str(info.value)


def test_config_files_that_are_not_text_or_not_files(tmp_path):
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00lr: 1")
    with pytest.raises(PoetError, match=r"binary\.yaml is not UTF-8 text"):
        parse_config(["--config", str(tmp_path / "binary.yaml")])
    with pytest.raises(PoetError, match="is a folder; expected a YAML or TOML file"):
        parse_config(["--config", str(tmp_path)])
    with pytest.raises(PoetError, match=r"absent\.yaml not found \(or give a bundled recipe: synthetic-small"):
        parse_config(["--config", str(tmp_path / "absent.yaml")])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--batch", "0"], "--batch must be at least 1, got 0"),
        (["--lr", "-1"], "--lr must be above 0, got -1.0"),
        (["--input-size", "16", "16"], "--input-size must be two whole numbers of at least 32"),
        (["--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
        (["--nheads", "3"], "the command line: nheads 3 does not divide hidden_dim 256"),
        (["--config", "synthetic-small", "--nheads", "7"], "recipe synthetic-small and the command line: nheads 7"),
    ],
)
def test_bad_flag_values_name_the_flag(argv, message):
    with pytest.raises(PoetError, match=message) as info:
        parse_config(argv)
    assert "\n" not in str(info.value)


def test_poet_train_prints_one_error_line_for_a_bad_config(tmp_path, capsys):
    from poet.train.cli import main

    (tmp_path / "bad.yaml").write_text("epochs: 0\n")
    assert main(["--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'bad.yaml'}: epochs must be at least 1, got 0\n"


def test_sigkill_during_checkpoint_write_leaves_previous_checkpoint_intact(tmp_path, tiny_config):
    """A writer killed half-way through leaves the old file loadable and unchanged."""
    path = tmp_path / "checkpoint.pth"
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        from poet.checkpoint import save_checkpoint
        from poet.model import PoetConfig, build_model
        model = build_model(PoetConfig(**{tiny_config.to_dict()!r}))
        save_checkpoint({str(path)!r}, model, epoch=0)
        real_save = torch.save
        def slow_save(obj, target):
            real_save(obj, target)
            with open(target, "r+b") as handle:
                handle.truncate(handle.seek(0, 2) // 2)
            print("writing", flush=True)
            time.sleep(60)
        torch.save = slow_save
        save_checkpoint({str(path)!r}, model, epoch=1)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert read_checkpoint(path).extra["epoch"] == 0


@pytest.mark.parametrize(
    "flags",
    [["--encoder-aux-coef", "0"], ["--encoder-aux-coef", "1"], ["--amp", "--channels-last"]],
    ids=["authors", "encoder-aux", "amp"],
)
def test_torchrun_ddp_on_cpu(coco, tmp_path, flags):
    """Two processes (gloo) train one short epoch together and rank 0 writes the checkpoint (with --amp: in
    bfloat16 where the CPU has it, else in float32 after a warning)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        "-m",
        "poet.train",
        "--data",
        str(coco),
        "--input-size",
        "128",
        "128",
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "2",
        "--num-workers",
        "0",
        "--eval-every",
        "0",
        "--no-progress",
        "--no-tensorboard",
        "--output-dir",
        str(tmp_path),
        "--device",
        "cpu",
        "--threads",
        "1",
        *flags,
    ]
    for key, value in TINY_MODEL.items():
        command += ["--" + key.replace("_", "-"), str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = read_checkpoint(tmp_path / "checkpoint.pth")
    assert isinstance(checkpoint.extra["rng"], list) and len(checkpoint.extra["rng"]) == 2
    if "--amp" in flags:
        said = "mixed precision: bfloat16 autocast" if precision.cpu_has_fast_bfloat16() else "no bfloat16 instructions"
        assert said in result.stderr
    assert np.isfinite(float((tmp_path / "metrics.csv").read_text().splitlines()[1].split(",")[2]))


def test_finetune_from_the_authors_format_keeps_their_architecture_and_weights(coco, tmp_path):
    import argparse

    source = build_model(PoetConfig(**{**TINY_MODEL, "num_queries": 5}))
    args = argparse.Namespace(backbone="resnet18", num_queries=5, lr_backbone=1e-5, aux_loss=True)
    torch.save({"model": source.state_dict(), "args": args, "epoch": 10}, tmp_path / "authors.pth")
    trainer = Trainer(tiny_training(coco, tmp_path / "out", finetune=str(tmp_path / "authors.pth")))
    assert trainer.model.config.num_queries == 5
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in source.state_dict().items())
    history = trainer.fit()
    assert np.isfinite(history[0]["loss"])


def test_a_checkpoint_that_fills_the_disk_is_one_error_line_and_the_previous_one_is_kept(coco, small_disk, capsys):
    """torch.save's writer fails with a RuntimeError, not an OSError; poet-train turns it into one line."""
    from poet.train.cli import main

    output = small_disk(4096)  # room for the first 2.6 MB checkpoint, not for its successor beside it
    flags = [
        "--data",
        str(coco),
        "--output-dir",
        str(output),
        "--epochs",
        "2",
        "--eval-every",
        "0",
        "--batch-size",
        "4",
    ]
    flags += ["--input-size", "96", "96", "--num-workers", "0", "--no-progress", "--no-tensorboard"]
    flags += ["--backbone", "resnet18", "--backbone-width", "8", "--hidden-dim", "32", "--nheads", "2"]
    flags += ["--enc-layers", "1", "--dec-layers", "2", "--dim-feedforward", "64", "--num-queries", "8"]
    assert main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    checkpoint = output / "checkpoint.pth"
    assert err == [
        f"error: cannot write {checkpoint}: no space left on device: torch.save failed "
        f"({err[0].split('torch.save failed (', 1)[1].rsplit(')', 1)[0]}); the earlier file is kept"
    ]
    assert read_checkpoint(checkpoint).extra["epoch"] == 0
    assert sorted(p.name for p in output.iterdir()) == ["checkpoint.pth", "metrics.csv"]


def test_a_failed_checkpoint_write_names_the_file_and_other_runtime_errors_keep_their_traceback(
    tmp_path, tiny_config, monkeypatch
):
    import torch

    from poet.checkpoint import save_checkpoint
    from poet.errors import OutputError

    model = build_model(tiny_config)
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(path, model, epoch=0)

    def failing_save(obj, target):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OutputError, match=f"cannot write {path}: torch.save failed .*; the earlier file is kept"):
        save_checkpoint(path, model, epoch=1)

    def buggy_save(obj, target):
        raise RuntimeError("a bug")

    monkeypatch.setattr(torch, "save", buggy_save)
    with pytest.raises(RuntimeError, match="a bug"):
        save_checkpoint(path, model, epoch=1)
    assert read_checkpoint(path).extra["epoch"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth"]
