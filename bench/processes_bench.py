"""``mesh run --processes 2`` against ``--processes 1``: a CPU-bound agent's throughput.

The agent burns ``--work-ms`` of pure-Python CPU per event (under the GIL, so one process
uses one core at most) and emits one event. For each round and each process count, a
fresh topic pair (``--partitions``) is filled with ``--events`` events first, then
``mesh run bench_cpu_app:app --processes N`` (metrics off) is started as a user starts
it, and its group's committed offsets are read every 50 ms: the throughput is measured
between 10 % and 90 % of the events committed (start-up and the group's join excluded),
and the wall time from start to the last commit is printed beside it, with the cores
mesh's processes used meanwhile (CPU time of the process tree over the window) and the
load average (other work on a shared machine skews a round): when the CPU ms per event
stay equal and the cores used stay below the machine's, free cores bound the ratio.
``--processes 1`` is today's in-process ``mesh run``. The embedded broker runs on the
same cores, so the ideal ratio on a 2-core machine is below 2::

    python bench/processes_bench.py [--events 5000] [--work-ms 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from argparse import Namespace
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from mesh.dev.stack import free_port, start_broker, start_registry
from mesh.kafka.topics import TopicSpec, ensure_topics
from mesh.schema.files import generate_schemas

APP = """
import os

from mesh import Event, Mesh

PREFIX = os.environ["BENCH_PREFIX"]
ITERATIONS = int(os.environ["BENCH_ITERATIONS"])


class Job(Event, topic=f"{PREFIX}.in", key="job_id", name="bench.CpuJob"):
    job_id: str


class Done(Event, topic=f"{PREFIX}.out", key="job_id", name="bench.CpuDone"):
    job_id: str
    checksum: int


app = Mesh(f"{PREFIX}-app", schemas_dir=os.environ["BENCH_SCHEMAS"])


def burn(n: int) -> int:
    x = 0
    for i in range(n):
        x += i * i
    return x


@app.agent("cruncher", consumes=Job)
async def cruncher(event: Job) -> Done:
    return Done(job_id=event.job_id, checksum=burn(ITERATIONS) & 0xFFFF)
"""


def burn(n: int) -> int:
    x = 0
    for i in range(n):
        x += i * i
    return x


def iterations_for(work_ms: float) -> int:
    """Loop iterations of :func:`burn` that take *work_ms* on this machine (best of 5)."""
    n = 100_000
    best = min(_timed(n) for _ in range(5))
    return max(1, int(n * work_ms / 1000 / best))


def _timed(n: int) -> float:
    began = time.perf_counter()
    burn(n)
    return time.perf_counter() - began


TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root_pid: int) -> float:
    """CPU seconds (user + system) of *root_pid* and its live descendants."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, grew = {root_pid}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(ticks.get(pid, 0) for pid in tree) / TICKS


def committed_total(probe: Consumer, topic: str, partitions: int) -> int:
    tps = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    return sum(max(0, tp.offset) for tp in tps)


