"""``generate --engine ray --address`` on a real Ray cluster of two nodes on this machine.

A head (``ray start --head``) and a second node (``ray start --address``) run as separate processes,
one CPU and an 80 MB object store each, no dashboard, authentication off, usage statistics off,
each node's ports chosen free, the node address 127.0.0.1 (on Linux Ray registers the machine's own
address for it, and its servers listen on every interface whatever the node address; the machines
that run CI reach no network beyond package registries). The CLI joins the cluster as any user
would. The tests check that the
files are byte-identical to a local run, that the second node ran tasks, and that after the node
running the tasks is killed (SIGKILL, mid-run, with the run's driver) ``--resume`` completes the run
byte-identically on a replacement node. Every process started here, and every process below it, is killed at the end, also
when a test fails.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from defectforge.io.images import write_image
from defectforge.pipelines.generate import generate

#: CI (.ci/run) installs the ray extra and sets this: there the tests must run, never skip.
REQUIRED = os.environ.get("DEFECTFORGE_REQUIRE_BROWSER") == "1"

#: Bounds on each step, so that a wedged cluster fails the test instead of hanging CI.
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 300

GENERATE = dict(method="cutpaste", seed=7, normal_ratio=0.1)
#: Samples of the plain run, and of the run whose second node is killed (long enough to catch mid-run).
COUNT, LONG_COUNT = 40, 160


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_executable() -> str:
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.fail(f"the ray command line is not beside {sys.executable}")
    return str(ray_cli)


def _node_ports() -> list[str]:
    """Ports of one node's own servers, chosen free (Ray's defaults would collide between the two nodes
    and with any other Ray on this machine)."""
    return [f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}",
            "--min-worker-port=0", "--max-worker-port=0"]  # 0: workers take ports from the OS


def _descendants(root: int) -> dict[int, str]:
    """``{pid: command line}`` of ``root`` and every process below it (Ray puts its workers in process
    groups of their own, so a process group does not hold a node)."""
    out = subprocess.run(["ps", "-eww", "-o", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in out.splitlines():
        fields = line.split(None, 2)
        if len(fields) >= 2:
            children.setdefault(int(fields[1]), []).append((int(fields[0]), fields[2] if len(fields) == 3 else ""))
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        for child, args in children.get(pid, []):
            if child not in found:
                found[child] = args
                todo.append(child)
    return found


def _kill_tree(root: subprocess.Popen) -> None:
    """SIGKILL ``root`` and all its descendants, collected before any dies (orphans lose their parent)."""
    pids = [root.pid, *_descendants(root.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    root.wait(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids[1:]):
        time.sleep(0.2)  # zombies of our own children are reaped by wait; the rest by init


class Cluster:
    """A head and one worker node, each a ``ray start --block`` process of this one."""

    def __init__(self, root: Path):
        self.root = root
        self.ray = _ray_executable()
        self.env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
        self.env.pop("RAY_ADDRESS", None)
        self.address = f"127.0.0.1:{_free_port()}"
        self.nodes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, args: list[str], cpus: int = 1) -> None:
        common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
                  f"--object-store-memory={80 * 1024**2}", "--disable-usage-stats"]
        log = open(self.root / f"{name}.log", "w")
        self.nodes[name] = subprocess.Popen([self.ray, "start", *common, *args, *_node_ports()], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def start(self, head_cpus: int) -> None:
        port = self.address.rsplit(":", 1)[1]
        # a short temporary folder: Ray's socket paths must stay under the 107 characters of AF_UNIX
        self._start("head", ["--head", f"--port={port}", "--include-dashboard=false",
                             f"--dashboard-port={_free_port()}", f"--temp-dir={self.root / 'ray'}"], cpus=head_cpus)
        self.add_node("worker")

    def add_node(self, name: str) -> None:
        """Start a node of one CPU that joins the cluster, and wait until the cluster counts it."""
        self._start(name, [f"--address={self.address}"])
        self.wait_for_nodes(len(self.nodes))

    def alive_nodes(self) -> int:
        """Nodes the cluster's GCS reports alive, asked from a fresh driver process (0 while it is not up)."""
        host, port = self.address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError:
            return 0  # the GCS is not listening yet: a driver would wait for it for a minute
        probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False);"
                 " print(sum(n['Alive'] for n in ray.nodes()))")
        try:
            done = subprocess.run([sys.executable, "-c", probe, self.address], env=self.env, capture_output=True,
                                  text=True, timeout=90)
        except subprocess.TimeoutExpired:
            return 0
        lines = done.stdout.strip().splitlines()
        return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else 0

    def wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, proc in self.nodes.items():
                if proc.poll() is not None:
                    pytest.fail(f"ray start ({name}) exited with {proc.returncode}:\n{self.log(name)}")
            if self.alive_nodes() == count:
                return
            time.sleep(1.0)
        pytest.fail(f"the cluster did not report {count} nodes in {START_TIMEOUT_S} s:\n"
                    + "\n".join(self.log(n) for n in self.nodes))

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-3000:]

    def raylet_pid(self, name: str) -> int:
        pids = [pid for pid, cmd in _descendants(self.nodes[name].pid).items() if "/raylet/raylet " in cmd]
        assert len(pids) == 1, f"{name}: raylets {pids}"
        return pids[0]

    def shard_tasks(self, raylet_pid: int) -> int:
        """Shard tasks started on the node of ``raylet_pid``, from Ray's logs: its raylet's log names the
        workers it started, and each worker's ``.out`` log opens every task with ``:task_name:NAME``."""
        logs = self.root / "ray" / "session_latest" / "logs"
        started = re.compile(rf"^\[[^]]* I {raylet_pid} \d+\] \(raylet\).*Started worker process with pid "
                             r"\d+ worker_id=([0-9a-f]+)", re.M)
        worker_ids = {m for log in logs.glob("raylet*.out") for m in started.findall(log.read_text(errors="replace"))}
        return sum(log.read_text(errors="replace").count(":task_name:_shard")
                   for worker_id in worker_ids for log in logs.glob(f"worker-{worker_id}-*.out"))

    def kill(self, name: str) -> None:
        """SIGKILL the node: raylet, its workers and agents, all at once (a lost machine)."""
        _kill_tree(self.nodes.pop(name))

    def stop(self) -> None:
        for name in list(self.nodes):
            _kill_tree(self.nodes.pop(name))


