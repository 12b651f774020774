"""ApiVersions (key 18): which APIs and versions this broker serves.

Answered in full at v0-v3, whatever the client's state (it comes before
authentication). A version above 3 gets UNSUPPORTED_VERSION with the
list, in v0's body, as KIP-511 asks; kafka-python 3 starts at v3, so v3 is
never the fallback.
"""

from __future__ import annotations

import datetime
from typing import Any

from .apis import Api
from .protocol import API_VERSIONS, ErrorCode, Request, build, response_type
from .session import Session


def api_versions(session: Session, request: Request, now: float) -> Any:
    version = request.api_version
    error = ErrorCode.none
    if version > SERVED.max_version:
        version, error = 0, ErrorCode.unsupported_version
    cls = response_type(API_VERSIONS, version)
    assert cls is not None
    keys = tuple(build(cls, "ApiVersion", api_key=api.key, min_version=api.min_version, max_version=api.max_version)
                 for api in sorted(session.apis.values(), key=lambda api: api.key))
    return build(cls, error_code=error, api_keys=keys, throttle_time=datetime.timedelta(0))


SERVED = Api(API_VERSIONS, 0, 3, api_versions, before_auth=True, any_version=True)
APIS = [SERVED]
