"""Signing in and out of the admin page, and the checks every admin request passes.

GET pages need a valid session cookie (else: to the sign-in form, with no admin data). State-changing
POSTs need the session, its CSRF token, and an Origin (when the browser sends one) equal to ours:
a form posted from another site fails on all three, since SameSite=Strict keeps the cookie home too.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDictProxy

from ...hosts import same_origin
from ..common import SERVICES
from . import render
from .i18n import Words, choose
from .session import COOKIE, LIFETIME, Session, Sessions, SignInLimiter

Form = MultiDictProxy[Any]
MAX_FORM = 64 * 1024  # bytes of an admin form (a bulk selection of a few hundred ids fits)


@dataclass
class AdminState:
    """Per app: the cookie signer (built from the admin token on first use) and the sign-in limiter."""

    prefix: str
    limiter: SignInLimiter = field(default_factory=SignInLimiter)
    sessions: Sessions | None = None


STATE = web.AppKey("admin_state", AdminState)


class Refused(Exception):
    """An admin request answered with a page instead of its result (no session, bad CSRF…)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def state(request: web.Request) -> AdminState:
    return request.app[STATE]


def sessions(request: web.Request) -> Sessions:
    st = state(request)
    if st.sessions is None:
        st.sessions = Sessions(request.app[SERVICES].admin_token)
    return st.sessions


def words(request: web.Request) -> Words:
    return Words(choose(request.headers.get("Accept-Language"), request.app[SERVICES].settings.language))


def base_path(request: web.Request) -> str:
    return state(request).prefix + "/admin"


def client_address(request: web.Request) -> str:
    """The peer; behind a reverse proxy on loopback or a private network (Compose), the address the
    proxy appended last to X-Forwarded-For (nginx's $proxy_add_x_forwarded_for, Caddy's default)."""
    peer = request.remote or ""
    try:
        address = ipaddress.ip_address(peer)
        local = address.is_loopback or address.is_private
    except ValueError:
        local = False
    forwarded = request.headers.get("X-Forwarded-For", "")
    if local and forwarded:
        return forwarded.split(",")[-1].strip()[:64] or peer
    return peer


def current(request: web.Request) -> Session | None:
    return sessions(request).verify(request.cookies.get(COOKIE), time.time())


def _cookie_args(request: web.Request) -> dict[str, Any]:
    https = urlsplit(request.app[SERVICES].settings.base).scheme == "https"
    return {"path": base_path(request), "httponly": True, "secure": https, "samesite": "Strict"}


def require_session(request: web.Request) -> Session:
    """For GET pages: the session, or a redirect to the sign-in form."""
    s = current(request)
    if s is None:
        raise Refused(render.redirect(base_path(request) + "/login"))
    return s


def _same_origin(request: web.Request) -> bool:
    """Browsers send Origin (and Sec-Fetch-Site) on POSTs: another site's form is refused by it alone."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    # The public origin, or the one the browser addressed (an SSH tunnel to the port: http://localhost:8080).
    return same_origin(origin, request.app[SERVICES].settings.base) or \
        same_origin(origin, f"{request.scheme}://{request.host}")


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def refusal(request: web.Request, status: int, key: str) -> Refused:
    w = words(request)
    if wants_json(request):
        resp = web.json_response({"error": w(key)}, status=status)
        render.secure(resp)
        return Refused(resp)
    return Refused(render.html("message.html", w, http_status=status, message=w(key), base=base_path(request),
                               session=None, csrf=None, title=w("error")))


async def read_form(request: web.Request) -> Form:
    """The urlencoded form, bounded (the app's body cap is sized for inbox payloads, not forms)."""
    if request.content_length is None or request.content_length > MAX_FORM:
        raise Refused(render.secure(web.Response(status=413, text="form too large")))  # type: ignore[arg-type]
    return await request.post()


async def require_post(request: web.Request) -> tuple[Session, Form]:
    """For state-changing POSTs: session (401), then origin and CSRF token (403), before anything is read
    beyond the form itself."""
    s = current(request)
    if s is None:
        raise refusal(request, 401, "session_needed")
    if not _same_origin(request):
        raise refusal(request, 403, "csrf")
    form = await read_form(request)
    token = form.get("csrf")
    if not isinstance(token, str) or not sessions(request).csrf_ok(s, token):
        raise refusal(request, 403, "csrf")
    return s, form


# -- handlers -----------------------------------------------------------------------------------------


async def login_form(request: web.Request, *, status: int = 200, error: str | None = None) -> web.Response:
    w = words(request)
    return render.html("login.html", w, http_status=status, error=error, base=base_path(request), session=None,
                       csrf=None, title=w("signin"))


async def login(request: web.Request) -> web.Response:
    """Check the token; count failures per client address and refuse with 429 past the limit."""
    w = words(request)
    if not _same_origin(request):
        return await login_form(request, status=403, error=w("csrf"))
    client, now = client_address(request), time.time()
    limiter = state(request).limiter
    wait = limiter.retry_after(client, now)
    if wait:
        resp = await login_form(request, status=429, error=w("too_many", n=wait))
        resp.headers["Retry-After"] = str(wait)
        return resp
    form = await read_form(request)
    token = form.get("token")
    if not isinstance(token, str) or not sessions(request).check_token(token):
        limiter.failed(client, now)
        return await login_form(request, status=401, error=w("wrong_token"))
    limiter.succeeded(client)
    value, _ = sessions(request).issue(now)
    resp = render.redirect(base_path(request) + "/comments")
    resp.set_cookie(COOKIE, value, max_age=LIFETIME, **_cookie_args(request))
    return resp


async def logout(request: web.Request) -> web.Response:
    s, _ = await require_post(request)
    sessions(request).revoke(s, time.time())
    resp = render.redirect(base_path(request) + "/login")
    resp.del_cookie(COOKIE, path=base_path(request))
    return resp


async def index(request: web.Request) -> web.Response:
    target = "/comments" if current(request) else "/login"
    return render.redirect(base_path(request) + target)


def guarded(handler: Any) -> Any:
    """Turn Refused into its response for one handler."""
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except Refused as exc:
            return exc.response
    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper
