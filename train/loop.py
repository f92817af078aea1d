"""The training loop: one process or many (torchrun/DDP), checkpoints that resume exactly.

Each epoch: train, step the learning-rate schedule, write ``checkpoint.pth`` atomically (model,
optimizer, scheduler, grad scaler, epoch, RNG states), evaluate OKS AP every ``eval_every``
epochs (``best.pth`` keeps the best), and append to ``metrics.csv`` and TensorBoard.

Deliberate departures from the authors' loop: gradients are unscaled
before clipping under mixed precision (#19), and the matcher runs on any device (#17).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import shutil
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from poet.checkpoint import load_weights, read_checkpoint, save_checkpoint
from poet.errors import DatasetError, PoetError
from poet.evaluation import coco_split_paths, load_coco_keypoints
from poet.fileio import atomic_path, check_writable
from poet.model import POET, load_backbone_weights
from poet.runner import evaluate_model
from poet.train.config import TrainConfig
from poet.train.criterion import SetCriterion
from poet.train.dataset import Batch, CocoKeypoints, collate
from poet.train.encoder_aux import EncoderKeypointHead, EncoderKeypointLoss
from poet.train.matcher import HungarianMatcher
from poet.train.precision import training_precision
from poet.train.transforms import TrainTransform

logger = logging.getLogger("poet")


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the process group torchrun describes in the environment; a no-op for one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, distributed: Distributed) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PoetError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU")
        device = torch.device("cuda", distributed.local_rank if distributed.enabled else (device.index or 0))
        torch.cuda.set_device(device)
    return device


def rng_state() -> dict[str, Any]:
    """Every RNG a step can touch, as bytes and numbers: weights-only loadable and safe to all-gather."""
    _kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state().numpy().tobytes(),
        "cuda": [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {
            "keys": np.asarray(keys, dtype=np.uint32).tobytes(),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }


def _byte_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(_byte_tensor(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_byte_tensor(s) for s in state["cuda"]])
    numpy_state = state["numpy"]
    keys = np.frombuffer(numpy_state["keys"], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _coco_split(
    config: TrainConfig, split: str, annotations: str | None, images: str | None
) -> tuple[Path, Path] | None:
    if annotations and images:
        return Path(annotations), Path(images)
    if config.data is None:
        return None
    default_annotations, default_images = coco_split_paths(config.data, split)
    return Path(annotations or default_annotations), Path(images or default_images)


def build_model_for_training(config: TrainConfig) -> POET:
    """A new model, optionally with local ImageNet backbone weights, or one started from ``--finetune``."""
    if config.finetune:
        source = read_checkpoint(config.finetune)
        architecture = source.config.replace(dropout=config.dropout, train_backbone=config.lr_backbone > 0)
        if architecture != config.model_config():
            logger.info("fine-tuning keeps the architecture of %s: %s", config.finetune, architecture)
        model = POET(architecture, config.preprocess())
        load_weights(model, source.state_dict, config.finetune)
        return model
    model = POET(config.model_config(), config.preprocess())
    if config.backbone_weights:
        load_backbone_weights(model.backbone.body, config.backbone_weights)
    return model


class PoetWithEncoderHead(nn.Module):
    """POET and the training-only encoder head as one module, so DDP synchronises the head's gradients too."""

    def __init__(self, model: POET, head: EncoderKeypointHead) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None) -> dict[str, Any]:
        outputs = self.model(images, mask, return_memory=True)
        memory = outputs.pop("encoder_memory")
        outputs["encoder_predictions"] = self.head(memory)
        outputs["encoder_size"] = tuple(memory.shape[-2:])
        return outputs


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the backbone at its own learning rate (the authors' two parameter groups)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in trainable if "backbone" not in n], "lr": config.lr}]
    backbone = [p for n, p in trainable if "backbone" in n]
    if backbone:
        groups.append({"params": backbone, "lr": config.lr_backbone})
    # The fused kernel runs a step 4x faster than the default on a CPU (a tenth of a small model's step).
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=True)


def _scheduler_state(scheduler: torch.optim.lr_scheduler.MultiStepLR) -> dict[str, Any]:
    state = scheduler.state_dict()
    state["milestones"] = dict(state["milestones"])  # Counter is not weights-only loadable
    return state


