"""datapipes: composable, deterministic, resumable data pipelines for PyTorch.

>>> import datapipes as dp
>>> pipe = dp.from_sequence(range(6)) | dp.map(lambda x: x * 10) | dp.batch(4)
>>> list(pipe)
[[0, 10, 20, 30], [40, 50]]
"""

from ._graph import EpochContext as EpochContext
from ._graph import Pipe as Pipe
from ._graph import Stage as Stage
from .buffers import output_array as output_array
from .decode import decode as decode
from .decode import decode_field as decode_field
from .errors import StageError as StageError
from .errors import WorkerError as WorkerError
from .loader import Loader as Loader
from .stages.augment import augment as augment
from .stages.batch import batch as batch
from .stages.batch import unbatch as unbatch
from .stages.cache import CacheError as CacheError
from .stages.cache import cache as cache
from .stages.collate import collate as collate
from .stages.files import from_files as from_files
from .stages.files import from_npy as from_npy
from .stages.filter import filter as filter
from .stages.interleave import interleave as interleave
from .stages.map import MapStage as MapStage
from .stages.map import flat_map as flat_map
from .stages.map import map as map
from .stages.map import parallel_map as parallel_map
from .stages.mix import concat as concat
from .stages.mix import mix as mix
from .stages.mix import zip as zip
from .stages.positions import enumerate as enumerate
from .stages.positions import skip as skip
from .stages.positions import take as take
from .stages.prefetch import prefetch as prefetch
from .stages.ragged import bucket_by_length as bucket_by_length
from .stages.ragged import pack as pack
from .stages.records import from_jsonl as from_jsonl
from .stages.records import from_parquet as from_parquet
from .stages.records import from_tar as from_tar
from .stages.records import jsonl_records as jsonl_records
from .stages.records import tar_samples as tar_samples
from .stages.sampling import by_source_index as by_source_index
from .stages.sampling import class_weights as class_weights
from .stages.sampling import sample as sample
from .stages.sampling import split as split
from .stages.shard import shard_by_rank as shard_by_rank
from .stages.shuffle import shuffle as shuffle
from .stages.sources import from_arrays as from_arrays
from .stages.sources import from_iterable as from_iterable
from .stages.sources import from_sequence as from_sequence

__all__ = [
    "CacheError",
    "EpochContext",
    "Loader",
    "MapStage",
    "Pipe",
    "Stage",
    "StageError",
    "WorkerError",
    "augment",
    "batch",
    "bucket_by_length",
    "by_source_index",
    "cache",
    "class_weights",
    "collate",
    "concat",
    "decode",
    "decode_field",
    "enumerate",
    "filter",
    "flat_map",
    "from_arrays",
    "from_files",
    "from_iterable",
    "from_jsonl",
    "from_npy",
    "from_parquet",
    "from_sequence",
    "from_tar",
    "interleave",
    "jsonl_records",
    "map",
    "mix",
    "output_array",
    "pack",
    "parallel_map",
    "prefetch",
    "sample",
    "shard_by_rank",
    "shuffle",
    "skip",
    "split",
    "take",
    "tar_samples",
    "unbatch",
    "zip",
]
