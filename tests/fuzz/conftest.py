"""Property tests of the pure modules that meet hostile input.

``make test`` runs each with a bounded number of examples (profile "ci"); ``make fuzz``
runs the same tests much longer (profile "fuzz"). No example database is written."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=200, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=20_000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