@dataclass
class EpochStats:
    """Means of the weighted loss and its terms, and where the time went."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    steps: int = 0
    images: int = 0
    skipped: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # by stage, from the epoch's StageTimer
    step_losses: list[float] = field(default_factory=list)

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.steps) for k, v in self.sums.items()}


class StageTimer:
    """Seconds by stage of the training steps (data, forward, matching and loss, backward and step).

    On CUDA a stage ends at an event recorded in the device's stream, so the stages split the GPU's timeline
    (``data`` is the time the GPU waited for a batch and copied it) and timing them costs no host
    synchronize: one at each stage's end would stall the queue of kernels four times a step. Events are
    read once they have passed, or all at once by :meth:`seconds`.
    """

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
        self.totals: dict[str, float] = defaultdict(float)
        self.pending: deque[tuple[str, Any, Any]] = deque()
        self.last = self._mark()

    def _mark(self) -> Any:
        if self.stream is None:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(self.stream)
        return event

    def _fold(self, wait: bool) -> None:
        while self.pending:
            stage, start, end = self.pending[0]
            if self.stream is None:
                self.totals[stage] += end - start
            else:
                if not end.query():  # a query never waits; synchronize only where the caller asked to wait
                    if not wait:
                        return
                    end.synchronize()
                self.totals[stage] += start.elapsed_time(end) / 1000
            self.pending.popleft()

    def lap(self, stage: str) -> None:
        """End ``stage`` now and start the next."""
        now = self._mark()
        self.pending.append((stage, self.last, now))
        self.last = now
        self._fold(wait=False)

    def seconds(self) -> dict[str, float]:
        """Totals by stage so far; on CUDA this waits for the stream to reach the last stage's end."""
        self._fold(wait=True)
        return dict(self.totals)


