"""Checkpoints in our format and the authors', round-tripped exactly, and unreadable files rejected clearly."""

from __future__ import annotations

import argparse
import ast

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
