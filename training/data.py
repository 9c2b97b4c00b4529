"""Streams one split of a dataset version into PyTorch: from the lake or from a folder of
Parquet files, sharded by rank and DataLoader worker, shuffled anew each epoch, resumable
mid-epoch.

How an epoch is laid out. The split's rows live in Parquet row groups (the unit of I/O).
Each epoch fixes one order of every row of the split, from the seed and the epoch alone:
the row groups in a permuted order, and inside each row group its rows permuted. That
order is cut into ``world_size * num_workers`` contiguous slices, one per global worker
(``rank * num_workers + worker_id``), so every row is read once per epoch, and each worker
reads only the row groups its slice touches. A worker can also mix ``shuffle_window``
consecutive pieces of its slice together before yielding, to spread rows of one row group
over more batches.

Resuming. What a worker yields is a deterministic function of (seed, epoch, world size,
workers, its index), so progress is one number per global worker: the rows of its slice
already consumed. A resumed worker skips that many rows (skipping whole pieces without
reading them). Worker processes cannot report what the training loop has taken, so
``StreamingLoader`` (``dataset.loader(...)``) tags each item in the worker with its global
worker and row count and counts, in the main process, what it hands to the loop: prefetched
items the loop never took are read again after a resume, none is lost or repeated.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from pyarrow import fs as pafs
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from training.arrays import Indices

if TYPE_CHECKING:
    from ingestion.lake import Lake

Uneven = Literal["exact", "drop", "pad"]
SPLIT_COLUMN = "split"
# tags for the random streams, so that no two of them share a seed
_GROUP_ORDER, _ROW_ORDER, _WINDOW_ORDER = 0, 1, 2


@dataclass(frozen=True)
class RowGroup:
    file: int  # index into the dataset's files
    index: int  # row group within the file
    rows: int  # rows of the split in it
    filter: bool  # whether it also holds rows of other splits


@dataclass(frozen=True)
class Piece:
    group: int  # index into the plan's row groups
    start: int  # a range of positions in the row group's order for this epoch
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


class StreamingDataset(IterableDataset[Any]):
    """One split of a set of Parquet files as a stream of rows or ready batches.

    ``batch_size`` set: yields batches, a dict of column to list (strings and other
    values) or tensor (numbers), built from Arrow without a Python step per row; unset:
    yields one dict per row. ``transform`` runs on each batch (or row) in the worker,
    where a featuriser belongs; with ``as_arrow`` it gets a ``pyarrow.Table`` instead.

    ``uneven`` says what an epoch does when the rows do not divide among the global
    workers: ``"exact"`` reads every row once, and workers differ by at most one row
    (ranks by at most ``num_workers``); ``"drop"`` gives every worker ``rows // workers``
    rows, leaving out the last few of the epoch's order (other rows each epoch);
    ``"pad"`` gives each ``ceil(rows / workers)``, repeating rows from the start of the
    order. With DDP, whose ranks must take the same number of steps, use drop or pad.
    """

    def __init__(
        self,
        files: Sequence[str],
        *,
        filesystem: pafs.FileSystem | None = None,
        split: str | None = None,
        columns: Sequence[str] | None = None,
        batch_size: int | None = None,
        shuffle: bool = True,
        shuffle_window: int = 1,
        seed: int = 0,
        uneven: Uneven = "exact",
        transform: Callable[[Any], Any] | None = None,
        as_arrow: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        meta: dict[str, Any] | None = None,
    ):
        if uneven not in ("exact", "drop", "pad"):
            raise ValueError(f"uneven must be exact, drop or pad, not {uneven!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if shuffle_window < 1:
            raise ValueError(f"shuffle_window must be at least 1, not {shuffle_window}")
        if seed < 0:
            raise ValueError(f"seed must not be negative, not {seed}")
        if not files:
            raise ValueError("no Parquet files to read")
        self.files = list(files)
        self.filesystem = filesystem or pafs.LocalFileSystem()
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.shuffle_window = shuffle_window
        self.seed = seed
        self.uneven: Uneven = uneven
        self.transform = transform
        self.as_arrow = as_arrow
        self.meta = dict(meta or {})
        # fixed here, in the main process: worker processes have no process group
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        if rank is None:
            rank = torch.distributed.get_rank() if dist else 0
        if world_size is None:
            world_size = torch.distributed.get_world_size() if dist else 1
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.rank, self.world_size = rank, world_size
        self.columns, self.groups = self._plan(columns)
        self.total_rows = sum(g.rows for g in self.groups)
        self.epoch = 0
        self._workers: int | None = None  # workers per rank the progress below is for
        self._consumed: dict[int, int] = {}  # rows consumed this epoch, by global worker
        self._tagged = False

    # --- where the rows are

    @classmethod
    def from_lake(
        cls, lake: Lake, name: str, version: int | None = None, split: str = "train", **kw: Any
    ) -> StreamingDataset:
        """``split`` of version ``version`` (default: latest) of ``datasets/<name>``, read
        from the files of the version that cut it, as ``read_dataset`` reads it."""
        # imported here: workers that unpickle a dataset need none of the lake's modules
        from ingestion.datasets import dataset_lineage

        cut_version, lineage = dataset_lineage(lake, name, version)
        table = f"datasets/{name}"
        data: Any = lake.dataset(table, lake.table(table, cut_version))  # a FileSystemDataset
        meta = {"dataset": name, "version": cut_version, **lineage}
        return cls(sorted(data.files), filesystem=data.filesystem, split=split, meta=meta, **kw)

    @classmethod
    def from_folder(cls, folder: str | Path, split: str = "train", **kw: Any) -> StreamingDataset:
        """``split`` of an exported folder: its Parquet files (searched recursively) named
        for the split (``train.parquet``, ``data/train-00000-of-00004.parquet``,
        ``train/part-0.parquet``); failing those, every Parquet file, filtered on its
        ``split`` column."""
        files, filesystem, named = split_files(folder, split)
        out = cls(files, filesystem=filesystem, split=split, meta={"folder": str(folder)}, **kw)
        if not named and not out.total_rows:
            raise LookupError(f"no Parquet file or row of split {split!r} under {folder}")
        return out

    def _plan(self, columns: Sequence[str] | None) -> tuple[list[str], list[RowGroup]]:
        groups: list[RowGroup] = []
        schema: pa.Schema | None = None
        for i, path in enumerate(self.files):
            pf = self._open(path)
            schema = schema or pf.schema_arrow
            names = pf.schema_arrow.names
            has_split = self.split is not None and SPLIT_COLUMN in names
            for j in range(pf.metadata.num_row_groups):
                total = pf.metadata.row_group(j).num_rows
                rows = self._split_rows(pf, j) if has_split else total
                if rows:
                    groups.append(RowGroup(i, j, rows, rows != total))
        assert schema is not None
        if columns is None:
            columns = [c for c in schema.names if c != SPLIT_COLUMN]
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ValueError(f"no column {missing} in {self.files[0]} (columns: {schema.names})")
        return list(columns), groups

    def _split_rows(self, pf: pq.ParquetFile, index: int) -> int:
        """Rows of the split in a row group, from its statistics where they settle it."""
        meta = pf.metadata.row_group(index)
        col = next(
            meta.column(k)
            for k in range(meta.num_columns)
            if meta.column(k).path_in_schema == SPLIT_COLUMN
        )
        stats = col.statistics
        if (
            stats is not None
            and stats.has_min_max
            and stats.has_null_count
            and not stats.null_count
        ):
            if stats.min == stats.max == self.split:
                return int(meta.num_rows)
            if not stats.min <= self.split <= stats.max:
                return 0
        values = pf.read_row_group(index, columns=[SPLIT_COLUMN])[SPLIT_COLUMN]
        return int(pc.sum(pc.equal(values, self.split)).as_py() or 0)

    def _open(self, path: str) -> pq.ParquetFile:
        return pq.ParquetFile(self.filesystem.open_input_file(path))

    # --- the order of an epoch

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, *key])

    def _group_order(self) -> Indices:
        n = len(self.groups)
        return self._rng(_GROUP_ORDER, 0, 0).permutation(n) if self.shuffle else np.arange(n)

    def _row_order(self, group: int) -> Indices | None:
        """Positions in the epoch's order to rows of the row group; None: as stored."""
        if not self.shuffle:
            return None
        return self._rng(_ROW_ORDER, group, 0).permutation(self.groups[group].rows)

    def worker_range(self, worker: int, workers: int) -> tuple[int, int]:
        """Global worker ``worker`` of ``workers``: its positions [start, stop) in the
        epoch's order, where positions past the end wrap to the start (``pad``)."""
        n = self.total_rows
        if self.uneven == "exact":
            return worker * n // workers, (worker + 1) * n // workers
        per = n // workers if self.uneven == "drop" else math.ceil(n / workers)
        return worker * per, worker * per + per

    def worker_rows(self, worker: int, workers: int) -> int:
        start, stop = self.worker_range(worker, workers)
        return stop - start

    def rows(self, num_workers: int = 0) -> int:
        """Rows this rank reads in an epoch with ``num_workers`` DataLoader workers."""
        w = max(1, num_workers)
        return sum(self.worker_rows(self.rank * w + i, w * self.world_size) for i in range(w))

    def _pieces(self, start: int, stop: int) -> list[Piece]:
        """The positions [start, stop) of the epoch's order as pieces of row groups."""
        n = self.total_rows
        if n == 0 or stop <= start:
            return []
        spans = [(start, min(stop, n))]
        while stop > n:  # pad: past the end wraps to the start
            stop -= n
            spans.append((0, min(stop, n)))
        order = self._group_order()
        bounds = np.concatenate([[0], np.cumsum([self.groups[g].rows for g in order])])
        out = []
        for a, b in spans:
            k = int(np.searchsorted(bounds, a, side="right")) - 1
            while a < b:
                g = int(order[k])
                lo, hi = a - int(bounds[k]), min(b, int(bounds[k + 1])) - int(bounds[k])
                out.append(Piece(g, lo, hi))
                a += hi - lo
                k += 1
        return out

    # --- reading

    def _read(self, piece: Piece, files: dict[int, pq.ParquetFile], threads: bool) -> pa.Table:
        group = self.groups[piece.group]
        pf = files.get(group.file)
        if pf is None:
            files.clear()  # one open file at a time
            pf = files[group.file] = self._open(self.files[group.file])
        columns = self.columns + ([SPLIT_COLUMN] if group.filter else [])
        table = pf.read_row_group(group.index, columns=columns, use_threads=threads)
        if group.filter:
            table = table.filter(pc.equal(table[SPLIT_COLUMN], self.split)).select(self.columns)
        if table.num_rows != group.rows:
            raise RuntimeError(
                f"{self.files[group.file]} row group {group.index} holds {table.num_rows} rows "
                f"of split {self.split!r}, not the {group.rows} it held when the dataset was "
                "opened: the file changed under it"
            )
        order = self._row_order(piece.group)
        if order is None:
            return table.slice(piece.start, piece.rows)
        return table.take(order[piece.start : piece.stop])

    def _stream(self, worker: int, workers: int, skip: int, threads: bool) -> Iterator[pa.Table]:
        """Global worker ``worker``'s rows for the epoch, less the first ``skip``, as Arrow
        tables in order."""
        pieces = self._pieces(*self.worker_range(worker, workers))
        files: dict[int, pq.ParquetFile] = {}
        for w in range(0, len(pieces), self.shuffle_window):
            window = pieces[w : w + self.shuffle_window]
            size = sum(p.rows for p in window)
            if skip >= size:  # wholly consumed before: not even read
                skip -= size
                continue
            if len(window) == 1 and skip:  # take only what is left of the piece
                p = window[0]
                window, skip = [Piece(p.group, p.start + skip, p.stop)], 0
            table = pa.concat_tables([self._read(p, files, threads) for p in window])
            if len(window) > 1 and self.shuffle:
                table = table.take(self._rng(_WINDOW_ORDER, worker, w).permutation(size))
            if skip:
                table, skip = table.slice(skip), 0
            if table.num_rows:
                yield table

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        workers = 1 if info is None else info.num_workers
        local = 0 if info is None else info.id
        if info is None:
            self._check_workers(workers)
        worker = self.rank * workers + local
        skip = self._consumed.get(worker, 0)
        total = workers * self.world_size
        tables = self._stream(worker, total, skip, threads=info is None)
        items = self._batches(tables) if self.batch_size else self._rows(tables)
        counting = info is None and not self._tagged
        for n, item in items:
            if self._tagged:
                yield worker, n, item
            else:
                if counting:  # in the main process: progress is known here
                    self._consumed[worker] = self._consumed.get(worker, 0) + n
                yield item
        if counting:
            self._next_epoch()

    def _batches(self, tables: Iterator[pa.Table]) -> Iterator[tuple[int, Any]]:
        assert self.batch_size is not None
        size = self.batch_size
        carry: pa.Table | None = None
        for table in tables:
            if carry is not None:
                table = pa.concat_tables([carry, table])
            start = 0
            while table.num_rows - start >= size:
                yield size, self._batch(table.slice(start, size))
                start += size
            carry = table.slice(start) if start < table.num_rows else None
        if carry is not None and carry.num_rows:
            yield carry.num_rows, self._batch(carry)

    def _batch(self, table: pa.Table) -> Any:
        if self.as_arrow:
            batch: Any = table
        else:
            batch = {name: _column(table[name]) for name in table.column_names}
        return self.transform(batch) if self.transform else batch

    def _rows(self, tables: Iterator[pa.Table]) -> Iterator[tuple[int, Any]]:
        for table in tables:
            for row in table.to_pylist():
                yield 1, self.transform(row) if self.transform else row

    # --- epochs and progress

    def set_epoch(self, epoch: int) -> None:
        """Starts epoch ``epoch`` from its beginning (each finished epoch moves on by one)."""
        self.epoch = epoch
        self._consumed = {}

    def _next_epoch(self) -> None:
        self.set_epoch(self.epoch + 1)

    def _check_workers(self, workers: int) -> None:
        if self._consumed and self._workers is not None and self._workers != workers:
            raise ValueError(
                f"the progress to resume from was made with {self._workers} worker(s) per "
                f"rank; read it with the same, not {workers}: each worker's share of the "
                "epoch depends on how many there are"
            )
        self._workers = workers

    def state_dict(self) -> dict[str, Any]:
        """Where this rank stands in the epoch: rows consumed per global worker. Up to date
        when iterated in this process or through ``loader()``; a plain DataLoader with
        worker processes reads correctly but cannot report progress back here."""
        return {
            "epoch": self.epoch,
            **self._order_key(),
            "workers": self._workers,
            "consumed": dict(self._consumed),
        }

    def _order_key(self) -> dict[str, Any]:
        """What the order of an epoch depends on besides the epoch and the workers."""
        return {
            "seed": self.seed,
            "world_size": self.world_size,
            "rows": self.total_rows,
            "row_groups": len(self.groups),
            "shuffle": self.shuffle,
            "shuffle_window": self.shuffle_window,
            "uneven": self.uneven,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resumes from ``state_dict()``: of this rank, or several ranks' merged (each rank
        takes its own workers' progress)."""
        for key, value in self._order_key().items():
            if state.get(key) != value:
                raise ValueError(
                    f"cannot resume: the state has {key} {state.get(key)!r}, this dataset "
                    f"{value!r}; the epoch's order would differ"
                )
        workers = state["workers"]
        consumed = {int(g): int(n) for g, n in state["consumed"].items()}
        if workers:
            mine = range(self.rank * workers, (self.rank + 1) * workers)
            consumed = {g: n for g, n in consumed.items() if g in mine and n}
        self.epoch = int(state["epoch"])
        self._workers = workers
        self._consumed = consumed

    def loader(self, num_workers: int = 0, **kw: Any) -> StreamingLoader:
        return StreamingLoader(self, num_workers=num_workers, **kw)

    def _view(self) -> StreamingDataset:
        """A copy for a DataLoader's workers that tags what it yields with its origin."""
        view = copy.copy(self)
        view._consumed = dict(self._consumed)
        view._tagged = True
        return view


class StreamingLoader:
    """A DataLoader over a ``StreamingDataset`` that counts what the loop has taken, so
    that ``state_dict()`` can resume it mid-epoch with worker processes. Each full pass
    over it is one epoch, and the next pass is the next epoch; a pass left early resumes
    where the loop stopped. Keyword arguments go to ``DataLoader`` (batching is the
    dataset's: set ``batch_size`` there)."""

    def __init__(self, dataset: StreamingDataset, num_workers: int = 0, **kw: Any):
        for key in ("batch_size", "collate_fn", "sampler", "batch_sampler", "shuffle"):
            if key in kw:
                raise TypeError(f"{key} belongs to the dataset, not its loader")
        if kw.get("persistent_workers"):
            raise TypeError("persistent workers would keep the epoch they started with")
        self.dataset = dataset
        self.num_workers = num_workers
        self.kw = kw

    def __iter__(self) -> Iterator[Any]:
        ds = self.dataset
        workers = max(1, self.num_workers)
        ds._check_workers(workers)
        loader = DataLoader(
            ds._view(),
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_as_is,
            **self.kw,
        )
        for worker, n, item in loader:
            # counted when handed to the loop: a prefetched item not yet taken is not
            ds._consumed[worker] = ds._consumed.get(worker, 0) + n
            yield item
        ds._next_epoch()

    def __len__(self) -> int:
        """Items (batches, or rows without a batch size) this rank yields in a whole epoch."""
        ds, w = self.dataset, max(1, self.num_workers)
        per = [ds.worker_rows(ds.rank * w + i, w * ds.world_size) for i in range(w)]
        return sum(math.ceil(n / ds.batch_size) if ds.batch_size else n for n in per)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)


