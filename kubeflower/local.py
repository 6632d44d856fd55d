"""`kubeflower run`: a job as local processes, with live progress and a results folder.

The processes are the pods' own: the server entry point and one client entry point per replica,
with the commands and environment values of the contract (`kubeflower.core.contract` and
`kubeflower.core.environment`, which the operator's builders put into the pod specs too). Only
what must differ on one host is overridden: loopback addresses and free ports, and the output,
data and FLWR_HOME folders. Progress is read from the server's own GET /status, as the operator reads it.

Every process started here, and everything they start, is stopped when the job ends, on Ctrl-C,
and on errors: this process becomes a child subreaper, so even orphans stay in its tree.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kubeflower.core import contract, environment
from kubeflower.core.api import FederatedTrainingJob
from kubeflower.core.server_status import Phase, ServerStatus, fetch
from kubeflower.core.validation import load_job
from kubeflower_workload import datasets, processes

STATUS_POLL = 0.5
STOP_GRACE = 10.0
SERVER_START_TIMEOUT = 60.0


class LocalRunError(Exception):
    """The job could not run to its end locally; the message says why and where to look."""


@dataclass
class Member:
    """One local stand-in for a pod."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path


def run_job(path: Path, output: Path | None, resume: bool = False) -> int:
    """Run the job in `path` to its end; 0 when it succeeded. Ctrl-C stops it (exit 130).

    `resume`: continue the run of the output folder after its last checkpoint (its job UID read
    back from the folder); else start over: a fresh UID, the previous results and checkpoints gone.
    """
    job = load_job(path)
    output = (output or Path("runs") / job.metadata.name).resolve()
    try:
        job.metadata.uid = prepare_output(contract.OutputFolder(output), resume)
    except LocalRunError as exc:
        Console(soft_wrap=True).print(f"[red]job {job.metadata.name} cannot resume:[/red] {exc}")
        return 1
    console = Console(soft_wrap=True)  # messages and paths whole, in a terminal and in a log file
    processes.become_subreaper()
    # SIGINT too: a process started in the background by a script inherits SIGINT ignored, and
    # Python then never raises KeyboardInterrupt; Ctrl-C and SIGTERM must always stop the job.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _federation(job, path.resolve().parent, output, keep_logs=resume) as (members, status_url):
            status = _follow(job, members, status_url, console)
    except KeyboardInterrupt:
        console.print("[yellow]stopped: every process of the job has been ended[/yellow]")
        return 130
    except LocalRunError as exc:
        console.print(f"[red]job {job.metadata.name} failed:[/red] {exc}")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _report(status, output, console)
    return 0 if status.phase == Phase.SUCCEEDED else 1


def prepare_output(folder: contract.OutputFolder, resume: bool) -> str:
    """The output folder made ready for a run; returns the job UID the run carries."""
    folder.root.mkdir(parents=True, exist_ok=True)
    if resume:
        try:
            return folder.job_uid.read_text().strip()
        except OSError:
            raise LocalRunError(
                f"{folder.job_uid} cannot be read: {folder.root} holds no run of `kubeflower run` to resume; "
                "run without --resume to start one"
            ) from None
    for stale in folder.results():  # a previous run's results
        stale.unlink(missing_ok=True)
    shutil.rmtree(folder.checkpoints, ignore_errors=True)
    uid = str(uuid.uuid4())
    folder.job_uid.write_text(uid + "\n")
    return uid