@pytest.fixture
def ray_cluster(request):
    """A head (CPUs: the test's parameter, 1 by default) and a worker node of one CPU."""
    if not REQUIRED:
        pytest.importorskip("ray", reason='--engine ray needs the ray extra: pip install -e ".[ray]"')
    root = Path(tempfile.mkdtemp(prefix="dfray-", dir="/tmp"))
    cluster = Cluster(root)
    try:
        cluster.start(head_cpus=getattr(request, "param", 1))
        yield cluster
    finally:
        cluster.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _normals(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(6):
        write_image(folder / f"n{i}.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return folder


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(src: Path, out: Path, cluster: Cluster, count: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "defectforge.cli.main", "generate", str(src), str(out), "-m", GENERATE["method"],
            "-n", str(count), "--seed", str(GENERATE["seed"]), "--normal-ratio",
            str(GENERATE["normal_ratio"]), "--engine", "ray", "--address", cluster.address, "--quiet", *extra]


def _local_run(src: Path, out: Path, count: int) -> dict[str, bytes]:
    generate(src, out, GENERATE["method"], count, seed=GENERATE["seed"],
             normal_ratio=GENERATE["normal_ratio"], progress=False)
    return _tree(out)


@pytest.mark.slow
def test_cluster_run_matches_local_run_and_uses_both_nodes(ray_cluster, tmp_path):
    src = _normals(tmp_path / "normal")
    local = _local_run(src, tmp_path / "local", COUNT)
    done = subprocess.run(_cli(src, tmp_path / "ray", ray_cluster, COUNT, "--workers", "2"), env=ray_cluster.env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"wrote {COUNT} samples" in done.stdout
    assert _tree(tmp_path / "ray") == local and len(local) > COUNT
    tasks = {name: ray_cluster.shard_tasks(ray_cluster.raylet_pid(name)) for name in ("head", "worker")}
    assert all(tasks.values()), f"shard tasks per node: {tasks}"


@pytest.mark.slow
@pytest.mark.parametrize("ray_cluster", [0], indirect=True)  # a head without CPUs: every task on the worker
def test_killed_worker_node_then_resume_completes_the_run(ray_cluster, tmp_path):
    src = _normals(tmp_path / "normal")
    local = _local_run(src, tmp_path / "local", LONG_COUNT)
    out = tmp_path / "ray"
    records = out / ".records"
    driver = subprocess.Popen(_cli(src, out, ray_cluster, LONG_COUNT, "--workers", "2"), env=ray_cluster.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        # mid-run: the worker node has recorded samples and the run is not finished
        while time.monotonic() < deadline and driver.poll() is None:
            if records.is_dir() and len(list(records.glob("*.json"))) >= 4:
                break
            time.sleep(0.1)
        assert driver.poll() is None, f"the run ended before the node could be killed:\n{driver.communicate()[0]}"
        ray_cluster.kill("worker")
        # the job goes down with the node (its driver ran there): nothing but --resume finishes it
    finally:
        _kill_tree(driver)
        driver.stdout.close()
    made_before = len(list(records.glob("*.json")))
    assert 0 < made_before < LONG_COUNT and not (out / "manifest.jsonl").exists(), made_before
    ray_cluster.wait_for_nodes(1)
    ray_cluster.add_node("replacement")
    resumed = subprocess.run(_cli(src, out, ray_cluster, LONG_COUNT, "--workers", "1", "--resume"),
                             env=ray_cluster.env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"wrote {LONG_COUNT} samples" in resumed.stdout and "resumed" in resumed.stdout, resumed.stdout
    assert _tree(out) == local