def _as_is(item: Any) -> Any:
    return item


def _column(column: pa.ChunkedArray) -> Any:
    """Numbers without nulls as a tensor, anything else as a list."""
    kind = column.type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    if numeric and column.null_count == 0:
        return torch.from_numpy(np.array(column.to_numpy(), copy=True))
    return column.to_pylist()


def split_files(folder: str | Path, split: str) -> tuple[list[str], pafs.FileSystem, bool]:
    """The Parquet files under ``folder`` (a path or URI) holding ``split``, their
    filesystem, and whether they are named for it: those named for the split, else every
    one with a ``split`` column to filter on."""
    where = str(folder)
    if "://" not in where:
        where = str(Path(where).resolve())
    filesystem, base = pafs.FileSystem.from_uri(where)
    found = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    paths = sorted(
        f.path for f in found if f.type == pafs.FileType.File and f.path.endswith(".parquet")
    )
    if not paths:
        raise FileNotFoundError(f"no Parquet files under {folder}")
    named = [p for p in paths if _names_split(PurePosixPath(p).relative_to(base), split)]
    if named:
        return named, filesystem, True
    with_split = [
        p for p in paths if SPLIT_COLUMN in pq.read_schema(filesystem.open_input_file(p)).names
    ]
    if not with_split:
        raise LookupError(
            f"no Parquet file under {folder} is named for split {split!r} or has a "
            f"{SPLIT_COLUMN!r} column"
        )
    return with_split, filesystem, False


def _names_split(path: PurePosixPath, split: str) -> bool:
    stem = path.name.removesuffix(".parquet")
    return (
        stem == split
        or stem.startswith((f"{split}-", f"{split}_", f"{split}."))
        or split in path.parent.parts
    )
