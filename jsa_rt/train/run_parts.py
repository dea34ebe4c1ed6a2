"""The pieces of a training run around its loop: seeded RNG states, the DDP process group, the
datasets and the loader that resumes exactly, the run folder's lock and CSV log, the one-line
error for a diverged step, and the loss as a module (for DDP)."""
from __future__ import annotations

import fcntl
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..atomic import open_no_follow, write_text
from ..errors import InputError


# ---- randomness --------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """All RNG states as tensors and plain values (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, torch.tensor(py_state, dtype=torch.int64), py_gauss]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in py_state.tolist()), py_gauss))


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32          # derived from the loader's seeded generator
    np.random.seed(seed)
    random.seed(seed)


# ---- processes ---------------------------------------------------------------------------------
class Distributed:
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them this is a single process."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            backend = "nccl" if device == "cuda" else "gloo"
            if device == "cuda":
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t) / self.world

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank (a collective: all ranks call it)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any."""
        if self.world == 1:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self):
        if self.world > 1:
            dist.destroy_process_group()


# ---- data --------------------------------------------------------------------------------------
def make_dataset(args, cfg, split: str, train: bool, max_items: int | None = None):
    from .datasets import open_dataset
    ds = open_dataset(args.format, Path(args.data), cfg, split, train=train, method=args.model)
    if train:
        # a silent or off-screen-only clip has no visible source: it is no positive pair
        ds.samples = [s for s in ds.samples if not s.no_source]
        if max_items is not None:
            ds.samples = ds.samples[:max_items]
    for item_id, reason in ds.missing[:5]:
        print(f"  skipped {item_id}: {reason}")
    if ds.missing:
        print(f"  {len(ds.missing)} {split} items unreadable or missing (listed above, first 5)")
    return ds


def batch_to(batch, device):
    """Datasets yield dicts with at least "image" (B,3,H,W) and "audio" (B,L)."""
    return batch["image"].to(device, non_blocking=True), batch["audio"].to(device, non_blocking=True)


class EpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch, this rank's share of it, starting at `start` batches in
    (so a resumed run sees exactly the samples it would have seen). With `frames` (one id per
    item, -1 for none), the items of one frame stay next to each other in the order, so its
    soundtracks share a batch (except where a batch boundary falls inside them)."""

    def __init__(self, n, seed, epoch, rank, world, batch_size, start_batch=0, frames=None):
        self.n, self.seed, self.epoch = n, seed, epoch
        self.rank, self.world, self.batch_size, self.start_batch = rank, world, batch_size, start_batch
        self.units = None if frames is None else frame_units(frames)

    def indices(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        if self.units is None:
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = [i for u in torch.randperm(len(self.units), generator=g).tolist() for i in self.units[u]]
        per_rank = self.n // self.world
        mine = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        usable = len(mine) // self.batch_size * self.batch_size        # drop_last
        return mine[self.start_batch * self.batch_size:usable]

    def __iter__(self):
        return iter(self.indices())

    def __len__(self):
        return len(self.indices())


def frame_units(frames) -> list[list[int]]:
    """Item indices grouped by frame id (-1: an item on its own), in first-seen order."""
    units: dict = {}
    for i, frame in enumerate(frames):
        units.setdefault(int(frame) if frame >= 0 else ("own", i), []).append(i)
    return list(units.values())


def frame_ids(samples) -> torch.Tensor | None:
    """(n,) the frame id of each sample (`meta["group"]`: scenes of one frame with different
    soundtracks), -1 where it has none; None when no frame has two soundtracks."""
    ids: dict = {}
    frames = torch.tensor([ids.setdefault(g, len(ids)) if (g := s.meta.get("group")) else -1 for s in samples],
                          dtype=torch.long)
    return frames if (frames >= 0).any() else None


def parameter_groups(model, lr: float, backbone_lr_scale: float) -> list[dict]:
    """The optimizer's parameter groups: the encoders' pretrained backbones at backbone_lr_scale x
    lr, everything else at lr (frozen parameters get no gradient, so the optimizer skips them)."""
    named = list(model.named_parameters())
    if backbone_lr_scale == 1.0:
        return [{"params": [p for _, p in named], "lr": lr}]
    return [{"params": [p for name, p in named if ".backbone." not in name], "lr": lr},
            {"params": [p for name, p in named if ".backbone." in name], "lr": lr * backbone_lr_scale}]


def make_loader(ds, train_cfg, epoch, dist_info, start_batch, device, frames=None):
    ds.aug_seed = (train_cfg.seed, epoch)        # augmentation = f(seed, epoch, sample): exact resume, distinct ranks
    sampler = EpochSampler(len(ds), train_cfg.seed, epoch, dist_info.rank, dist_info.world,
                           train_cfg.batch_size, start_batch, frames)
    gen = torch.Generator().manual_seed(train_cfg.seed * 7919 + epoch * 104729 + start_batch)
    from .datasets import collate
    return torch.utils.data.DataLoader(
        ds, batch_size=train_cfg.batch_size, sampler=sampler, num_workers=train_cfg.num_workers,
        collate_fn=collate,
        pin_memory=device == "cuda", drop_last=True, worker_init_fn=_worker_init, generator=gen,
        persistent_workers=False)



# ---- the run folder ----------------------------------------------------------------------------
RUN_FILES = ("last.pt", "log.csv", "history.json", "best.pt", "final.pt")


def claim_run_folder(out: Path, resume: bool):
    """An exclusive lock on OUT/.lock while this run lives (the OS drops it when the process
    ends, even by SIGKILL), and no second run mixed into a folder that holds one (unless
    --resume). Returns the lock's open file."""
    lock = open_no_follow(out / ".lock", "a+", "the run's lock file")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        pid = lock.read().strip()
        lock.close()
        raise InputError(f"{out} is in use by another training run{f' (pid {pid})' if pid else ''}: wait for "
                         f"it to end, or choose another --out") from None
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not resume:
        lock.close()
        raise InputError(f"{out} already holds a training run ({', '.join(found)}): add --resume to continue "
                         f"it, or choose another --out")
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def open_log(path: Path, resume_step: int | None):
    """log.csv for appending, and whether it already has its header. A new run starts it empty;
    --resume keeps the header and the rows up to the checkpoint's step (later ones are trained
    again), and drops a row cut short by a kill."""
    kept = []
    if resume_step is not None and path.is_file():
        lines = path.read_text(errors="replace").splitlines()
        if lines and lines[0].startswith("step,"):
            width = len(lines[0].split(","))
            kept = lines[:1] + [r for r in lines[1:] if len(r.split(",")) == width
                                and r.split(",", 1)[0].isdigit() and int(r.split(",", 1)[0]) <= resume_step]
    write_text(path, "".join(f"{r}\n" for r in kept))        # replaces a link there, never writes through it
    return open_no_follow(path, "a", "the training log", newline=""), bool(kept)


def diverged(what: str, step: int, epoch: int, ids: list, out: Path) -> str:
    """The one-line error for a non-finite loss or gradient (nothing of that step is saved)."""
    items = ", ".join(map(str, ids[:4])) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
    return (f"training diverged at step {step} (epoch {epoch + 1}): non-finite {what}"
            f"{f' on the batch of {items}' if items else ''}; stopped before that update (any checkpoint "
            f"in {out} is from an earlier, finite step): lower --lr, or check those files")


class LossModule(torch.nn.Module):
    """forward() = the model's loss, so DistributedDataParallel sees (and syncs) the call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, wave, frames=None):
        return self.model.loss(images, wave, frames)
