"""Fuzzing: bounded in CI (a fixed seed, IMGCLS_FUZZ_EXAMPLES examples per test, default 150),
longer by setting that variable (e.g. 20000). Any crash, hang or 5xx is a failing example,
which hypothesis shrinks to the smallest input that still fails."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "imgcls",
    max_examples=int(os.environ.get("IMGCLS_FUZZ_EXAMPLES", "150")),
    deadline=None,  # wall-clock limits are for bench/, not tests
    derandomize=os.environ.get("IMGCLS_FUZZ_EXAMPLES") is None,  # CI: the same inputs each run
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,  # a failure prints the @reproduce_failure line to replay it
)
settings.load_profile("imgcls")
