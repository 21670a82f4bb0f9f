"""`mesh dev` against real processes: the embedded broker and the mesh registry."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from mesh.config import Settings
from mesh.dev.stack import EMBEDDED_GROUP_CONFIG, DevStack, free_port, group_config
from tests.support import mesh_env

#: `mesh dev` starts the embedded broker itself: there is no Tansu beside Apache Kafka.
pytestmark = pytest.mark.tansu_only


def mesh_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        check=False,
        cwd=cwd,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_up_status_down_lifecycle(tmp_path: Path) -> None:
    broker_port, registry_port, console_port = free_port(), free_port(), free_port()
    ports = ["--broker-port", str(broker_port), "--registry-port", str(registry_port)]
    ports += ["--console-port", str(console_port)]
    console_url = f"http://127.0.0.1:{console_port}/"
    try:
        first = mesh_cli("dev", "up", *ports, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        assert "started" in first.stdout
        assert f"127.0.0.1:{broker_port}" in first.stdout
        assert f"http://127.0.0.1:{registry_port}" in first.stdout
        assert f"console:           {console_url}" in first.stdout

        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{broker_port}"})
        assert admin.list_topics(timeout=10).brokers
        with urllib.request.urlopen(f"http://127.0.0.1:{registry_port}/subjects") as resp:
            assert resp.status == 200
        with urllib.request.urlopen(console_url, timeout=30) as resp:
            assert resp.status == 200
            page = resp.read().decode()
        assert f"broker 127.0.0.1:{broker_port}" in page  # the console reads the stack
        assert "read-only" in page

        again = mesh_cli("dev", "up", *ports, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert console_url in again.stdout
        pids = {name: rec.pid for name, (rec, _) in DevStack(tmp_path / ".mesh").status().items()}
        assert set(pids) == {"broker", "registry", "console"}

        status = mesh_cli("dev", "status", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert status.stdout.count("running") == 3
        assert f"http://127.0.0.1:{registry_port}" in status.stdout
        assert console_url in status.stdout
    finally:
        down = mesh_cli("dev", "down", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert "stopped broker" in down.stdout
    assert f"stopped console (pid {pids['console']})" in down.stdout
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        urllib.request.urlopen(console_url, timeout=5)
    after = mesh_cli("dev", "status", cwd=tmp_path)
    assert after.returncode == 1
    assert "not running" in after.stdout


def test_up_without_the_console_and_a_busy_console_port(tmp_path: Path) -> None:
    ports = ["--broker-port", str(free_port()), "--registry-port", str(free_port())]
    try:
        bare = mesh_cli("dev", "up", *ports, "--no-console", cwd=tmp_path)
        assert bare.returncode == 0, bare.stderr
        assert "console" not in bare.stdout
        assert set(DevStack(tmp_path / ".mesh").status()) == {"broker", "registry"}
    finally:
        assert mesh_cli("dev", "down", cwd=tmp_path).returncode == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        ports = ["--broker-port", str(free_port()), "--registry-port", str(free_port())]
        result = mesh_cli("dev", "up", *ports, "--console-port", str(busy), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: cannot start console: port {busy} on 127.0.0.1 is already in use"
    )
    assert not (tmp_path / ".mesh" / "stack.json").exists()  # the broker and registry stopped


def _is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


def test_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = mesh_cli("dev", "up", "--broker-port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: cannot start broker: port {port} on 127.0.0.1 is already in use"
    )
    assert not (tmp_path / ".mesh" / "stack.json").exists()


def test_missing_binary_is_one_clear_line(tmp_path: Path) -> None:
    result = mesh_cli(
        "dev", "up", "--broker-port", str(free_port()),
        cwd=tmp_path, env={"MESH_BROKER_BIN": str(tmp_path / "no-such-tansu")},
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: MESH_BROKER_BIN={tmp_path / 'no-such-tansu'} is not an executable file"
    )


def test_broker_dying_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'storage engine failed: disk on fire' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    result = mesh_cli(
        "dev", "up", "--broker-port", str(free_port()),
        cwd=tmp_path, env={"MESH_BROKER_BIN": str(fake)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "broker exited with code 3 at start-up" in result.stderr
    assert "disk on fire" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_down_leaves_foreign_processes_alone(tmp_path: Path) -> None:
    """A recorded pid now running another program (pid reuse) is not killed."""
    other = subprocess.Popen(["sleep", "30"])
    try:
        state = tmp_path / ".mesh"
        state.mkdir()
        (state / "stack.json").write_text(
            json.dumps(
                {
                    "processes": [
                        {
                            "name": "broker",
                            "pid": other.pid,
                            "port": 1,
                            "url": "x",
                            "argv": ["/opt/tansu"],
                            "log": "x",
                        }
                    ]
                }
            )
        )
        result = mesh_cli("dev", "down", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("flag", ["--broker-port", "--registry-port"])
def test_port_out_of_range_is_a_usage_error(tmp_path: Path, flag: str) -> None:
    result = mesh_cli("dev", "up", flag, "70000", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_commands_follow_the_dev_stack_started_on_other_ports(tmp_path: Path) -> None:
    (tmp_path / "stack_events.py").write_text(
        textwrap.dedent(
            """
            from mesh import Event, Mesh

            class Pinged(Event, topic="stack-pinged"):
                n: int

            app = Mesh("stackapp")

            @app.agent("echo", consumes=Pinged)
            async def echo(event: Pinged) -> None: ...
            """
        )
    )
    env = mesh_env()

    def mesh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mesh", *args],
            cwd=tmp_path,
            env={**env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert mesh("schema", "gen", "--module", "stack_events").returncode == 0
    broker_port, registry_port = free_port(), free_port()
    up = mesh(
        "dev", "up", "--broker-port", str(broker_port), "--registry-port", str(registry_port),
        "--no-console",
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads((tmp_path / ".mesh" / "stack.json").read_text())
        assert state["broker"] == "tansu"
        shown = json.loads(mesh("config", "show").stdout)
        assert shown["bootstrap_servers"] == f"127.0.0.1:{broker_port}"
        assert shown["registry_url"] == f"http://127.0.0.1:{registry_port}"
        assert shown["broker"] == "tansu"

        published = mesh("publish", "stack_events:Pinged", "-d", '{"n": 7}', "--json")
        assert published.returncode == 0, published.stderr
        tail = mesh("tail", "stack-pinged", "--from-beginning", "-n", "1", "--json")
        assert tail.returncode == 0, tail.stderr
        assert json.loads(tail.stdout)["value"] == {"n": 7}
        topics = [json.loads(line) for line in mesh("topics", "--json").stdout.splitlines()]
        assert {"topic": "stack-pinged", "partitions": 3, "records": 1} in topics

        run = subprocess.Popen(
            [sys.executable, "-m", "mesh", "run", "stack_events:app", "--metrics-port", "0"],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert run.stderr is not None
            lines = []
            for line in run.stderr:
                assert line.startswith("{"), line
                lines.append(json.loads(line))
                if "assigned" in lines[-1]["message"]:
                    break
            run.send_signal(signal.SIGTERM)
            _, rest = run.communicate(timeout=60)
        finally:
            run.kill()
        lines += [json.loads(line) for line in rest.splitlines()]
        messages = [line["message"] for line in lines]
        assert run.returncode == 0, messages
        assert any(m.startswith("agent echo: assigned [('stack-pinged', 0)") for m in messages)
        assert "agent echo: stopped: offsets committed, left the group" in messages
        assert not [m for m in messages if m.startswith("HTTP Request")], messages
    finally:
        mesh("dev", "down")


def test_the_dev_stack_names_the_embedded_broker_and_its_fast_group_timing(
    tmp_path: Path,
) -> None:
    stack = DevStack(tmp_path / ".mesh")
    stack.state_dir.mkdir()
    me = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0")[0].decode()
    record = {
        "name": "broker",
        "pid": os.getpid(),
        "port": 1,
        "url": "127.0.0.1:1",
        "argv": [me],
        "log": "-",
    }  # fmt: skip: a live process stands for the broker
    (tmp_path / ".mesh" / "stack.json").write_text(
        json.dumps({"broker": "tansu", "processes": [record]})
    )
    filled = stack.settings(Settings())
    assert (filled.bootstrap_servers, filled.broker) == ("127.0.0.1:1", "tansu")
    assert group_config(filled) == EMBEDDED_GROUP_CONFIG
    flagged = stack.settings(Settings(bootstrap_servers="kafka:9092"))
    assert (flagged.bootstrap_servers, flagged.broker) == ("kafka:9092", "auto")
    assert group_config(Settings(broker="kafka")) == {}
