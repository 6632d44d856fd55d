"""Round time: the built-in app against stock Flower, and KubeFlower's own overhead, side by side.

    .venv/bin/python bench/round_overhead.py [--rounds 5] [--repeat 1] [--job examples/digits-fedavg.yaml]

Each repeat runs the same job (digits, the clients, the seed) three ways on loopback:
1. stock: `flower-superlink`, one `flower-supernode` per client and `flwr run`, with Flower's
   defaults, running `bench/stock_app`: the same task written the way Flower's template writes an
   app (eager imports, torch.optim, separate train and evaluate messages, `FedAvg.start`);
2. built-in: the same processes by hand, with the built-in app and the settings that KubeFlower's
   client pods get (the SuperExec poll, torch threads: `kubeflower_workload.processes`, `kubeflower.local`);
3. `kubeflower run`: the built-in app under KubeFlower's own entry points.
Only Flower's telemetry and update checks are off in all three (this machine cannot phone home).

Printed for each: seconds per round (from the start of round 1 until the last round's evaluation
is known, over the rounds), seconds from launch to the end, the final accuracy, and the seconds
from launch until an evaluated accuracy of 0.90 was known. Then: built-in / stock seconds per
round (target <= 0.40), the final accuracies' difference (target: within 1 point), `kubeflower
run` / built-in by hand (target <= 1.05); the requests a second that reach the SuperLink per
connected node, while idle (nodes connected, no run; target <= 10) and during the run (with the
requests a round), read from its access log; and the memory of the server entry point beside the
SuperLink's.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import median

import yaml

from kubeflower.core import contract
from kubeflower.core.runconfig import run_config
from kubeflower.core.server_status import RoundRecord, ServerStatus, http_get
from kubeflower.core.validation import load_job
from kubeflower.local import host_cpu_share
from kubeflower_workload import processes, progress
from kubeflower_workload.server import BUILTIN_APP

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STOCK_APP = ROOT / "bench" / "stock_app"
TARGET_ACCURACY = 0.90
IDLE_SECONDS = 15.0
"""How long the nodes sit connected with no run before a by-hand run is submitted."""
ACCESS_LINE = re.compile(r"^(\S+Z) DEBUG \[uvicorn\.access\] \S+ - \"\w+ /v1/(\w+)/([\w-]+)")


@dataclass
class Traffic:
    """Requests at the SuperLink, by API (fleet: the SuperNodes; runtime: ServerApp and SuperExec)."""

    seconds: float
    by_api: Counter[str]

    def line(self, nodes: int, rounds: int | None = None) -> str:
        total = sum(self.by_api.values()) / self.seconds
        apis = ", ".join(f"{api} {count / self.seconds:.2f}" for api, count in sorted(self.by_api.items()))
        per_round = f"; {sum(self.by_api.values()) / rounds:.0f} requests a round" if rounds else ""
        return f"{total / nodes:5.2f} req/s per node ({total:.2f} in all: {apis}){per_round}"


@dataclass
class Result:
    name: str
    rounds: list[RoundRecord] = field(default_factory=list)
    total_seconds: float = 0.0
    seconds_to_target: float | None = None
    idle: Traffic | None = None
    running: Traffic | None = None

    @property
    def seconds_per_round(self) -> float:
        return sum(r.seconds for r in self.rounds) / max(len(self.rounds), 1)

    @property
    def accuracy(self) -> float:
        return self.rounds[-1].metrics.get("accuracy", float("nan")) if self.rounds else float("nan")

    def line(self) -> str:
        reached = f"{self.seconds_to_target:.1f} s" if self.seconds_to_target is not None else "not reached"
        return (
            f"{self.name:15} {self.seconds_per_round:6.2f} s/round  {self.total_seconds:6.1f} s in all  "
            f"final accuracy {self.accuracy:.4f}  {TARGET_ACCURACY:.2f} after {reached}"
        )


def _memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB of one process now; zeros once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0, 0.0
    value = {k: int(v) / 1024 for k, v in re.findall(r"^(Rss|Pss):\s+(\d+)", text, re.M)}
    return value.get("Rss", 0.0), value.get("Pss", 0.0)


def _peak_rss(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmHWM:\s+(\d+)", status)
    return int(match.group(1)) / 1024 if match else 0.0


class MemoryWatch(threading.Thread):
    """Samples the server entry point and its SuperLink (found below `root`) every 0.2 s."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.done = root, threading.Event()
        self.pids: dict[str, int] = {}
        self.peak_pss: dict[str, float] = {}
        self.peak_rss: dict[str, float] = {}

    def run(self) -> None:
        while not self.done.wait(0.2):
            for pid in processes.descendants(self.root):
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                for name in ("kubeflower-server", "flower-superlink"):
                    if name in command and "flower-superexec" not in command:
                        self.pids.setdefault(name, pid)
            for name, pid in self.pids.items():
                rss, pss = _memory(pid)
                self.peak_pss[name] = max(self.peak_pss.get(name, 0.0), pss)
                self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), _peak_rss(pid) or rss)


