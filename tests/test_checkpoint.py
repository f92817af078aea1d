"""Checkpoints in our format and the authors', round-tripped exactly, and unreadable files rejected clearly."""

from __future__ import annotations

import argparse
import ast
import re

import pytest
import torch

from poet.checkpoint import load_model, read_checkpoint, save_checkpoint
from poet.errors import CheckpointError
from poet.model import PoetConfig, build_model, load_backbone_weights


def _authors_state_dict(listing, num_queries: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with every key and shape of the authors' POET-R50 listing."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for line in listing.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _, _ = line.split("\t")
        dims = tuple(ast.literal_eval(shape))
        if key == "query_embed.weight":
            dims = (num_queries, dims[1])
        tensor = torch.rand(dims, generator=generator)
        state[key] = tensor + 0.5 if key.endswith("running_var") else tensor
    return state


def _authors_args(**overrides) -> argparse.Namespace:
    defaults = dict(
        lr=1e-4,
        lr_backbone=1e-5,
        batch_size=2,
        backbone="resnet50",
        dilation5=False,
        dilation4=False,
        position_embedding="sine",
        enc_layers=6,
        dec_layers=6,
        dim_feedforward=2048,
        hidden_dim=256,
        dropout=0.1,
        nheads=8,
        num_queries=25,
        pre_norm=False,
        aux_loss=True,
        set_cost_class=1,
        kpts_loss_coef=5,
        dist_url="env://",
        distributed=False,
        output_dir="",
        device="cuda",
    )
    return argparse.Namespace(**{**defaults, **overrides})


@pytest.fixture(scope="module")
def authors_file(tmp_path_factory, state_dict_listing):
    state = _authors_state_dict(state_dict_listing, num_queries=25)
    path = tmp_path_factory.mktemp("authors") / "poet_r50.pth"
    torch.save({"model": state, "args": _authors_args(), "epoch": 249, "lr_scheduler": {"step_size": 200}}, path)
    return path, state


def test_authors_checkpoint_loads_exactly_with_shapes_from_the_file(authors_file):
    path, state = authors_file
    model = load_model(path)
    assert not model.training
    assert model.config.num_queries == 25 and model.config.backbone == "resnet50"
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[key], state[key]) for key in state)


def test_authors_args_disagreeing_with_weights_warn_and_weights_win(tmp_path, state_dict_listing):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": _authors_state_dict(state_dict_listing, 25), "args": _authors_args(num_queries=50)}, path)
    with pytest.warns(UserWarning, match="num_queries=50"):
        checkpoint = read_checkpoint(path)
    assert checkpoint.config.num_queries == 25 and checkpoint.source_format == "authors"


def test_authors_file_needs_no_arbitrary_unpickling(tmp_path, state_dict_listing):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"model": _authors_state_dict(state_dict_listing, 25), "args": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        read_checkpoint(path)


def test_our_format_round_trips_weights_config_and_preprocessing(authors_file, tmp_path):
    path, state = authors_file
    model = load_model(path, input_size=(512, 640))
    ours = tmp_path / "ours.pth"
    save_checkpoint(ours, model, epoch=3)
    raw = torch.load(ours, weights_only=True)  # plain weights-only load, no allow-listing
    assert raw["format"] == "poet-edge" and raw["epoch"] == 3
    again = load_model(ours)
    assert again.config == model.config
    assert again.preprocess == model.preprocess and again.preprocess.input_size == (512, 640)
    assert all(torch.equal(again.state_dict()[key], state[key]) for key in state)


def test_small_variants_round_trip(tmp_path, tiny_config):
    variants = (
        tiny_config,
        tiny_config.replace(pre_norm=True, position_embedding="learned", num_queries=9),
        tiny_config.replace(backbone_width=16, frozen_batchnorm=False),
    )
    for config in variants:
        model = build_model(config)
        save_checkpoint(tmp_path / "m.pth", model)
        assert read_checkpoint(tmp_path / "m.pth").config == config
        # The architecture is also recovered from the tensors alone (authors' layout without args).
        torch.save({"model": model.state_dict()}, tmp_path / "bare.pth")
        recovered = read_checkpoint(tmp_path / "bare.pth").config
        assert recovered.replace(nheads=config.nheads, dropout=config.dropout) == config


def test_truncated_checkpoint_names_the_file(tmp_path, tiny_checkpoint):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"truncated\.pth is not a readable POET checkpoint"):
        load_model(truncated)


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"hello, I am a text file\n", "not a readable POET checkpoint"), (None, "has no 'model' state dict")],
)
def test_non_checkpoint_files_are_rejected(tmp_path, payload, message):
    path = tmp_path / "not_a_checkpoint.pth"
    if payload is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(payload)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(path)
    assert "not_a_checkpoint.pth" in str(info.value)


