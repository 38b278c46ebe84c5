"""Server-side sessions in Redis.

The cookie holds only a random id; the data stays on the server, so signing out or deactivating a
user ends the session everywhere, and a new id is issued at sign-in (no session fixation).
Cookies are scoped to the host and, in the ``/t/<slug>/`` form, to the tenant's path, so the browser
never sends one tenant's session to another.

Lifetimes: a session lives ``ttl_s`` after its last request (idle, sliding), and never longer than
``max_age_s`` after it was created (absolute). A session nobody signed into (``signed_in_key``
absent) gets the short ``anonymous_ttl_s``. Nothing is written for a session that holds nothing, so
a visitor who only reads pages leaves no key in Redis (Redis is also the Celery broker).

Why not Flask-Session: bench/libraries.py measured it writing the whole session back on every
request (100 GETs: 100 SET + 100 GET, against 100 pipelined GET+TTL here), keeping the cookie's id
in clear as the Redis key (a Redis dump is a set of usable cookies; ours stores a digest), with one
lifetime for every session (no absolute cap, no shorter anonymous life) and one cookie path for the
whole app, where each ``/t/<slug>/`` site needs its own.
"""

from __future__ import annotations

import json
import time
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
#: Session ids are ``new_secret(32)``: 43 characters. Anything much longer is not ours.
MAX_SID_LENGTH = 64
#: A read-only request pushes the idle expiry forward only when it has slipped by this much: one
#: EXPIRE a minute per active session instead of one per request.
REFRESH_AFTER_S = 60
ANONYMOUS_TTL_S = 30 * 60


def cookie_name(script_root: str) -> str:
    return PREFIXED_COOKIE_NAME if script_root else COOKIE_NAME


class ServerSession(CallbackDict[str, Any], SessionMixin):
    def __init__(self, data: dict[str, Any] | None = None, sid: str | None = None, *,
                 born: float | None = None, ttl_left: int | None = None) -> None:
        def on_update(_: Any) -> None:
            self.modified = True

        super().__init__(data or {}, on_update)
        self.sid = sid
        self.modified = False
        self.rotate_requested = False
        #: When the session was created (epoch seconds): the start of its absolute lifetime.
        self.born = born
        #: Seconds Redis still keeps the session, as read when it was opened.
        self.ttl_left = ttl_left
        #: Set to a path prefix (``/t/acme``) to hand the session to that tenant's site, as sign-up does.
        self.script_root: str | None = None

    def rotate(self) -> None:
        """Issue a new id on the next save and drop the old one (call on sign-in)."""
        self.rotate_requested = True
        self.modified = True


class RedisSessionInterface(SessionInterface):
    def __init__(self, redis: Redis, *, ttl_s: int, max_age_s: int, secure: bool,
                 anonymous_ttl_s: int = ANONYMOUS_TTL_S, signed_in_key: str = "user_id") -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.max_age_s = max(max_age_s, ttl_s)
        self.anonymous_ttl_s = min(anonymous_ttl_s, ttl_s)
        self.signed_in_key = signed_in_key
        self.secure = secure

    def _key(self, sid: str) -> str:
        return f"session:{digest(sid)}"

    def idle_ttl(self, session: ServerSession) -> int:
        return self.ttl_s if self.signed_in_key in session else self.anonymous_ttl_s

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(cookie_name(request.script_root))
        if not sid or len(sid) > MAX_SID_LENGTH:
            return ServerSession()
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self._key(sid))
        pipe.ttl(self._key(sid))
        raw, ttl_left = pipe.execute()
        if raw is None:
            return ServerSession()
        try:
            stored = json.loads(raw)
        except ValueError:
            stored = None
        if not (isinstance(stored, dict) and isinstance(stored.get("data"), dict)
                and isinstance(stored.get("born"), int | float)):
            return ServerSession()
        if time.time() - stored["born"] >= self.max_age_s:
            # Past its absolute lifetime: an empty, modified session makes save_session delete the
            # key and the cookie.
            expired = ServerSession({}, sid)
            expired.modified = True
            return expired
        return ServerSession(stored["data"], sid, born=stored["born"], ttl_left=int(ttl_left))

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
        now = time.time()
        idle = self.idle_ttl(session)
        if not session.modified and session.sid is not None:
            # Idle, not absolute: a request that only reads the session moves its expiry forward,
            # but never past the absolute cap.
            expire_in = self._expire_in(session, idle, now)
            if session.ttl_left is not None and session.ttl_left < expire_in - REFRESH_AFTER_S:
                self.redis.expire(self._key(session.sid), expire_in)
            return
        if session.rotate_requested or session.sid is None:
            if session.sid is not None:
                self.redis.delete(self._key(session.sid))
            session.sid = new_secret(32)
            session.born = now
            session.rotate_requested = False
        expire_in = self._expire_in(session, idle, now)
        stored = {"born": session.born, "data": dict(session)}
        self.redis.set(self._key(session.sid), json.dumps(stored), ex=expire_in)
        # The cookie may live to the absolute cap; the server ends the session earlier when idle.
        assert session.born is not None
        cookie_age = max(1, int(session.born + self.max_age_s - now))
        response.set_cookie(name, session.sid, max_age=cookie_age, path=path, secure=self.secure,
                            httponly=True, samesite="Lax")
        response.vary.add("Cookie")

    def _expire_in(self, session: ServerSession, idle: int, now: float) -> int:
        born = session.born if session.born is not None else now
        return max(1, min(idle, int(born + self.max_age_s - now)))
