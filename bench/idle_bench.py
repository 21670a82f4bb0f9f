"""Idle process: CPU and memory of a ``mesh run`` worker with nothing to do, in one run.

(a) a hand-written confluent-kafka loop (subscribe to one topic, ``poll(1.0)`` forever,
librdkafka's defaults), (b) ``mesh run`` of an app of ``--agents`` agents (each consuming
a topic of its own and emitting to another), in its default configuration: metrics
endpoint on (on a free port), lag thread, delay forwarder, the embedded broker's tuning.
Both run side by side as subprocesses against one broker. Once every agent has its
partitions (``/readyz``) and the loop its assignment, and after ``--settle`` seconds,
each process's CPU time (utime + stime from ``/proc/PID/stat``, every thread) is read
over ``--seconds``, and its RSS (``VmRSS``). Target (issue 17): <= 1.5 % and <= 50 MB.

``--threads`` adds the mesh process's CPU by thread name (librdkafka names its threads
``rdk:...``; Python threads show as the interpreter's name)::

    python bench/idle_bench.py [--agents 2] [--seconds 30] [--threads]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections import Counter
from pathlib import Path

from mesh.dev.stack import free_port, start_broker, start_registry
from mesh.event import Event
from mesh.kafka.topics import TopicSpec, ensure_topics
from mesh.schema.files import generate_schemas

TICKS = os.sysconf("SC_CLK_TCK")

LOOP = """
import sys
from confluent_kafka import Consumer

consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2]})
consumer.subscribe(
    [sys.argv[3]], on_assign=lambda c, ps: print("assigned", len(ps), flush=True)
)
while True:
    consumer.poll(1.0)
"""


def app_source(agents: int) -> str:
    """A module declaring *agents* agents, each consuming one topic and emitting to another."""
    parts = ["from mesh import Event, Mesh", "", 'app = Mesh("idle")']
    for n in range(agents):
        parts.append(
            textwrap.dedent(f"""
            class In{n}(Event, topic="bench.idle.in{n}", key="id", name="bench.IdleIn{n}"):
                id: str

            class Out{n}(Event, topic="bench.idle.out{n}", key="id", name="bench.IdleOut{n}"):
                id: str

            @app.agent("agent{n}", consumes=In{n})
            async def agent{n}(event: In{n}) -> Out{n}:
                return Out{n}(id=event.id)
            """)
        )
    return "\n".join(parts)


def write_app(root: Path, agents: int) -> None:
    (root / "idle_app.py").write_text(app_source(agents))
    sys.path.insert(0, str(root))
    import idle_app  # the module just written

    types: list[type[Event]] = list(idle_app.app.event_types.values())
    generate_schemas(types, root / "schemas")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def thread_ticks(pid: int) -> Counter[str]:
    found: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rpartition(")")[2].split()
        found[f"{name} [{task.name}]"] += int(fields[11]) + int(fields[12])
    return found


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mesh run exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mesh run not ready after {timeout_s:.0f} s")


def wait_assigned(proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the loop exited with {proc.wait()}")
        if line.startswith("assigned") and int(line.split()[1]) > 0:
            return
    raise RuntimeError("the loop got no partitions")


def measure(args: argparse.Namespace, root: Path) -> None:
    broker = start_broker(port=free_port(), log_dir=root)
    registry = start_registry(bootstrap_servers=broker.url, port=free_port(), log_dir=root)
    procs: list[subprocess.Popen] = []
    try:
        write_app(root, args.agents)
        from confluent_kafka.admin import AdminClient

        topics = [TopicSpec("bench.idle.loop", 3)]
        ensure_topics(AdminClient({"bootstrap.servers": broker.url}), topics)
        env = {
            **os.environ,
            "MESH_BOOTSTRAP_SERVERS": broker.url,
            "MESH_REGISTRY_URL": registry.url,
        }
        port = free_port()
        mesh_proc = subprocess.Popen(
            [sys.executable, "-m", "mesh", "run", "idle_app:app", "--metrics-port", str(port)],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(root / "mesh-run.log", "w"),  # noqa: SIM115 (closed with the process)
        )
        procs.append(mesh_proc)
        loop_proc = subprocess.Popen(
            [sys.executable, "-c", LOOP, broker.url, "bench-idle-loop", "bench.idle.loop"],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(loop_proc)
        wait_assigned(loop_proc, 60)
        wait_ready(f"http://127.0.0.1:{port}/readyz", mesh_proc, 90)
        time.sleep(args.settle)
        pids = {"hand-written loop": loop_proc.pid, "mesh run": mesh_proc.pid}
        before = {name: cpu_ticks(pid) for name, pid in pids.items()}
        threads_before = thread_ticks(mesh_proc.pid)
        began = time.monotonic()
        time.sleep(args.seconds)
        wall = time.monotonic() - began
        cpu = {name: (cpu_ticks(pid) - before[name]) / TICKS / wall for name, pid in pids.items()}
        threads = thread_ticks(mesh_proc.pid) - threads_before
        rss = {name: rss_mb(pid) for name, pid in pids.items()}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        registry.stop()
        broker.stop()
    loop, mesh = "hand-written loop", "mesh run"
    print(f"idle over {wall:.0f} s, {args.agents} agents, CPU in % of one core:")
    print(f"{'process':<20} {'CPU %':>7} {'RSS MB':>8}")
    for name in (loop, mesh):
        print(f"{name:<20} {cpu[name] * 100:7.2f} {rss[name]:8.1f}")
    print(
        f"mesh / loop: CPU {cpu[mesh] / max(cpu[loop], 1e-9):.1f}x, "
        f"RSS {rss[mesh] / rss[loop]:.1f}x (target: <= 1.5 % and <= 50 MB)"
    )
    if args.threads:
        print("mesh run by thread (CPU % of one core):")
        for name, ticks in threads.most_common():
            if ticks:
                print(f"  {name:<30} {ticks / TICKS / wall * 100:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0, help="after ready, before timing")
    parser.add_argument("--threads", action="store_true", help="mesh run's CPU by thread")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        measure(args, Path(name))


if __name__ == "__main__":
    main()
