"""Server-side sessions in Redis.

The cookie holds only a random id; the data stays on the server, so signing out or deactivating a
user ends the session everywhere, and a new id is issued at sign-in (no session fixation).
Cookies are scoped to the host and, in the ``/t/<slug>/`` form, to the tenant's path, so the browser
never sends one tenant's session to another.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from redis import Redis
from werkzeug.datastructures import CallbackDict

from core.security import digest, new_secret

COOKIE_NAME = "courtyard_session"
#: The ``/t/<slug>/`` sites share a host with the public site; a name of their own keeps the public
#: site's cookie (path ``/``, which the browser also sends under ``/t/``) from shadowing them.
PREFIXED_COOKIE_NAME = "courtyard_tenant_session"


def cookie_name(script_root: str) -> str:
    return PREFIXED_COOKIE_NAME if script_root else COOKIE_NAME


class ServerSession(CallbackDict[str, Any], SessionMixin):
    def __init__(self, data: dict[str, Any] | None = None, sid: str | None = None) -> None:
        def on_update(_: Any) -> None:
            self.modified = True

        super().__init__(data or {}, on_update)
        self.sid = sid
        self.modified = False
        self.rotate_requested = False
        #: Set to a path prefix (``/t/acme``) to hand the session to that tenant's site, as sign-up does.
        self.script_root: str | None = None

    def rotate(self) -> None:
        """Issue a new id on the next save and drop the old one (call on sign-in)."""
        self.rotate_requested = True
        self.modified = True


class RedisSessionInterface(SessionInterface):
    def __init__(self, redis: Redis, *, ttl_s: int, secure: bool) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.secure = secure

    def _key(self, sid: str) -> str:
        return f"session:{digest(sid)}"

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(cookie_name(request.script_root))
        if sid and len(sid) < 128:
            raw = self.redis.get(self._key(sid))
            if raw is not None:
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    return ServerSession(data, sid)
        return ServerSession()

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        from flask import request

        assert isinstance(session, ServerSession)
        root = session.script_root if session.script_root is not None else request.script_root
        path, name = root + "/", cookie_name(root)
        if not session:
            if session.sid is not None and session.modified:
                self.redis.delete(self._key(session.sid))
                response.delete_cookie(name, path=path, secure=self.secure, httponly=True,
                                       samesite="Lax")
            return
        if not session.modified and session.sid is not None:
            return
        if session.rotate_requested or session.sid is None:
            if session.sid is not None:
                self.redis.delete(self._key(session.sid))
            session.sid = new_secret(32)
            session.rotate_requested = False
        self.redis.set(self._key(session.sid), json.dumps(dict(session)), ex=self.ttl_s)
        response.set_cookie(name, session.sid, max_age=self.ttl_s, path=path, secure=self.secure,
                            httponly=True, samesite="Lax")
        response.vary.add("Cookie")