def test_missing_checkpoint_and_mismatched_weights(tmp_path, tiny_config):
    with pytest.raises(CheckpointError, match="absent.pth not found"):
        load_model(tmp_path / "absent.pth")
    state = build_model(tiny_config).state_dict()
    del state["class_embed.weight"]
    torch.save({"model": state}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"partial\.pth does not match.*class_embed\.weight"):
        load_model(tmp_path / "partial.pth")


def test_backbone_weights_from_a_local_file_only(tmp_path, tiny_config):
    import torchvision

    model = build_model(tiny_config)
    with pytest.raises(CheckpointError, match="never downloads"):
        load_backbone_weights(model.backbone.body, tmp_path / "resnet18.pth")
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    load_backbone_weights(model.backbone.body, tmp_path / "resnet18.pth")
    assert torch.equal(model.backbone.body.body.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert torch.equal(model.backbone.body.body.bn1.running_var, reference.bn1.running_var)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(CheckpointError, match="resnet34.pth does not fit"):
        load_backbone_weights(model.backbone.body, tmp_path / "resnet34.pth")
    narrow = build_model(tiny_config.replace(backbone_width=32))
    with pytest.raises(CheckpointError, match="resnet18.pth has tensors of the wrong shape"):
        load_backbone_weights(narrow.backbone.body, tmp_path / "resnet18.pth")


def test_config_rejects_impossible_architectures():
    with pytest.raises(ValueError, match="backbone must be one of"):
        PoetConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="cannot be dilated"):
        PoetConfig(backbone="resnet18", dilation5=True)
    with pytest.raises(ValueError, match="backbone_width must be a positive multiple of 8"):
        PoetConfig(backbone_width=20)


# --- bad files, each one line naming the file and what is wrong ---------------------------------------------------


def _one_line(error: pytest.ExceptionInfo, *parts: str) -> str:
    """The error's message, checked to be one line holding every part."""
    line = str(error.value)
    assert "\n" not in line, line
    for part in parts:
        assert part in line, (part, line)
    return line


def _tiny_args(tiny_config, **overrides) -> argparse.Namespace:
    """The authors' args for ``tiny_config`` (the options their main.py saves), with ``overrides``."""
    values = {
        **{k: getattr(tiny_config, k) for k in ("backbone", "hidden_dim", "nheads", "enc_layers", "dec_layers")},
        **{k: getattr(tiny_config, k) for k in ("dim_feedforward", "num_queries", "dropout", "pre_norm")},
        "position_embedding": "sine",
        "dilation4": False,
        "dilation5": False,
        "aux_loss": True,
        "lr_backbone": 1e-5,
        "lr": 1e-4,
        "device": "cuda",
    }
    return argparse.Namespace(**{**values, **overrides})


@pytest.fixture(scope="module")
def tiny_state(tiny_config) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(tiny_config).state_dict()


@pytest.fixture
def ours(tiny_checkpoint) -> dict:
    """A fresh copy of ``tiny_checkpoint``'s contents, to damage."""
    raw = torch.load(tiny_checkpoint, weights_only=True)
    raw["model"] = dict(raw["model"])
    return raw


def test_files_that_are_no_checkpoint_at_all(tmp_path, tiny_checkpoint):
    import random

    cases = {
        "random.pth": (random.Random(0).randbytes(100), "random.pth is not a readable POET checkpoint: it is neither"),
        "empty.pth": (b"", "empty.pth is not a readable POET checkpoint: the file is empty"),
        "cut.pth": (
            tiny_checkpoint.read_bytes()[:20000],
            "cut.pth is not a readable POET checkpoint: the torch.save archive is truncated or damaged",
        ),
        "lfs.pth": (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n", "lfs.pth is a Git LFS"),
        "model.engine": (b"ftrt\x00\x00binary engine", "model.engine is a TensorRT engine, not a PyTorch checkpoint"),
    }
    for name, (payload, message) in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(CheckpointError) as info:
            load_model(tmp_path / name)
        _one_line(info, message)
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    _one_line(info, f"checkpoint {tmp_path} is a folder; expected a .pth file")


def test_an_onnx_model_given_as_a_checkpoint_is_named_as_one(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    for name in ("model.onnx", "renamed.pth"):
        onnx.save(helper.make_model(graph, producer_name="poet-edge"), tmp_path / name)
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(tmp_path / name)
        line = _one_line(info, f"{name} is an ONNX model, not a PyTorch checkpoint; give it to poet-run --model")
        assert "weights_only" not in line


def test_refused_pickles_and_other_torch_errors_are_one_short_line(tmp_path, tiny_state):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": tiny_state, "args": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "evil.pth")
    line = _one_line(info, "evil.pth is not a readable POET checkpoint: it holds a pickled print", "refuses")
    assert "weights_only" not in line and len(line) < 300


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "holds [1, 2] (a list), expected a dict with a 'model' state dict"),
        (torch.zeros(3), "holds a tensor of shape [3], expected a dict"),
        ({"model": [1, 2]}, "has no 'model' state dict"),
        ({"model": {"class_embed.bias": "hello"}}, "'model' entry 'class_embed.bias' is 'hello' (a string)"),
        ({"model": {1: torch.zeros(1)}}, "'model' has the key 1; expected tensor names"),
        ({"model": {"class_embed.bias": torch.zeros(3)}}, "its state dict has no 'query_embed.weight' tensor"),
        ({"model": {"query_embed.weight": torch.zeros(6)}}, "tensor 'query_embed.weight' has shape [6], expected 2"),
    ],
)
def test_checkpoints_of_the_wrong_structure(tmp_path, payload, message):
    path = tmp_path / "odd.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    _one_line(info, "odd.pth", message)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nheads": 3}, "its args and weights describe no valid POET: nheads 3 does not divide hidden_dim 32"),
        ({"nheads": "2"}, "args: nheads must be a whole number, got '2' (a string)"),
        ({"nheads": None}, "args: nheads must be a whole number, got None"),
        ({"hidden_dim": 32.0}, "args: hidden_dim must be a whole number, got 32.0"),
        ({"dropout": "0.1"}, "args: dropout must be a finite number, got '0.1' (a string)"),
        ({"aux_loss": "no"}, "args: aux_loss must be true or false, got 'no' (a string)"),
        ({"dilation5": 1}, "args: dilation5 must be true or false, got 1"),
        ({"dilation5": True}, "describe no valid POET: resnet18 has basic blocks, which cannot be dilated"),
        (
            {"backbone": "resnet51"},
            "args: backbone must be one of resnet18, resnet34, resnet50, resnet101, resnet152, "
            "got 'resnet51' (did you mean 'resnet50'?)",
        ),
        ({"position_embedding": "fourier"}, "args: position_embedding must be one of sine, learned, got 'fourier'"),
        ({"lr_backbone": "x"}, "args: lr_backbone must be a number, got 'x' (a string)"),
        ({"dropout": 1.5}, "describe no valid POET: dropout must be at least 0 and below 1, got 1.5"),
    ],
)
def test_bad_authors_args_name_the_file_and_field(tmp_path, tiny_config, tiny_state, overrides, message):
    path = tmp_path / "authors.pth"
    torch.save({"model": tiny_state, "args": _tiny_args(tiny_config, **overrides)}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value).startswith(str(path))
    _one_line(info, message)


def test_authors_args_that_are_not_a_namespace(tmp_path, tiny_config, tiny_state):
    torch.save({"model": tiny_state, "args": [1, 2]}, tmp_path / "list_args.pth")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "list_args.pth")
    _one_line(info, "list_args.pth: 'args' is [1, 2] (a list), expected the authors' argparse.Namespace")
    # Good args (as a Namespace or a dict) still load, and the file still loads without any.
    for args in (_tiny_args(tiny_config), vars(_tiny_args(tiny_config)), None):
        torch.save({"model": tiny_state, "args": args}, tmp_path / "fine.pth")
        assert read_checkpoint(tmp_path / "fine.pth").config.nheads == (tiny_config.nheads if args else 8)