class Trainer:
    """Holds the model, optimiser and data of one run; :meth:`fit` trains from the current epoch."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.dist = init_distributed()
        self.device = pick_device(config.device, self.dist)
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed + self.dist.rank)
        self.output_dir = Path(config.output_dir)
        check_writable(self.output_dir / "checkpoint.pth")  # a file in the way or a read-only disk: before any work
        train_paths = _coco_split(config, config.train_split, config.train_annotations, config.train_images)
        if train_paths is None:
            raise DatasetError("no training data: give --data COCO_ROOT or --train-annotations and --train-images")
        self.val_paths = None
        if config.eval_every > 0:
            self.val_paths = _coco_split(config, config.val_split, config.val_annotations, config.val_images)
        if self.val_paths and not self.val_paths[0].is_file():
            logger.warning("no validation annotations at %s: OKS AP will not be measured", self.val_paths[0])
            self.val_paths = None
        if self.val_paths:
            load_coco_keypoints(self.val_paths[0])  # a broken file fails now, not after the first epoch
        transform = TrainTransform(
            tuple(config.preprocess().input_size), config.flip_prob, config.crop_prob, config.min_scale
        )
        self.train_set = CocoKeypoints(*train_paths, config.preprocess(), transform, seed=config.seed)
        self.model = build_model_for_training(config).to(self.device)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.precision = training_precision(config.amp, config.amp_dtype, self.device)
        if self.precision.dtype is not None and self.dist.is_main:
            logger.info("mixed precision: %s autocast on %s", self.precision.name, self.device)
        matcher = HungarianMatcher(
            cost_class=config.set_cost_class,
            cost_kpts=config.set_cost_kpts,
            cost_ctrs=config.set_cost_ctrs,
            cost_deltas=config.set_cost_deltas,
            cost_kpts_class=config.set_cost_kpts_class,
        )
        self.criterion = SetCriterion(
            matcher,
            eos_coef=config.eos_coef,
            kpts_loss_coef=config.kpts_loss_coef,
            ctrs_loss_coef=config.ctrs_loss_coef,
            deltas_loss_coef=config.deltas_loss_coef,
            kpts_class_loss_coef=config.kpts_class_loss_coef,
            num_decoder_layers=self.model.config.dec_layers,
            aux_loss=self.model.config.aux_loss,
        ).to(self.device)
        # Training-only dense supervision of the encoder tokens (train/encoder_aux.py), off by default.
        self.encoder_head: EncoderKeypointHead | None = None
        self.encoder_loss: EncoderKeypointLoss | None = None
        self.trained: nn.Module = self.model
        if config.encoder_aux_coef > 0:
            self.encoder_head = EncoderKeypointHead(self.model.config.hidden_dim).to(self.device)
            self.encoder_loss = EncoderKeypointLoss(
                config.encoder_aux_coef, config.kpts_loss_coef, config.ctrs_loss_coef, config.deltas_loss_coef
            )
            self.trained = PoetWithEncoderHead(self.model, self.encoder_head)
        self.optimizer = build_optimizer(self.trained, config)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=config.lr_drops, gamma=config.lr_gamma
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.scaled)
        self.start_epoch = 0
        self.best_ap = -1.0
        self.history: list[dict[str, Any]] = []
        self.step_losses: dict[int, list[float]] = {}
        if config.resume:
            self._resume(Path(config.resume))
        self.sampler: DistributedSampler[Any] = DistributedSampler(
            self.train_set,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=config.seed,
            drop_last=True,
        )
        self.loader = DataLoader(
            self.train_set,
            batch_size=config.batch_size,
            sampler=self.sampler,
            collate_fn=collate,
            num_workers=config.num_workers,
            # Forked once, not at every epoch: each fork costs the parent seconds of copy-on-write page faults
            # (an 18-step POET-R50 epoch on this CPU: 26 s with a fork each epoch, 18-20 s with workers kept).
            persistent_workers=config.num_workers > 0,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
        )
        if len(self.loader) == 0:
            raise DatasetError(
                f"{len(self.train_set)} training images per process are fewer than one batch of {config.batch_size}"
            )
        self.ddp_model: torch.nn.Module = self.trained
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.trained, device_ids=ids)
        self.writer = self._tensorboard() if self.dist.is_main else None

    def _tensorboard(self) -> Any:
        if not self.config.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard is not installed: logging to metrics.csv only")
            return None
        return SummaryWriter(str(self.output_dir / "tensorboard"))

    def _resume(self, path: Path) -> None:
        checkpoint = read_checkpoint(path)
        state = checkpoint.extra
        missing = [k for k in ("optimizer", "scheduler", "scaler", "epoch", "rng") if k not in state]
        if missing:
            raise PoetError(
                f"{path} cannot resume training: it lacks {', '.join(missing)} "
                "(use --finetune to start from its weights)"
            )
        load_weights(self.model, checkpoint.state_dict, path)
        if self.encoder_head is not None:
            if "encoder_head" not in state:
                raise PoetError(
                    f"{path} was trained without --encoder-aux-coef: resume it with --encoder-aux-coef 0 "
                    "or start from its weights with --finetune"
                )
            self.encoder_head.load_state_dict(state["encoder_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        scheduler_state = dict(state["scheduler"])
        scheduler_state["milestones"] = Counter(scheduler_state["milestones"])
        self.scheduler.load_state_dict(scheduler_state)
        if state["scaler"]:  # empty when saved without float16 (nothing to carry over)
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"]) + 1
        self.best_ap = float(state.get("best_ap", -1.0))
        self.history = list(state.get("history", []))
        restore_rng_state(state["rng"][self.dist.rank] if isinstance(state["rng"], list) else state["rng"])
        logger.info("resumed from %s at epoch %d", path, self.start_epoch)

    def train_one_epoch(self, epoch: int) -> EpochStats:
        self.trained.train()
        self.criterion.train()
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        stats = EpochStats()
        steps = (
            len(self.loader)
            if self.config.max_steps_per_epoch is None
            else min(len(self.loader), self.config.max_steps_per_epoch)
        )
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            unit="step",
            disable=not (self.config.progress and self.dist.is_main),
        )
        timer = StageTimer(self.device)
        for step, batch in enumerate(self.loader):
            if step >= steps:
                break
            batch = batch.to(self.device, self.memory_format)
            timer.lap("data")
            total = self._step(batch, stats, timer)
            stats.steps += 1
            stats.images += len(batch.targets) * self.dist.world_size
            stats.skipped += batch.skipped
            stats.step_losses.append(total)
            bar.set_postfix(loss=f"{total:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.1e}")
            bar.update()
        bar.close()
        stats.seconds = timer.seconds()
        return stats

    def _step(self, batch: Batch, stats: EpochStats, timer: StageTimer) -> float:
        with torch.autocast(self.device.type, dtype=self.precision.dtype, enabled=self.precision.dtype is not None):
            outputs = self.ddp_model(batch.images, batch.mask)
        timer.lap("forward")
        outputs = _to_float32(outputs)
        losses = self.criterion(outputs, batch.targets)
        total = self.criterion.weighted_total(losses)
        if self.encoder_loss is not None:
            canvas = (batch.images.shape[-2], batch.images.shape[-1])
            dense = self.encoder_loss(outputs["encoder_predictions"], outputs["encoder_size"], canvas, batch.targets)
            total = total + self.encoder_loss.weighted_total(dense)
            losses.update(dense)
        timer.lap("matching_and_loss")
        # The final layer's terms and the total, copied to the host in one transfer (on a GPU the queue is short
        # here: the matcher has just waited for the forward pass).
        names = [name for name in losses if not name[-1].isdigit()]
        logged = torch.stack([total.detach(), *(losses[name].detach() for name in names)]).tolist()
        value, terms = logged[0], dict(zip(names, logged[1:], strict=True))
        if not math.isfinite(value):
            shown = {name: round(term, 4) for name, term in terms.items()}
            raise PoetError(f"training loss became {value}; terms: {shown}. Lower --lr or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        if self.config.clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trained.parameters(), self.config.clip_max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        timer.lap("backward_and_step")
        stats.sums["loss"] += value
        for name, term in terms.items():
            stats.sums[name] += term
        return value

    def evaluate(self) -> dict[str, float] | None:
        if self.val_paths is None:
            return None
        return evaluate_model(
            self.model,
            *self.val_paths,
            batch_size=max(1, self.config.batch_size),
            limit=self.config.eval_limit,
            progress=self.config.progress,
        )

    def save(self, epoch: int, path: Path) -> None:
        rng: Any = rng_state()
        if self.dist.enabled:
            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, rng)
            rng = gathered
        if not self.dist.is_main:
            return
        save_checkpoint(
            path,
            self.model,
            optimizer=self.optimizer.state_dict(),
            scheduler=_scheduler_state(self.scheduler),
            scaler=self.scaler.state_dict(),
            epoch=epoch,
            rng=rng,
            best_ap=self.best_ap,
            history=self.history,
            train_config=self.config.to_dict(),
            **({} if self.encoder_head is None else {"encoder_head": self.encoder_head.state_dict()}),
        )

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        columns = list(dict.fromkeys(k for r in self.history for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.history)
        with atomic_path(self.output_dir / "metrics.csv") as tmp:
            tmp.write_text(buffer.getvalue())
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def fit(self) -> list[dict[str, Any]]:
        """Train from ``start_epoch`` to ``epochs``; returns the per-epoch log rows."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for epoch in range(self.start_epoch, self.config.epochs):
            started = time.perf_counter()
            stats = self.train_one_epoch(epoch)
            self.step_losses[epoch] = stats.step_losses
            self.scheduler.step()
            elapsed = time.perf_counter() - started
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **stats.means()}
            row.update({f"seconds_{k}": v for k, v in stats.seconds.items()})
            row.update(images_per_second=stats.images / elapsed, skipped_images=stats.skipped)
            due = self.config.eval_every > 0 and (
                (epoch + 1) % self.config.eval_every == 0 or epoch + 1 == self.config.epochs
            )
            metrics = self.evaluate() if due and self.dist.is_main else None
            if metrics is not None:
                row.update({f"val_{k}": v for k, v in metrics.items()})
            if self.dist.is_main:
                self._log(row)
            improved = metrics is not None and metrics["AP"] > self.best_ap
            if improved and metrics is not None:
                self.best_ap = metrics["AP"]
            self.save(epoch, self.output_dir / "checkpoint.pth")
            if improved and self.dist.is_main:
                with atomic_path(self.output_dir / "best.pth") as tmp:
                    shutil.copyfile(self.output_dir / "checkpoint.pth", tmp)
            if self.dist.is_main:
                ap = f", val AP {metrics['AP']:.3f}" if metrics else ""
                skipped = f", {stats.skipped} images skipped" if stats.skipped else ""
                logger.info(
                    "epoch %d: loss %.4f, %.2f img/s%s%s",
                    epoch + 1,
                    row.get("loss", float("nan")),
                    row["images_per_second"],
                    ap,
                    skipped,
                )
            if self.dist.enabled:
                dist.barrier()
        if self.writer is not None:
            self.writer.close()
        return self.history


def _to_float32(outputs: dict[str, Any]) -> dict[str, Any]:
    """The loss runs in float32 even when the forward ran under autocast."""
    converted: dict[str, Any] = {}
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            converted[key] = value.float()
        elif isinstance(value, list):
            converted[key] = [_to_float32(item) for item in value]
        else:
            converted[key] = value
    return converted