def host_cpu_share(sharers: int) -> int:
    """One of `sharers` processes' whole share of this host's CPUs: the clients train at once,
    like torchrun's workers (which get one thread each when several share a machine)."""
    return max(1, (os.cpu_count() or 1) // sharers)


def local_commands(
    job: FederatedTrainingJob, job_dir: Path, output: Path, home: Path
) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, command, environment) of the server and of each client, as they run on this host.

    The pods' own commands and contract values (`kubeflower.core.contract`, `environment`), with
    what the kubelet would fill in (a client's pod name and CPUs) and what must differ on one host:
    loopback addresses and free ports, and the output, data and FLWR_HOME folders.
    """
    superlink_port, status_port, *supernode_ports = processes.free_ports(2 + job.spec.clients.replicas)
    data_dir = str(datasets.data_dir())
    # The app's path is a path in the image; locally, relative paths start at the job file.
    app_path = {} if job.spec.app is None else {contract.ENV_APP_PATH: str((job_dir / job.spec.app.path).resolve())}
    server_env = (
        environment.user_values(job.spec.server)
        | environment.server_environment(job)
        | {
            contract.ENV_SUPERLINK_PORT: str(superlink_port),
            contract.ENV_STATUS_PORT: str(status_port),
            contract.ENV_BIND_HOST: "127.0.0.1",
            contract.ENV_OUTPUT_DIR: str(output),
            contract.ENV_DATA_DIR: data_dir,
            contract.ENV_FINAL_STATUS: "",  # no operator here: the output folder says if the run finished
            "FLWR_HOME": str(home / "server"),
        }
        | app_path
    )
    members = [("server", list(contract.SERVER_COMMAND), server_env)]
    clients = environment.clients_name(job.metadata.name)
    threads = {contract.ENV_THREADS: str(host_cpu_share(job.spec.clients.replicas))}
    for ordinal in range(job.spec.clients.replicas):
        client_env = (
            threads  # the user's own value wins, as in the pod
            | environment.user_values(job.spec.clients)
            | environment.client_environment(job)
            | {
                contract.ENV_POD_NAME: f"{clients}-{ordinal}",
                contract.ENV_SUPERLINK: f"127.0.0.1:{superlink_port}",
                contract.ENV_SUPERNODE_PORT: str(supernode_ports[ordinal]),
                contract.ENV_HEALTH_ADDRESS: "",  # no kubelet here: no health server, no port
                contract.ENV_CACHE_DIR: "",  # the data folder here is the user's own, writable
                contract.ENV_DATA_DIR: data_dir,
                "FLWR_HOME": str(home / f"client-{ordinal}"),
            }
            | app_path
        )
        members.append((f"client-{ordinal}", list(contract.CLIENT_COMMAND), client_env))
    return members


@contextlib.contextmanager
def _federation(
    job: FederatedTrainingJob, job_dir: Path, output: Path, keep_logs: bool
) -> Iterator[tuple[list[Member], str]]:
    """The server and the clients, running; all stopped (and their trees killed) on the way out.
    `keep_logs`: a resumed run's processes append to the logs of the run they continue."""
    home = Path(tempfile.mkdtemp(prefix=f"kubeflower-{job.metadata.name}-"))
    members: list[Member] = []
    try:
        commands = local_commands(job, job_dir, output, home)
        for name, command, env in commands:
            log = contract.OutputFolder(output).logs / f"{name}.log"
            if not keep_logs:
                log.unlink(missing_ok=True)
            members.append(Member(name, processes.start(command, processes.child_env(env), log), log))
        status_port = commands[0][2][contract.ENV_STATUS_PORT]
        yield members, f"http://127.0.0.1:{status_port}/status"
    finally:
        for member in members:
            with contextlib.suppress(ProcessLookupError):
                member.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for member in members:
            with contextlib.suppress(subprocess.TimeoutExpired):
                member.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        processes.kill_descendants()
        shutil.rmtree(home, ignore_errors=True)


def _follow(job: FederatedTrainingJob, members: list[Member], status_url: str, console: Console) -> ServerStatus:
    """Show progress until the run is finished; LocalRunError when a process dies or time runs out.

    On a terminal, a live bar; otherwise (a log file, CI) one line per change.
    """
    started = time.monotonic()
    deadline = job.spec.run_policy.active_deadline_seconds
    status = ServerStatus(total_rounds=job.spec.rounds)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds  {task.fields[metrics]}  [dim]{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    shown = ""
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task(job.metadata.name, total=job.spec.rounds, metrics="", note="starting")
        while not status.phase.finished:
            for member in members:
                if member.process.poll() is not None:
                    raise LocalRunError(
                        f"the {member.name} process exited with code {member.process.returncode}; "
                        f"its log: {member.log}\n{_tail(member.log)}"
                    )
            if deadline is not None and time.monotonic() - started > deadline:
                raise LocalRunError(f"the job ran longer than runPolicy.activeDeadlineSeconds ({deadline} s)")
            fetched = _fetch(status_url)
            if fetched is None and status.run_id is None and time.monotonic() - started > SERVER_START_TIMEOUT:
                raise LocalRunError(f"the server did not answer {status_url}; its log: {members[0].log}")
            status = fetched or status
            metrics, note = _metrics_text(status.metrics), status.message or status.phase.value
            bar.update(task, completed=status.current_round, total=status.total_rounds, metrics=metrics, note=note)
            line = f"{job.metadata.name}: round {status.current_round}/{status.total_rounds}  {metrics}  {note}"
            if not console.is_terminal and line != shown:
                console.print(line, highlight=False)
                shown = line
            time.sleep(STATUS_POLL)
    return status


def _report(status: ServerStatus, output: Path, console: Console) -> None:
    """Summary table, and the plot of the curves next to metrics.json and the model."""
    table = Table(title=f"{status.phase.value}: {status.current_round}/{status.total_rounds} rounds")
    for column in ("round", "train loss", "loss", "accuracy", "replies", "failures", "seconds"):
        table.add_column(column, justify="right")
    for record in status.history:
        table.add_row(
            str(record.round),
            _number(record.train_metrics.get("loss")),
            _number(record.metrics.get("loss")),
            _number(record.metrics.get("accuracy")),
            str(record.replies),
            str(record.failures),
            f"{record.seconds:.1f}",
        )
    console.print(table)
    if status.history:
        _plot(status, contract.OutputFolder(output).plot)
    if status.phase != Phase.SUCCEEDED:
        console.print(f"[red]job failed:[/red] {status.message}")
    folder = contract.OutputFolder(output)
    produced = [path.name for path in folder.results() if path.exists()]
    console.print(f"results in {output}: {', '.join(produced) or 'nothing'}; logs in {folder.logs}")


def _plot(status: ServerStatus, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = [r.round for r in status.history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for axes, key in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.plot(rounds, [r.metrics.get(key, float("nan")) for r in status.history], marker="o", label="evaluate")
        if key == "loss":
            axes.plot(
                rounds, [r.train_metrics.get(key, float("nan")) for r in status.history], marker="o", label="train"
            )
            axes.legend()
        axes.set_xlabel("round")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(key)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _fetch(url: str) -> ServerStatus | None:
    try:
        return fetch(url, timeout=2)
    except (OSError, ValueError):
        return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _metrics_text(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in ("loss", "accuracy") if k in metrics)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
