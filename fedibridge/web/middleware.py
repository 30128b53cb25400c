"""Map FedibridgeError (and aiohttp's own errors) to JSON answers in one place."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import FedibridgeError, StorageUnavailable
from ..health import describe, is_storage_outage
from ..logsafe import logger

log = logger(__name__)  # arguments escaped and redacted (logsafe)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}, ensure_ascii=False),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StorageUnavailable as exc:
        return json_error(503, str(exc), headers={"Retry-After": str(exc.retry_after)})
    except FedibridgeError as exc:
        if exc.status >= 500:
            log.error("%s %s failed: %s", request.method, request.path, exc)
        return json_error(exc.status, str(exc))
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, f"request body too large (limit {request.app._client_max_size} bytes)")
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json" and exc.text and exc.status != 405:
            return json_error(exc.status, exc.reason, headers={k: v for k, v in exc.headers.items()
                                                              if k.lower() in ("allow", "www-authenticate")})
        raise
    except Exception as exc:
        if not is_storage_outage(exc):
            raise
        # Database away or full: every page, feed and admin call says "later", not "broken".
        log.warning("%s %s: database unavailable: %s", request.method, request.path, describe(exc))
        unavailable = StorageUnavailable("database unavailable; try again later")
        return json_error(503, str(unavailable), headers={"Retry-After": str(unavailable.retry_after)})
