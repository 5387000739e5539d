"""Mini-batches straight from in-memory tensors: fast on a CPU, deterministic, resumable.

A PyTorch `DataLoader` with workers costs more than it saves for arrays that fit in
memory. Here the order of epoch `e` is a permutation drawn from `seed + e`, so the
batch for any position is known; the loader starts where `position()` says (the
number of training batches already consumed, stored in the checkpoint), which makes
a resumed run see exactly the batches an uninterrupted run would have.

In a run of several processes (DDP) the batch size is the global one: every training loader cuts the same global
batch from the same order in each process, and each process keeps its share of the rows (`rank_share`), so that the
averaged gradient is the one process's gradient of the whole batch, each process reads a disjoint part of the data,
and resume stays exact. Validation loaders (unshuffled) give every process every batch: the figures are the same in
each, with no reduction to wait for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch


def rank_share() -> tuple[int, int]:
    """(this process's rank, the number of processes) of a distributed run; (0, 1) in a run of one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share_of(batch: tuple, rank: int, world: int) -> tuple:
    """This process's rows of a global batch: rank, rank + world, ..."""
    return batch if world == 1 else tuple(t[rank::world] for t in batch)


class BatchLoader:
    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        position: Callable[[], int] | None = None,
        max_batches: int | None = None,
    ):
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors of a BatchLoader must have the same length")
        self.tensors = tensors
        self.batch_size = min(batch_size, n) if drop_last else batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.position = position
        self.max_batches = max_batches

    def __len__(self) -> int:
        n = len(self.tensors[0])
        batches = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return min(batches, self.max_batches) if self.max_batches else batches

    def order(self, epoch: int) -> torch.Tensor:
        n = len(self.tensors[0])
        return epoch_order(n, self.seed, epoch) if self.shuffle else torch.arange(n)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        start = self.position() if self.position else 0
        epoch, offset = divmod(start, len(self))
        order = self.order(epoch)
        rank, world = rank_share() if self.shuffle else (0, 1)  # validation: every process sees everything
        for b in range(offset, len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size][rank::world]
            yield tuple(t[index] for t in self.tensors)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch `epoch`: a permutation of n drawn from the seed and the epoch alone."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class IndexedBatches:
    """BatchLoader's order over examples that `fetch(indices)` reads by index batch in DataLoader worker processes:
    data on disk, decoded as it is read (genlab.data.shards). `indices` are the examples it may use (the training
    rows); epoch e is their permutation drawn from seed and e, started at `position()` on resume."""

    def __init__(self, fetch: Callable[[np.ndarray], tuple[torch.Tensor, ...]], indices: np.ndarray, batch_size: int,
                 seed: int = 0, position: Callable[[], int] | None = None, workers: int = 1):
        self.fetch, self.indices = fetch, np.asarray(indices)
        self.batch_size = min(batch_size, len(self.indices))
        self.seed, self.position, self.workers = seed, position, workers

    def __len__(self) -> int:
        return len(self.indices) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        start = self.position() if self.position else 0
        epoch, offset = divmod(start, len(self))
        order = self.indices[epoch_order(len(self.indices), self.seed, epoch).numpy()]
        rank, world = rank_share()
        size = self.batch_size
        batches = [order[b * size : (b + 1) * size][rank::world] for b in range(offset, len(self))]
        loader = torch.utils.data.DataLoader(_Fetched(self.fetch), batch_sampler=batches, num_workers=self.workers,
                                             collate_fn=_as_fetched, worker_init_fn=_one_thread,
                                             prefetch_factor=4 if self.workers else None,
                                             # its workers' seeds from a generator of its own: drawn from the global
                                             # one, they would shift the model's random numbers on resume
                                             generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        yield from loader


class _Fetched(torch.utils.data.Dataset):
    def __init__(self, fetch):
        self.fetch = fetch

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:  # a whole batch in one call
        return self.fetch(np.asarray(indices))


def _as_fetched(batch):
    return batch


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # a worker decodes; the training process keeps the cores' math


class DrawnBatches:
    """Batches drawn by `draw(batch_size, rng)` instead of cut from a shuffled order: a sampling scheme such as
    CTGAN's training-by-sampling. Batch k draws from a NumPy generator seeded with (seed, k), so a resumed run
    draws what an uninterrupted one would; an epoch is `per_epoch` batches."""

    def __init__(self, draw: Callable[[int, np.random.Generator], tuple[torch.Tensor, ...]], batch_size: int,
                 per_epoch: int, seed: int = 0, position: Callable[[], int] | None = None):
        self.draw, self.batch_size, self.per_epoch = draw, batch_size, max(1, per_epoch)
        self.seed, self.position = seed, position

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        start = self.position() if self.position else 0
        epoch, offset = divmod(start, self.per_epoch)
        rank, world = rank_share()
        for b in range(offset, self.per_epoch):
            batch = self.draw(self.batch_size, np.random.default_rng([self.seed, epoch * self.per_epoch + b]))
            yield share_of(batch, rank, world)


def validation_indices(n: int, fraction: float = 0.05, cap: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices of n examples: a fixed, seeded slice of `fraction` (at most `cap`) held
    out for validation; a fraction of 0, or fewer than 20 examples, holds out nothing."""
    n_val = min(cap, max(1, int(n * fraction))) if n >= 20 and fraction > 0 else 0
    order = np.random.default_rng(1).permutation(n)
    return order[n_val:], order[:n_val]


def split_validation(data, fraction: float = 0.05, cap: int = 5000, rows: bool = False) -> tuple[tuple, tuple]:
    """Hold out a fixed slice of the training split for validation; the test split stays for evaluation.
    A fraction of 0 holds out nothing. Each part is (images, labels), and with `rows` each image's row in the
    training split too (data with captions of each image: the model looks its captions up by it)."""
    train, val = validation_indices(len(data.train_x), fraction, cap)

    def part(indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        tensors = (torch.from_numpy(np.ascontiguousarray(data.train_x[indices])),
                   torch.from_numpy(np.ascontiguousarray(data.train_y[indices])))
        return (*tensors, torch.from_numpy(indices.astype(np.int64))) if rows else tensors

    return part(train), part(val)


def validation_images(data, count: int | None = None, fraction: float = 0.05, cap: int = 5000) -> torch.Tensor:
    """The first `count` images of the validation slice `split_validation` holds out, and only those read (images
    on disk are decoded as they are asked for)."""
    val = validation_indices(len(data.train_x), fraction, cap)[1][:count]
    return torch.from_numpy(np.ascontiguousarray(data.train_x[val]))


def image_loaders(data, batch_size: int, seed: int, position: Callable[[], int],
                  holdout: float = 0.05, rows: bool = False) -> tuple[BatchLoader, BatchLoader | None]:
    """(images uint8, labels) batches, and each image's row with `rows`: shuffled and resumable for training,
    in order for validation (None when `holdout` is 0: the model trains on the whole training split)."""
    if hasattr(data.train_x, "digest"):  # prepared shards on disk (genlab.data.shards): decoded in a worker
        return shard_loaders(data, batch_size, seed, position, holdout)
    train, val = split_validation(data, holdout, rows=rows)
    return (BatchLoader(train, batch_size, seed=seed, position=position),
            BatchLoader(val, batch_size, shuffle=False, drop_last=False) if holdout > 0 else None)


class ImageRows:
    """(images uint8, labels) of the rows asked for, from images on disk and labels in memory."""

    def __init__(self, images, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __call__(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.images[indices]), torch.from_numpy(self.labels[indices])


def shard_loaders(data, batch_size: int, seed: int, position: Callable[[], int],
                  holdout: float = 0.05) -> tuple[IndexedBatches, BatchLoader | None]:
    """image_loaders for images on disk: training batches decoded in a worker process as they are needed (one worker
    per two cores: the training process keeps the rest), the validation slice decoded once into memory."""
    import os

    train, val = validation_indices(len(data.train_x), holdout)
    rows = ImageRows(data.train_x, data.train_y)
    workers = max(1, min(4, (os.cpu_count() or 2) // 2))
    return (IndexedBatches(rows, train, batch_size, seed=seed, position=position, workers=workers),
            BatchLoader(rows(np.sort(val)), batch_size, shuffle=False, drop_last=False) if len(val) else None)


VAL_FRACTION = 0.05  # of a token stream, held out whole for validation (TrainConfig.holdout's default)


def text_loaders(ids: torch.Tensor, block_size: int, batch_size: int, seed: int, position: Callable[[], int],
                 val_fraction: float = VAL_FRACTION) -> tuple[BatchLoader, BatchLoader | None]:
    """Windows of `block_size + 1` token ids (inputs and their next-token targets) from one token stream.

    The last `val_fraction` of the stream is held out whole for validation (contiguous, so no
    training window overlaps it); 0 holds out nothing. `window_loaders` makes the windows.
    """
    ids = ids.long()
    if val_fraction <= 0:
        return window_loaders(ids, None, block_size, batch_size, seed, position)
    n_val = max(block_size + 1, int(len(ids) * val_fraction))
    return window_loaders(ids[:-n_val], ids[-n_val:], block_size, batch_size, seed, position)


def window_loaders(train: torch.Tensor, val: torch.Tensor | None, block_size: int, batch_size: int, seed: int,
                   position: Callable[[], int]) -> tuple[BatchLoader, BatchLoader | None]:
    """Training windows start at every offset of `train`: an epoch is a permutation of all of them, which is
    sampling random windows without replacement (nanoGPT samples with replacement) and is resumable like
    any BatchLoader. `val` (None: no validation) is cut into non-overlapping windows, in order."""
    from genlab.errors import DataError

    train = train.long()
    if len(train) < 2 * (block_size + 1) or val is not None and len(val) < block_size + 1:
        held = f" plus a validation hold-out of {len(val)}" if val is not None else ""
        raise DataError(f"the training text is {len(train)} tokens{held}: too few for windows of {block_size} tokens",
                        "use more text, or a smaller --model.block-size")
    train_windows = train.unfold(0, block_size + 1, 1)  # (N - block_size, block_size + 1), a view
    train_loader = BatchLoader((train_windows,), batch_size, seed=seed, position=position)
    if val is None:
        return train_loader, None
    val = val.long()
    val_windows = val[: len(val) // (block_size + 1) * (block_size + 1)].view(-1, block_size + 1)
    return train_loader, BatchLoader((val_windows,), batch_size, shuffle=False, drop_last=False)


def token_loaders(train, val, block_size: int, batch_size: int, seed: int, position: Callable[[], int],
                  val_windows: int = 1024) -> tuple[DrawnBatches, BatchLoader | None]:
    """Windows of `block_size + 1` ids from token files on disk (genlab.data.tokens), for corpora larger than
    memory: batch k of training draws its starts from a generator seeded with (seed, k), uniformly over the whole
    file, as nanoGPT's get_batch does (with replacement; an epoch is as many windows as the file has blocks), so
    that a resumed run reads what an uninterrupted one would. Validation is the first `val_windows`
    non-overlapping windows of `val` (None or too short: no validation)."""
    from genlab.errors import DataError

    window = block_size + 1
    if len(train) < 2 * window:
        raise DataError(f"the prepared training tokens are {len(train)}: too few for windows of {block_size}",
                        "prepare more text, or use a smaller --model.block-size")

    def draw(size: int, rng: np.random.Generator) -> tuple[torch.Tensor]:
        starts = rng.integers(0, len(train) - window + 1, size)
        return (torch.from_numpy(np.stack([train.read(int(s), window) for s in starts])),)

    per_epoch = max(1, len(train) // (window * batch_size))
    train_loader = DrawnBatches(draw, batch_size, per_epoch, seed=seed, position=position)
    count = min(val_windows, len(val) // window) if val is not None else 0
    if not count:
        return train_loader, None
    windows = torch.from_numpy(val.read(0, count * window)).view(count, window)
    return train_loader, BatchLoader((windows,), batch_size, shuffle=False, drop_last=False)
