"""Python client for normserve: numpy-in / numpy-out predict and the statistics training
session workflow (start, accumulate, report, commit, abort, rollback, export).

Needs the stubs generated from proto/ by the build (one step, see clients/python/README.md):

    cmake --build build --target normserve_python_client
    PYTHONPATH=build/python /usr/bin/python3 -c "import normserve_client"
"""

from normserve_client.client import (  # noqa: F401
    AccumulateResult,
    Client,
    NormserveError,
    Session,
    content_request_id,
)
