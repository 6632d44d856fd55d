"""What a client round costs: stock ClientApp processes against warm (forked) ones, side by side.

    .venv/bin/python -m bench.client_cost [--clients 10] [--rounds 3 6] [--small 2] [--repeat 1]

`kubeflower run` of the digits job (examples/digits-fedavg.yaml) with `--clients` clients, once per
number of rounds in `--rounds`, and once with `--small` clients for the round-time comparison; each
with `spec.clients.warmClientApps` false (stock: a new `flwr-clientapp` process per message) and
true (warm: forked from a fork server), the two alternating run by run so that a busy neighbour on a
shared machine weighs on both. Measured for each run:
- CPU-seconds of the whole process tree (user + system of `kubeflower run` and every descendant,
  as `/usr/bin/time` counts them: rusage of reaped children);
- seconds per round (the status document's per-round seconds; median over the rounds);
- per client pod (a client entry point and everything below it: SuperNode, SuperExec, fork server,
  the message processes), sampled every 0.5 s: peak and steady (median over the run's second half)
  RSS and PSS, averaged over the clients.
Derived: the marginal CPU-seconds per client per round, from the two round counts
(cpu(R) = fixed + R x clients x marginal), and the fixed CPU-seconds per client (server included,
shared out). Targets (issue 15): marginal <= 0.5 CPU-s per client-round; a round with `--clients`
clients at most 2x the round with `--small` clients.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median

import yaml

from kubeflower.core import contract
from kubeflower.core.server_status import Phase, ServerStatus
from kubeflower_workload import processes

ROOT = Path(__file__).resolve().parents[1]

JOB = ROOT / "examples" / "digits-fedavg.yaml"
KUBEFLOWER = str(Path(sys.executable).parent / "kubeflower")
MODES: dict[str, tuple[bool, dict[str, str]]] = {
    "stock": (False, {}),
    "warm-shim": (True, {contract.ENV_WARM_SUPEREXEC: "false"}),
    "warm": (True, {}),
}
"""Per mode: spec.clients.warmClientApps, and variables of `kubeflower run`'s environment (which its
processes inherit; a job's own `spec.clients.env` may not set KUBEFLOWER_* variables).
- stock: Flower's SuperExec starts a new `flwr-clientapp` per message;
- warm-shim: Flower's SuperExec starts the shim, which hands the message to the fork server;
- warm (the default): the fork server is the SuperExec (the SuperNode's `--isolation process`)."""
ROUND_LINE = re.compile(rb": round (\d+)/(\d+)")


@dataclass
class Run:
    mode: str
    clients: int
    rounds: int
    cpu: float = 0.0
    seconds_per_round: float = 0.0
    accuracy: float = 0.0
    by_kind: dict[str, float] = field(default_factory=dict)
    """CPU-seconds by kind of process (its own, plus its reaped children's for `clientapps`)."""
    steady: dict[str, float] = field(default_factory=dict)
    """CPU-seconds by kind per client-round within this run, from the end of round 1 to the end of the
    last round: no start-up or imports, so a busy neighbour's effect on import time does not leak in."""
    rss: list[tuple[float, float]] = field(default_factory=list)
    pss: list[tuple[float, float]] = field(default_factory=list)
    """Per sample: (seconds since start, mean over clients of the client tree's MiB)."""

    def peak(self, samples: list[tuple[float, float]]) -> float:
        return max((v for _, v in samples), default=0.0)

    def steady_value(self, samples: list[tuple[float, float]]) -> float:
        if not samples:
            return 0.0
        half = samples[-1][0] / 2
        return median(v for t, v in samples if t >= half)


def _memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MiB, from smaps_rollup; zeros when it is gone."""
    values = {"Rss:": 0.0, "Pss:": 0.0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(" ")
            if key in values:
                values[key] = float(rest.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return values["Rss:"], values["Pss:"]


def _client_roots(root: int) -> list[int]:
    roots = []
    for pid in processes.descendants(root):
        try:
            if b"kubeflower-client" in Path(f"/proc/{pid}/cmdline").read_bytes():
                roots.append(pid)
        except OSError:
            continue
    return roots


KINDS = (
    ("flwr-clientapp", None),  # short-lived: counted when reaped, in its parent's children's time
    ("kubeflower_workload.forkserver", "fork servers"),
    ("kubeflower_workload.supernode", "supernodes"),  # flower-supernode, as the client entry point runs it
    ("flower-superexec", "superexecs"),
    ("flower-superlink", "superlink"),
    ("flwr-serverapp", "serverapp"),
    ("nginx", "nginx (front proxy)"),
    ("kubeflower-client", "client entry points"),
    ("kubeflower-server", "server entry point"),
)
REAPED = {"superexecs": "clientapps (stock) or shims (warm)", "fork servers": "clientapps (forked)"}
"""Kinds whose reaped children are short-lived message processes, counted under these names: a
client's SuperExec reaps the stock `flwr-clientapp` processes (or, warm, the shims), a fork server
its forked ClientApps."""
TICKS = os.sysconf("SC_CLK_TCK")


def _kind(pid: int) -> str | None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return next((kind for needle, kind in KINDS if needle in command), None)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _cpu(pid: int) -> tuple[float, float]:
    """(own CPU-seconds, reaped children's CPU-seconds) of a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS, (int(fields[13]) + int(fields[14])) / TICKS


class Sampler(threading.Thread):
    """Memory of each client pod's process tree, every 0.5 s."""

    def __init__(self, root: int, run: Run, log: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.run_, self.log, self.stop = root, run, log, threading.Event()
        self.started = time.monotonic()
        self.seen: dict[int, tuple[str, float, float]] = {}
        self.first: dict[str, float] | None = None
        """CPU by kind when round 1 had ended."""

    def run(self) -> None:
        while not self.stop.wait(0.5):
            clients = _client_roots(self.root)
            if not clients:
                continue
            self._cpu_by_process()
            self._steady()
            trees = [[c, *processes.descendants(c)] for c in clients]
            usage = [[_memory_mib(p) for p in tree] for tree in trees]
            now = time.monotonic() - self.started
            self.run_.rss.append((now, mean(sum(r for r, _ in tree) for tree in usage)))
            self.run_.pss.append((now, mean(sum(p for _, p in tree) for tree in usage)))

    def _steady(self) -> None:
        """CPU by kind per client-round between the ends of round 1 and of the last round
        (`kubeflower run` prints `NAME: round N/TOTAL` as rounds end)."""
        rounds = [(int(a), int(b)) for a, b in ROUND_LINE.findall(self.log.read_bytes())]
        done, total = max(rounds, default=(0, 0))
        if done >= 1 and self.first is None:
            self.first = dict(self.run_.by_kind)
        if done == total > 1 and self.first is not None and not self.run_.steady:
            count = (total - 1) * self.run_.clients
            self.run_.steady = {k: (v - self.first.get(k, 0.0)) / count for k, v in self.run_.by_kind.items()}

    def _cpu_by_process(self) -> None:
        """The latest CPU of each long-lived process by kind; a fork server's children count
        (reaped, in its children's time) as ClientApps."""
        for pid in processes.descendants(self.root):
            kind = _kind(pid)
            if kind is None:
                continue
            own, children = _cpu(pid)
            # ClientApp processes: reaped by a client's SuperExec (stock, and the shims) or by the fork server
            if kind == "superexecs" and _kind(_parent(pid)) != "supernodes":
                kind, children = (
                    "server superexec",
                    0.0,
                )  # the server's SuperExec; its child is the ServerApp, sampled itself
            self.seen[pid] = (kind, own, children if kind in REAPED else 0.0)
        totals: dict[str, float] = {}
        for kind, own, children in self.seen.values():
            totals[kind] = totals.get(kind, 0.0) + own
            if kind in REAPED:
                totals[REAPED[kind]] = totals.get(REAPED[kind], 0.0) + children
        self.run_.by_kind = totals


def run_once(mode: str, clients: int, rounds: int, work: Path) -> Run:
    """`kubeflower run` of the digits job; CPU-seconds of its whole tree from wait4."""
    spec = yaml.safe_load(JOB.read_text())
    name = f"cost-{mode}-{clients}c-{rounds}r"
    spec["metadata"]["name"] = name
    spec["spec"]["rounds"] = rounds
    spec["spec"]["clients"]["replicas"] = clients
    warm, env = MODES[mode]
    spec["spec"]["clients"]["warmClientApps"] = warm
    job_file = work / f"{name}.yaml"
    job_file.write_text(yaml.safe_dump(spec))
    output = work / name
    run = Run(mode, clients, rounds)
    log_path = work / f"{name}.out"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [KUBEFLOWER, "run", str(job_file), "--output", str(output)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        sampler = Sampler(process.pid, run, log_path)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        sampler.stop.set()
        sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        kept = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        shutil.copytree(work, kept, dirs_exist_ok=True)
        raise SystemExit(f"{name} failed; see {kept / f'{name}.out'} and its logs beside it")
    run.cpu = usage.ru_utime + usage.ru_stime
    result = ServerStatus.model_validate_json(contract.OutputFolder(output).metrics.read_text())
    assert result.phase == Phase.SUCCEEDED
    run.seconds_per_round = median(r.seconds for r in result.history)
    run.accuracy = float(result.metrics.get("accuracy", 0.0))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, nargs=2, default=[3, 6])
    parser.add_argument("--small", type=int, default=2, help="clients of the round-time reference run (0: none)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=list(MODES), help="stock, warm, or both (alternating)"
    )
    args = parser.parse_args()
    modes = list(args.modes)
    few, many = args.rounds
    plan = [(args.clients, few), (args.clients, many)] + ([(args.small, few)] if args.small else [])
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="kubeflower-cost-") as folder:
        for repeat in range(args.repeat):
            for clients, rounds in plan:
                order = modes if repeat % 2 == 0 else modes[::-1]
                for mode in order:  # alternating: stock, warm, then warm, stock on the next repeat
                    started = time.monotonic()
                    run = run_once(mode, clients, rounds, Path(folder))
                    runs.append(run)
                    print(
                        f"  {mode:9} {clients:2} clients {rounds} rounds: {run.cpu:7.1f} CPU-s, "
                        f"{run.seconds_per_round:5.1f} s/round, accuracy {run.accuracy:.4f} "
                        f"({time.monotonic() - started:.0f} s)",
                        flush=True,
                    )
    print(
        f"\n{os.cpu_count()} CPUs; medians over {args.repeat} repeat(s); "
        f"digits, {args.clients} clients, {few} and {many} rounds"
    )
    header = f"{'':34}" + "".join(f"{mode:>11} " for mode in modes)
    print(header)

    def cell(mode: str, clients: int, rounds: int, value: str) -> float:
        return median(getattr(r, value) for r in runs if (r.mode, r.clients, r.rounds) == (mode, clients, rounds))

    def row(label: str, values: dict[str, float], unit: str = "", digits: int = 2) -> None:
        print(f"{label:34}" + "".join(f"{values[m]:>11.{digits}f}{unit}" for m in modes))

    marginal = {
        m: (cell(m, args.clients, many, "cpu") - cell(m, args.clients, few, "cpu")) / ((many - few) * args.clients)
        for m in modes
    }
    fixed = {m: (cell(m, args.clients, few, "cpu") - few * args.clients * marginal[m]) / args.clients for m in modes}
    row(f"CPU-s, {few} rounds (whole tree)", {m: cell(m, args.clients, few, "cpu") for m in modes})
    row(f"CPU-s, {many} rounds (whole tree)", {m: cell(m, args.clients, many, "cpu") for m in modes})
    row("marginal CPU-s per client-round", marginal)
    row("fixed CPU-s per client", fixed)
    many_runs = {m: [r for r in runs if (r.mode, r.clients, r.rounds) == (m, args.clients, many)] for m in modes}
    kinds = sorted({k for r in runs for k in r.steady})
    print(f"CPU-s per client-round by process kind, rounds 2-{many} of the {many}-round runs (sampled every 0.5 s):")
    for kind in kinds:
        row(f"  {kind}", {m: median(r.steady.get(kind, 0.0) for r in many_runs[m]) for m in modes})
    row("  all kinds", {m: median(sum(r.steady.values()) for r in many_runs[m]) for m in modes})
    row(
        f"s per round, {args.clients} clients",
        {m: median(r.seconds_per_round for r in runs if (r.mode, r.clients) == (m, args.clients)) for m in modes},
    )
    if args.small:
        small = {m: cell(m, args.small, few, "seconds_per_round") for m in modes}
        row(f"s per round, {args.small} clients", small)
        big = {m: median(r.seconds_per_round for r in runs if (r.mode, r.clients) == (m, args.clients)) for m in modes}
        row(f"round time {args.clients} / {args.small} clients", {m: big[m] / small[m] for m in modes}, "x")
    tenants = [r for r in runs if r.clients == args.clients]
    for label, pick in (
        ("peak RSS", lambda r: r.peak(r.rss)),
        ("steady RSS", lambda r: r.steady_value(r.rss)),
        ("peak PSS", lambda r: r.peak(r.pss)),
        ("steady PSS", lambda r: r.steady_value(r.pss)),
    ):
        row(f"{label} per client, MiB", {m: median(pick(r) for r in tenants if r.mode == m) for m in modes})
    row(
        f"final accuracy, {args.clients} clients {few} rounds",
        {m: cell(m, args.clients, few, "accuracy") for m in modes},
        digits=4,
    )
    print(
        f"\ntargets: warm marginal <= 0.5 CPU-s per client-round (got {marginal.get('warm', float('nan')):.2f}); "
        + (f"{args.clients}-client round <= 2x the {args.small}-client round" if args.small else "")
    )


if __name__ == "__main__":
    main()
