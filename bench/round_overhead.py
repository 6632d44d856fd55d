"""What KubeFlower's workload costs over running Flower by hand, and how fast digits trains.

    .venv/bin/python bench/round_overhead.py [--job examples/digits-fedavg.yaml]

Runs the same job (app, run config, data, clients) twice on loopback:
1. `kubeflower run JOB`: the server entry point (SuperLink under its supervisor) and one client
   entry point per replica;
2. by hand: `flower-superlink`, one `flower-supernode` per replica, `flwr run` with the job's run
   config, and `flwr log --stream` to watch it.
Both use the same Flower settings (telemetry and update checks off, the SuperExec task poll at
0.1 s), so the difference is KubeFlower's own. Prints, for each: seconds per round (the rounds'
own timing from the ServerApp's events), seconds from start to the end of the job, and seconds
from start until an evaluated accuracy of 0.90 was known; then the ratio of the seconds per
round, and the server entry point's memory (its own process: peak RSS, and proportional set size
sampled during the run) next to the SuperLink's. Targets: ratio at most 1.05; 0.90 on digits
within 3 rounds with 2 IID clients; the entry point within 50 MB of memory over the SuperLink.
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
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubeflower.runconfig import run_config  # noqa: E402
from kubeflower.server_status import RoundRecord, ServerStatus  # noqa: E402
from kubeflower.validation import load_job  # noqa: E402
from kubeflower.workload import processes, progress, status_server  # noqa: E402
from kubeflower.workload.server import BUILTIN_APP  # noqa: E402

BIN = Path(sys.executable).parent
TARGET_ACCURACY = 0.90


@dataclass
class Result:
    name: str
    rounds: list[RoundRecord] = field(default_factory=list)
    total_seconds: float = 0.0
    seconds_to_target: float | None = None

    @property
    def seconds_per_round(self) -> float:
        return sum(r.seconds for r in self.rounds) / max(len(self.rounds), 1)

    def line(self) -> str:
        accuracy = self.rounds[-1].metrics.get("accuracy", float("nan")) if self.rounds else float("nan")
        reached = f"{self.seconds_to_target:.1f} s" if self.seconds_to_target is not None else "not reached"
        return (f"{self.name:16} {self.seconds_per_round:6.2f} s/round  {self.total_seconds:6.1f} s in all  "
                f"final accuracy {accuracy:.4f}  {TARGET_ACCURACY:.2f} after {reached}")


def _reached(result: Result, record: RoundRecord, started: float) -> None:
    result.rounds.append(record)
    if result.seconds_to_target is None and record.metrics.get("accuracy", 0.0) >= TARGET_ACCURACY:
        result.seconds_to_target = time.monotonic() - started


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
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    watch = MemoryWatch(run.pid)
    watch.start()
    assert run.stdout is not None
    seen: set[int] = set()
    for line in run.stdout:  # not a terminal: one line per change of round
        match = re.search(r"round (\d+)/\d+ .*accuracy ([0-9.]+)", line)
        if match and int(match.group(1)) not in seen:
            seen.add(int(match.group(1)))
            if float(match.group(2)) >= TARGET_ACCURACY and result.seconds_to_target is None:
                result.seconds_to_target = time.monotonic() - started
    if run.wait() != 0:
        raise SystemExit(f"kubeflower run failed; see {work / 'kubeflower' / 'logs'}")
    result.total_seconds = time.monotonic() - started
    watch.done.set()
    status = ServerStatus.model_validate_json((work / "kubeflower" / "metrics.json").read_text())
    result.rounds = status.history
    return result, watch


def _wait_for_superlink(superlink: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status_server.get(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except OSError:
            if superlink.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"flower-superlink did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.2)


def by_hand(job_file: Path, work: Path, env: dict[str, str]) -> Result:
    job = load_job(job_file)
    result = Result("by hand")
    home = work / "flwr-home"
    home.mkdir()
    replicas = job.spec.clients.replicas
    superlink_port, *supernode_ports = processes.free_ports(1 + replicas)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n[superlink.bench]\naddress = "127.0.0.1:{superlink_port}"\ninsecure = true\n'
    )
    overrides = work / "run-config.toml"
    overrides.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in run_config(job.spec).items()))
    env = {**env, "FLWR_HOME": str(home)}
    started = time.monotonic()
    started_processes = [processes.start(
        [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(superlink_port),
         "--disable-runtime-dependency-installation"], env, work / "superlink.log")]
    for partition in range(replicas):
        started_processes.append(processes.start(
            [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{superlink_port}",
             "--port", str(supernode_ports[partition]),
             "--node-config", f"partition-id={partition} num-partitions={replicas}"],
            {**env, "FLWR_HOME": str(work / f"node-{partition}")}, work / f"supernode-{partition}.log"))
    try:
        _wait_for_superlink(started_processes[0], superlink_port, work / "superlink.log")
        submitted = subprocess.run(
            [str(BIN / "flwr"), "run", str(BUILTIN_APP), "bench", "--run-config", str(overrides), "--format", "json"],
            env=env, capture_output=True, text=True, check=True,
        )
        run_id = json.loads(submitted.stdout)["run-id"]
        parser = progress.LogProgress()
        stream = subprocess.Popen([str(BIN / "flwr"), "log", run_id, "bench", "--stream"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert stream.stdout is not None
        for line in stream.stdout:
            for record in parser.feed(line, time.monotonic()):
                _reached(result, record, started)
        stream.wait()
        result.total_seconds = time.monotonic() - started
    finally:
        for process in started_processes:
            processes.stop(process, grace=10)
        processes.kill_descendants()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=Path, default=ROOT / "examples" / "digits-fedavg.yaml")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs, alternated; medians are compared")
    args = parser.parse_args()
    job = load_job(args.job)
    processes.become_subreaper()
    print(f"job {args.job}: {job.spec.rounds} rounds, {job.spec.clients.replicas} clients, {args.repeat} pair(s) of runs")
    ours: list[Result] = []
    hand: list[Result] = []
    memory: list[MemoryWatch] = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="kubeflower-bench-") as tmp:
            work = Path(tmp)
            # As a user with the virtual environment activated (its scripts first on PATH), and
            # Flower's settings of the pods (telemetry off, the SuperExec task poll).
            env = processes.child_env({"KUBEFLOWER_DATA_DIR": str(work / "data")})
            result, watch = with_kubeflower(args.job, work, env)
            ours.append(result)
            memory.append(watch)
            print(result.line(), flush=True)
            hand.append(by_hand(args.job, work, env))
            print(hand[-1].line(), flush=True)
    ratio = median(r.seconds_per_round for r in ours) / median(r.seconds_per_round for r in hand)
    print(f"seconds per round (medians), kubeflower run / by hand: {ratio:.3f} (target <= 1.05)")
    reached = [r.seconds_to_target for r in ours if r.seconds_to_target is not None]
    print(f"{TARGET_ACCURACY:.2f} accuracy within {job.spec.rounds} rounds: {len(reached)}/{len(ours)} runs"
          + (f", after {median(reached):.1f} s (median)" if reached else ""))
    server, superlink = "kubeflower-server", "flower-superlink"
    print(
        f"memory, peak RSS / peak PSS: server entry point {max(m.peak_rss.get(server, 0) for m in memory):.0f} / "
        f"{max(m.peak_pss.get(server, 0) for m in memory):.0f} MB, SuperLink "
        f"{max(m.peak_rss.get(superlink, 0) for m in memory):.0f} / {max(m.peak_pss.get(superlink, 0) for m in memory):.0f} MB"
        " (target: the entry point within 50 MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
