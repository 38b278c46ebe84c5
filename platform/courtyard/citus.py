"""Making a database a Citus database on every node: for the test-suite and the benchmarks.

``CREATE DATABASE`` on a Citus coordinator makes a plain database on that node only: no extension, no
workers. Whoever makes a throw-away database on a server that has Citus (the test harness under
``make test-citus``, ``bench/``) must create it on every node, create the extension in each and
register the nodes, or the run silently measures plain PostgreSQL. Everything here runs as a
superuser (creating databases and the extension, registering nodes); the application's role is only
named as the new database's owner.

The nodes are read from ``pg_dist_node`` in the coordinator's maintenance database (the one the admin
URL names): that is where an operator registers them, and where the role is created so that Citus
propagates it (docs/scaling.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo


class CitusUnavailable(Exception):
    """The server has Citus but its nodes cannot be found: a Citus database cannot be made here."""


@dataclass(frozen=True, slots=True)
class Node:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Cluster:
    admin_url: str  # a superuser's URL of the coordinator's maintenance database
    coordinator: Node
    workers: tuple[Node, ...]
    version: str

    def node_url(self, node: Node, database: str) -> str:
        """The admin URL's credentials, on ``node``, in ``database``."""
        return make_conninfo(self.admin_url, host=node.host, port=str(node.port), dbname=database)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.coordinator, *self.workers)

    def describe(self) -> str:
        return (f"Citus {self.version}: coordinator {self.coordinator.host}:{self.coordinator.port}, "
                f"{len(self.workers)} worker(s) " + ", ".join(f"{w.host}:{w.port}" for w in self.workers))


def discover(admin_url: str) -> Cluster | None:
    """The Citus cluster whose coordinator ``admin_url`` points at; None on plain PostgreSQL.

    Raises :class:`CitusUnavailable` when Citus is installed on the server but the maintenance database
    does not say where the workers are: measuring there would quietly measure a single node.
    """
    with psycopg.connect(admin_url, autocommit=True) as conn:
        available = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'citus'"
                                 ).fetchone()
        if available is None:
            return None
        installed = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'").fetchone()
        if installed is None:
            msg = (f"the server has Citus {available[0]} but its database {conn.info.dbname!r} has no citus "
                   "extension, so its workers are unknown: CREATE EXTENSION citus there and register the nodes "
                   "(citus_set_coordinator_host, citus_add_node), or point at a plain PostgreSQL")
            raise CitusUnavailable(msg)
        rows = conn.execute("SELECT groupid, nodename, nodeport FROM pg_dist_node "
                            "WHERE noderole = 'primary' AND isactive ORDER BY groupid, nodeid").fetchall()
    coordinator = next((Node(h, p) for g, h, p in rows if g == 0), None)
    workers = tuple(Node(h, p) for g, h, p in rows if g != 0)
    if coordinator is None or not workers:
        msg = ("Citus is installed but pg_dist_node lists no coordinator (citus_set_coordinator_host) or no "
               "worker (citus_add_node): register the nodes first")
        raise CitusUnavailable(msg)
    return Cluster(admin_url, coordinator, workers, str(installed[0]))


def create_database(cluster: Cluster, name: str, *, owner: str | None = None,
                    schema_sharding: bool = False) -> None:
    """``name`` on every node with the citus extension, the nodes registered on the coordinator.

    ``owner`` becomes the owner through the coordinator, which propagates it to the workers (as
    docs/scaling.md has operators do). ``schema_sharding`` turns schema-based sharding on for the
    database (the shared schema's migrations turn it off for themselves).
    """
    ident = sql.Identifier(name)
    for node in cluster.nodes:
        with psycopg.connect(cluster.node_url(node, _maintenance_db(cluster)), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        with psycopg.connect(cluster.node_url(node, name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION citus")
    with psycopg.connect(cluster.node_url(cluster.coordinator, name), autocommit=True) as conn:
        conn.execute("SELECT citus_set_coordinator_host(%s, %s)", (cluster.coordinator.host, cluster.coordinator.port))
        for worker in cluster.workers:
            conn.execute("SELECT citus_add_node(%s, %s)", (worker.host, worker.port))
        if owner is not None:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident, sql.Identifier(owner)))
        if schema_sharding:
            conn.execute(sql.SQL("ALTER DATABASE {} SET citus.enable_schema_based_sharding = on").format(ident))


def drop_database(cluster: Cluster, name: str) -> None:
    """Drop ``name`` on every node. Needs a superuser: Citus's maintenance daemon, connected to the
    database on each node, runs as one, and only a superuser may end its session."""
    for node in cluster.nodes:
        with psycopg.connect(cluster.node_url(node, _maintenance_db(cluster)), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _maintenance_db(cluster: Cluster) -> str:
    return str(conninfo_to_dict(cluster.admin_url).get("dbname") or "postgres")
