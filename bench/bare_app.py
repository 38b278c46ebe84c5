"""The baseline of bench/api.py: a bare Flask app doing the same primary-key lookup, nothing else.

No tenant resolution, no token check, no ORM, no schema layer: one SQLAlchemy Core query on the same
table (the user and its role key, as Courtyard's ``GET /api/v1/users/<id>`` returns) and ``jsonify``.
Served by gunicorn as ``bare_app:app`` with BENCH_DATABASE_URL and BENCH_SCHEMA set.
"""

from __future__ import annotations

import os
import uuid

from flask import Flask, Response, abort, jsonify
from sqlalchemy import create_engine, text


def _url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


SCHEMA = os.environ["BENCH_SCHEMA"]
if not SCHEMA.startswith("t_") or not SCHEMA[2:].isalnum():
    raise SystemExit("BENCH_SCHEMA must be a tenant schema name (t_<hex>)")
# The same pool size as Courtyard's app factory, without pre-ping.
engine = create_engine(_url(os.environ["BENCH_DATABASE_URL"]), pool_size=10, max_overflow=20)
QUERY = text(f"""
    SELECT u.id, u.email, u.name, r.key AS role, u.department_id, u.active, u.locale, u.last_login_at,
           u.created_at, u.updated_at, u.version
    FROM "{SCHEMA}".users u JOIN "{SCHEMA}".roles r ON r.id = u.role_id
    WHERE u.id = :id""")

app = Flask("bare")


def _iso(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


@app.get("/api/v1/users/<uuid:user_id>")
def get_user(user_id: uuid.UUID) -> Response:
    with engine.connect() as conn:
        row = conn.execute(QUERY, {"id": user_id}).mappings().first()
    if row is None:
        abort(404)
    return jsonify({k: (str(v) if isinstance(v, uuid.UUID) else _iso(v)) for k, v in row.items()})