def test_tensors_of_other_shapes_name_the_first_with_both_shapes(tmp_path, tiny_state, ours):
    state = {**tiny_state, "class_embed.weight": torch.zeros(5, 32)}
    torch.save({"model": state}, tmp_path / "authors.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "authors.pth")
    _one_line(
        info,
        "authors.pth does not match the POET architecture its weights and args describe: tensor 'class_embed.weight' "
        "has shape [5, 32] but that architecture needs [3, 32]",
    )
    ours["model"]["class_embed.weight"] = torch.zeros(5, 32)
    torch.save(ours, tmp_path / "ours.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "ours.pth")
    _one_line(info, "ours.pth does not match the POET architecture its config describes: tensor 'class_embed.weight'")


def test_a_config_disagreeing_with_the_weights_counts_the_mismatches(tmp_path, ours):
    ours["config"]["hidden_dim"] = 64
    torch.save(ours, tmp_path / "wider.pth")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "wider.pth")
    line = _one_line(info, "wider.pth does not match the POET architecture its config describes: tensor ")
    assert re.search(r"has shape \[\d+, 32\] but that architecture needs \[\d+, 64\] \(and \d+ more tensors", line)


def test_missing_and_unexpected_tensors_are_counted_with_examples(tmp_path, ours):
    for key in ("class_embed.bias", "class_embed.weight", "query_embed.weight"):
        del ours["model"][key]
    ours["model"]["extra.weight"] = torch.zeros(1)
    torch.save(ours, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "partial.pth")
    _one_line(
        info,
        "partial.pth does not match the POET architecture its config describes: 3 missing tensors (first: ",
        "class_embed.weight",
        "1 unexpected (first: extra.weight)",
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw.update(format_version="1"), "format_version must be a whole number of at least 1, got '1'"),
        (lambda raw: raw.update(format_version=99), "was written by a newer poet-edge (format 99)"),
        (lambda raw: raw.pop("preprocess"), "is a damaged poet-edge checkpoint: it has no 'preprocess' entry"),
        (lambda raw: raw["config"].update(nheads="2"), "config: nheads must be a whole number, got '2' (a string)"),
        (lambda raw: raw["config"].update(nheads=3), "config: nheads 3 does not divide hidden_dim 32"),
        (lambda raw: raw["config"].update(backbone="resnet5"), "config: backbone must be one of"),
        (lambda raw: raw["config"].update(pre_norm=None), "config: pre_norm must be true or false, got None"),
        (lambda raw: raw.update(config=[1]), "config: expected a mapping of architecture fields, got [1] (a list)"),
        (
            lambda raw: raw["preprocess"].update(input_size=[0]),
            "preprocess.input_size must be two whole numbers of at least 32 (height, width), got [0] (a list)",
        ),
        (
            lambda raw: raw["preprocess"].update(std=[0.2, 0.2, 0.0]),
            "preprocess.std must be above 0 (it divides), got [0.2, 0.2, 0.0]",
        ),
        (
            lambda raw: raw["preprocess"].update(mean=[0.5, "x", 0.5]),
            "preprocess.mean must be 3 finite numbers, got [0.5, 'x', 0.5] (a list)",
        ),
        (lambda raw: raw["model"].update({"class_embed.bias": 3}), "'model' entry 'class_embed.bias' is 3, expected a"),
    ],
)
def test_damaged_fields_of_our_format_name_the_file_and_field(tmp_path, ours, damage, message):
    damage(ours)
    torch.save(ours, tmp_path / "damaged.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "damaged.pth")
    _one_line(info, "damaged.pth", message)


def test_load_weights_checks_names_and_shapes_before_loading(tiny_config, tiny_state):
    from poet.checkpoint import load_weights

    model = build_model(tiny_config)
    load_weights(model, tiny_state, "in-memory")
    assert torch.equal(model.state_dict()["class_embed.weight"], tiny_state["class_embed.weight"])
    wider = build_model(tiny_config.replace(num_queries=9))
    with pytest.raises(CheckpointError) as info:
        load_weights(wider, tiny_state, "in-memory")
    _one_line(info, "in-memory does not match", "tensor 'query_embed.weight' has shape [6, 32]", "needs [9, 32]")


def test_poet_eval_and_poet_export_print_one_error_line(tmp_path, coco, tiny_state, capsys):
    from poet.cli import eval_main

    state = {**tiny_state, "class_embed.weight": torch.zeros(5, 32)}
    torch.save({"model": state}, tmp_path / "misshapen.pth")
    assert eval_main([str(tmp_path / "misshapen.pth"), "--data", str(coco)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "misshapen.pth does not match" in err and "'class_embed.weight' has shape [5, 32]" in err

    (tmp_path / "noise.pth").write_bytes(bytes(range(1, 101)))
    assert eval_main([str(tmp_path / "noise.pth"), "--data", str(coco)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "noise.pth is not a readable POET checkpoint" in err

    pytest.importorskip("onnxslim")
    from poet.optimize.cli import main as export_main

    code = export_main([str(tmp_path / "misshapen.pth"), "-o", str(tmp_path / "out.onnx"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "misshapen.pth does not match" in err
    assert not (tmp_path / "out.onnx").exists()
