"""A throwaway PostgreSQL server on 127.0.0.1 for trying parallel workers on one machine (and for the tests
and the benchmark that do): Debian's `postgresql` package, a fresh cluster in a temporary folder, trusted
local connections, removed on exit.

    with local_postgres() as url:       # postgresql://postgres@127.0.0.1:PORT/genlab
        ... genlab tune vae --data digits --storage URL --study s ...   (one per worker)

PostgreSQL refuses to run as root; as root, its programs run as the `postgres` user (through runuser).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from genlab.errors import GenlabError

INSTALL = "apt-get install postgresql (make test does it) and pip install 'genlab[postgres]'"


def unavailable() -> str | None:
    """Why no local server can be started here, or None when one can."""
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's default driver for postgresql:// URLs)
    except ImportError:
        return "psycopg is not installed (pip install 'genlab[postgres]')"
    if _bin_dir() is None:
        return "no PostgreSQL server programs in /usr/lib/postgresql (apt-get install postgresql)"
    if _run_as() is None:
        return "running as root with no postgres user or runuser: PostgreSQL refuses to run as root"
    return None


def _bin_dir() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return found[-1].parent if found else None


def _run_as() -> list[str] | None:
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return None
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--"] if runuser else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_postgres(database: str = "genlab") -> Iterator[str]:
    """Start a server, create `database`, yield its SQLAlchemy URL; stop and delete it afterwards."""
    reason = unavailable()
    if reason:
        raise GenlabError(f"cannot start a local PostgreSQL server: {reason}", INSTALL)
    bin_dir, prefix = _bin_dir(), _run_as()
    home = Path(tempfile.mkdtemp(prefix="genlab-pg-"))
    if prefix:
        shutil.chown(home, "postgres")
    data, port = home / "data", _free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True)
        if done.returncode:
            raise GenlabError(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-500:]}", INSTALL)

    started = False
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        # fsync off: a throwaway cluster; the unix socket lives in the temporary folder, not /var/run.
        options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(home / "server.log"), "-w", "start")
        started = True
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        if started:
            subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