def with_kubeflower(job_file: Path, work: Path, env: dict[str, str]) -> tuple[Result, MemoryWatch]:
    result = Result("kubeflower run")
    started = time.monotonic()
    run = subprocess.Popen(
        [str(BIN / "kubeflower"), "run", str(job_file), "--output", str(work / "kubeflower")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watch = MemoryWatch(run.pid)
    watch.start()
    assert run.stdout is not None
    for line in run.stdout:  # not a terminal: one line per change of round
        match = re.search(r"round \d+/\d+ .*accuracy ([0-9.]+)", line)
        if match and float(match.group(1)) >= TARGET_ACCURACY and result.seconds_to_target is None:
            result.seconds_to_target = time.monotonic() - started
    if run.wait() != 0:
        raise SystemExit(f"kubeflower run failed; see {work / 'kubeflower' / 'logs'}")
    result.total_seconds = time.monotonic() - started
    watch.done.set()
    status = ServerStatus.model_validate_json((work / "kubeflower" / "metrics.json").read_text())
    result.rounds = status.history
    return result, watch


def _access_log(log: Path) -> list[tuple[float, str]]:
    """(epoch seconds, API) of every request in a SuperLink's DEBUG log."""
    requests = []
    for line in log.read_text(errors="replace").splitlines():
        if match := ACCESS_LINE.match(progress.strip_ansi(line)):
            when = datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
            requests.append((when, match.group(2)))
    return requests


def _traffic(requests: list[tuple[float, str]], start: float, end: float) -> Traffic:
    return Traffic(end - start, Counter(api for when, api in requests if start <= when < end))


def _wait_for_nodes(superlink: subprocess.Popen[bytes], log: Path, nodes: int, timeout: float = 60) -> None:
    """Until the SuperLink has activated `nodes` SuperNodes (read from its access log)."""
    deadline = time.monotonic() + timeout
    while sum("/v1/fleet/activate-node" in line for line in log.read_text(errors="replace").splitlines()) < nodes:
        if superlink.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the SuperNodes did not connect:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


def _wait_for_superlink(superlink: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            http_get(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except OSError:
            if superlink.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"flower-superlink did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.2)


def by_hand(
    name: str, app: Path, config: dict, replicas: int, work: Path, server_env: dict[str, str], node_env: dict[str, str]
) -> Result:
    """`flower-superlink`, the SuperNodes and `flwr run`, as a user starts them from Flower's docs."""
    result = Result(name)
    work.mkdir()
    home = work / "flwr-home"
    home.mkdir()
    superlink_port, *supernode_ports = processes.free_ports(1 + replicas)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n[superlink.bench]\naddress = "127.0.0.1:{superlink_port}"\ninsecure = true\n'
    )
    overrides = work / "run-config.toml"
    overrides.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
    cli_env = {**server_env, "FLWR_HOME": str(home)}
    superlink_log = work / "superlink.log"
    started = time.monotonic()
    started_processes = [
        processes.start(
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(superlink_port),
                "--disable-runtime-dependency-installation",
            ],
            {**cli_env, "FLWR_LOG_LEVEL": "DEBUG"},  # one access-log line per request
            superlink_log,
        )
    ]
    for partition in range(replicas):
        started_processes.append(
            processes.start(
                [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{superlink_port}",
                    "--port",
                    str(supernode_ports[partition]),
                    "--node-config",
                    f"partition-id={partition} num-partitions={replicas}",
                ],
                {**node_env, "FLWR_HOME": str(work / f"node-{partition}")},
                work / f"supernode-{partition}.log",
            )
        )
    try:
        _wait_for_superlink(started_processes[0], superlink_port, superlink_log)
        _wait_for_nodes(started_processes[0], superlink_log, replicas)
        idle_from = time.time() + 1.0
        time.sleep(1.0 + IDLE_SECONDS)
        submitted_at = time.time()
        submitted = subprocess.run(
            [str(BIN / "flwr"), "run", str(app), "bench", "--run-config", str(overrides), "--format", "json"],
            env=cli_env,
            capture_output=True,
            text=True,
            check=True,
        )
        run_id = json.loads(submitted.stdout)["run-id"]
        parser = progress.LogProgress(builtin=app == BUILTIN_APP)
        stream = subprocess.Popen(
            [str(BIN / "flwr"), "log", run_id, "bench", "--stream"],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert stream.stdout is not None
        for line in stream.stdout:
            for record in parser.feed(line, time.monotonic()):
                result.rounds.append(record)
                if result.seconds_to_target is None and record.metrics.get("accuracy", 0.0) >= TARGET_ACCURACY:
                    result.seconds_to_target = time.monotonic() - started
        stream.wait()
        result.rounds.extend(parser.finish(time.monotonic()))
        result.total_seconds = time.monotonic() - started
        finished_at = time.time()
    finally:
        for process in started_processes:
            processes.stop(process, grace=10)
        processes.kill_descendants()
    requests = _access_log(superlink_log)
    result.idle = _traffic(requests, idle_from, submitted_at)
    result.running = _traffic(requests, submitted_at, finished_at)
    return result


def _job_file(job_path: Path, rounds: int | None, work: Path) -> Path:
    if rounds is None:
        return job_path
    document = yaml.safe_load(job_path.read_text())
    document["spec"]["rounds"] = rounds
    path = work / job_path.name
    path.write_text(yaml.safe_dump(document))
    return path


def _stock_config(config: dict) -> dict:
    """The run config for bench/stock_app: the keys it declares, after checking it can mirror the job."""
    mirrored = {"dataset": "digits", "partitioning": "iid", "strategy": "FedAvg", "model": "digits-cnn"}
    for key, value in mirrored.items():
        if config.get(key) not in (value, "auto"):
            raise SystemExit(f"bench/stock_app mirrors {key} {value} only; this job has {config.get(key)!r}")
    declared = tomllib.loads((STOCK_APP / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    return {key: config[key] for key in declared}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=Path, default=ROOT / "examples" / "digits-fedavg.yaml")
    parser.add_argument(
        "--rounds", type=int, default=5, help="override the job's rounds (more rounds, steadier figures)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="repeats of the three runs; medians are compared")
    args = parser.parse_args()
    processes.become_subreaper()
    runs: dict[str, list[Result]] = {"stock": [], "built-in": [], "kubeflower run": []}
    memory: list[MemoryWatch] = []
    with tempfile.TemporaryDirectory(prefix="kubeflower-bench-") as tmp:
        job_file = _job_file(args.job, args.rounds, Path(tmp))
        job = load_job(job_file)
        replicas = job.spec.clients.replicas
        config = run_config(job.spec)
        stock_config = _stock_config(config)
        print(f"job {args.job}: {job.spec.rounds} rounds, {replicas} clients, {args.repeat} repeat(s)", flush=True)
        # As a user with the virtual environment activated (its scripts first on PATH).
        stock_env = processes.child_env()
        stock_env.pop(processes.SUPEREXEC_POLL, None)
        for repeat in range(args.repeat):
            work = Path(tmp) / f"repeat-{repeat}"
            work.mkdir()
            env = processes.child_env({"KUBEFLOWER_DATA_DIR": str(work / "data")})
            # What a client pod gets here (`kubeflower.local`): its share of the CPUs, the SuperExec poll.
            node_env = processes.child_env(
                {**env, contract.ENV_THREADS: str(host_cpu_share(replicas))},
                superexec_poll=processes.NODE_SUPEREXEC_POLL_INTERVAL,
            )
            results = [
                by_hand("stock", STOCK_APP, stock_config, replicas, work / "stock", stock_env, stock_env),
                by_hand("built-in", BUILTIN_APP, config, replicas, work / "built-in", env, node_env),
            ]
            ours, watch = with_kubeflower(job_file, work, env)
            memory.append(watch)
            for result in [*results, ours]:
                runs[result.name].append(result)
                print(result.line(), flush=True)
    print()
    per_round = {name: median(r.seconds_per_round for r in done) for name, done in runs.items()}
    print(
        f"seconds per round (medians): stock {per_round['stock']:.2f}, built-in {per_round['built-in']:.2f}, "
        f"kubeflower run {per_round['kubeflower run']:.2f}"
    )
    print(f"built-in / stock: {per_round['built-in'] / per_round['stock']:.3f} (target <= 0.40)")
    print(
        f"kubeflower run / built-in by hand: {per_round['kubeflower run'] / per_round['built-in']:.3f} (target <= 1.05)"
    )
    gaps = [abs(b.accuracy - s.accuracy) * 100 for b, s in zip(runs["built-in"], runs["stock"], strict=True)]
    print(f"final accuracy, built-in vs stock on the same seed: at most {max(gaps):.2f} points apart (target <= 1)")
    for name, done in runs.items():
        reached = [r.seconds_to_target for r in done if r.seconds_to_target is not None]
        print(
            f"{TARGET_ACCURACY:.2f} accuracy, {name}: {len(reached)}/{len(done)} runs"
            + (f", after {median(reached):.1f} s (median, from launch)" if reached else "")
        )
    for name in ("stock", "built-in"):
        last = runs[name][-1]
        assert last.idle is not None and last.running is not None
        print(f"SuperLink traffic, {name}, idle:    {last.idle.line(replicas)} (target <= 10 per node)")
        print(f"SuperLink traffic, {name}, running: {last.running.line(replicas, len(last.rounds))}")
    server, superlink = "kubeflower-server", "flower-superlink"
    print(
        f"memory, peak RSS / peak PSS: server entry point {max(m.peak_rss.get(server, 0) for m in memory):.0f} / "
        f"{max(m.peak_pss.get(server, 0) for m in memory):.0f} MB, SuperLink "
        f"{max(m.peak_rss.get(superlink, 0) for m in memory):.0f} / "
        f"{max(m.peak_pss.get(superlink, 0) for m in memory):.0f} MB"
        " (target: the entry point within 50 MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
