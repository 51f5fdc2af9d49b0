"""Tools to property-test pipelines with Hypothesis: strategies for pipes, and assertions.

>>> import datapipes as dp
>>> from datapipes.testing import assert_deterministic, reference
>>> from datapipes.testing.functions import add_noise
>>> pipe = dp.from_sequence(range(10)) | dp.map(add_noise, rng=True) | dp.shuffle()
>>> assert_deterministic(pipe, epochs=3)
>>> reference(pipe, epoch=1) == reference(pipe, epoch=1) != reference(pipe, epoch=2)
True

:mod:`datapipes.testing.functions` holds small importable functions for building pipes in
tests (``add_one``, ``is_even``, ``add_noise``, ...), so drawn pipes pickle and their ``repr``
evaluates.
"""

from .assertions import assert_deterministic as assert_deterministic
from .assertions import assert_equal_elements as assert_equal_elements
from .assertions import assert_equal_outputs as assert_equal_outputs
from .assertions import has_randomness as has_randomness
from .assertions import reference as reference
from .matching import assert_disjoint as assert_disjoint
from .matching import assert_matches_reference as assert_matches_reference
from .matching import assert_partitioned as assert_partitioned
from .matching import assert_resumable as assert_resumable
from .strategies import StageBuilder as StageBuilder
from .strategies import fragments as fragments
from .strategies import pipes as pipes

__all__ = [
    "StageBuilder",
    "assert_deterministic",
    "assert_disjoint",
    "assert_equal_elements",
    "assert_equal_outputs",
    "assert_matches_reference",
    "assert_partitioned",
    "assert_resumable",
    "fragments",
    "has_randomness",
    "pipes",
    "reference",
]