def one_run(
    root: Path, broker: str, registry: str, processes: int, iterations: int, args: Namespace
) -> tuple[float, float, float]:
    """Events/s between 10 % and 90 % committed, the wall seconds from start to the end,
    and the cores mesh's processes used between 10 % and 90 %."""
    prefix = f"bench-cpu-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "BENCH_PREFIX": prefix,
        "BENCH_ITERATIONS": str(iterations),
        "BENCH_SCHEMAS": str(root / prefix),
        "MESH_BOOTSTRAP_SERVERS": broker,
        "MESH_REGISTRY_URL": registry,
        "MESH_TOPICS__PARTITIONS": str(args.partitions),
    }
    os.environ.update({k: env[k] for k in ("BENCH_PREFIX", "BENCH_ITERATIONS", "BENCH_SCHEMAS")})
    sys.modules.pop("bench_cpu_app", None)
    import bench_cpu_app  # the module written by main(), on this run's topics

    generate_schemas([bench_cpu_app.Job, bench_cpu_app.Done], root / prefix)
    source = bench_cpu_app.Job.topic()
    admin = AdminClient({"bootstrap.servers": broker})
    sink = bench_cpu_app.Done.topic()
    ensure_topics(admin, [TopicSpec(source, args.partitions), TopicSpec(sink, args.partitions)])
    from mesh import Mesh, Settings

    serde = Mesh("feeder", settings=Settings(bootstrap_servers=broker, registry_url=registry))
    encode = serde._get_serde().encode
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 20})
    for i in range(args.events):
        job = bench_cpu_app.Job(job_id=f"job-{i}")
        producer.produce(source, encode(job, source), job.job_id.encode())
        producer.poll(0)
    assert producer.flush(30) == 0
    probe = Consumer(
        {"bootstrap.servers": broker, "group.id": bench_cpu_app.app.group_id("cruncher")}
    )
    log = (root / f"{prefix}.log").open("wb")
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh", "run", "bench_cpu_app:app",
         "--processes", str(processes), "--metrics-port", "0"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    marks: dict[float, float] = {}
    cpu: dict[float, float] = {}
    try:
        while True:
            done = committed_total(probe, source, args.partitions)
            now = time.monotonic()
            for share in (0.1, 0.9, 1.0):
                if share not in marks and done >= share * args.events:
                    marks[share] = now
                    cpu[share] = tree_cpu_s(proc.pid)
            if 1.0 in marks:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"mesh run exited with {proc.returncode}: see {log.name}")
            if now - began > args.timeout:
                raise RuntimeError(f"{done} of {args.events} committed after {args.timeout} s")
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        probe.close()
        log.close()
    window = marks[0.9] - marks[0.1]
    return 0.8 * args.events / window, marks[1.0] - began, (cpu[0.9] - cpu[0.1]) / window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--work-ms", type=float, default=2.0, help="CPU per event")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="1 then 2 processes, per round")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mesh-bench-processes-"))
    (root / "bench_cpu_app.py").write_text(textwrap.dedent(APP))
    sys.path.insert(0, str(root))
    os.environ.pop("MESH_CONFIG", None)
    iterations = iterations_for(args.work_ms)
    broker = start_broker(port=free_port(), log_dir=root)
    registry = start_registry(bootstrap_servers=broker.url, port=free_port(), log_dir=root)
    print(
        f"{args.events} events, {args.work_ms} ms of CPU each ({iterations} iterations), "
        f"{args.partitions} partitions, {os.cpu_count()} cores"
    )
    print(
        f"{'round':>5} {'processes':>9} {'events/s':>9} {'wall s':>7} {'cores':>6} "
        f"{'CPU ms/event':>12} {'load':>5}"
    )
    ratios = []
    try:
        for n in range(1, args.rounds + 1):
            rates = {}
            for processes in (1, 2) if n % 2 else (2, 1):  # alternate: the machine drifts
                rate, wall, cores = one_run(
                    root, broker.url, registry.url, processes, iterations, args
                )
                rates[processes] = rate
                load = os.getloadavg()[0]  # other work on the machine skews a round
                print(
                    f"{n:>5} {processes:>9} {rate:9.0f} {wall:7.1f} {cores:6.2f} "
                    f"{cores / rate * 1000:12.2f} {load:5.1f}",
                    flush=True,
                )
            ratios.append(rates[2] / rates[1])
            print(f"round {n}: --processes 2 / 1 = {ratios[-1]:.2f}", flush=True)
    finally:
        registry.stop()
        broker.stop()
    print(
        f"--processes 2 / --processes 1: {', '.join(f'{r:.2f}' for r in ratios)} "
        f"(ideal on {os.cpu_count()} cores, the broker beside: < {os.cpu_count()})"
    )


if __name__ == "__main__":
    sys.exit(main())
