"""Hypothesis settings for the test suite.

Profiles (pick one with ``HYPOTHESIS_PROFILE=name``; ``ci`` is the default):

* ``ci``: 50 examples per test, no deadline (shared 2-core machines are slow and noisy),
  no example database, so a run leaves no files behind;
* ``dev``: 20 examples, with the database, for quick local runs that replay failures;
* ``thorough``: 1000 examples, for a long hunt before a release.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
