"""`kubeflower run`: a job as local processes, with live progress and a results folder.

The processes are the pods' own: the server entry point and one client entry point per replica,
with the commands and environment values of the contract (`kubeflower.core.contract` and
`kubeflower.core.environment`, which the operator's builders put into the pod specs too). Only
what must differ on one host is overridden: loopback addresses and free ports, the output, data
and FLWR_HOME folders, and the job's keys: made afresh for each run (`kubeflower.core.keys`, as the
operator makes them) in a private temporary folder that goes with the run, never in the output
folder. The server runs behind the same front proxy, with the same TLS and SuperNode
authentication, so a run on a laptop proves the cluster's wiring. Progress is read from the
server's own GET /status, as the operator reads it.

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
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kubeflower.core import contract, environment, keys
from kubeflower.core.api import FederatedTrainingJob, MetricKind, MetricNames
from kubeflower.core.server_status import Phase, RoundRecord, ServerStatus, fetch
from kubeflower.core.validation import load_job
from kubeflower_workload import datasets, processes

STATUS_POLL = 0.5
STOP_GRACE = 10.0
SERVER_START_TIMEOUT = 60.0
TABLE_METRICS = 12
"""Metric columns of the summary table at most (metrics.json has them all)."""
LOG_WIDTH = 400
PLOT_OTHER_LINES = 12
"""Curves of metrics other than the loss and accuracy in the plot at most."""
GROUPS = ("train", "evaluate", "server")
"""A round's metrics: the clients' training, the clients' evaluation, the ServerApp's (centralized)."""


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
    ref = job.spec.security.issuer_ref
    if ref is not None:
        console.print(
            escape(
                f"spec.security.issuerRef ({ref.kind} {ref.name}) is for a cluster with cert-manager: "
                "this local run uses throwaway keys of its own instead"
            ),
            highlight=False,
        )
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
        console.print(f"[red]job {job.metadata.name} failed:[/red] {escape(str(exc))}")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _report(status, output, console, job.spec.metric_names)
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
    loopback addresses and free ports, the output, data and FLWR_HOME folders, and the keys
    (`write_keys`, in `home`).
    """
    superlink_port, loopback_port, status_port, *supernode_ports = processes.free_ports(3 + job.spec.clients.replicas)
    key_dirs = write_keys(job, home / "keys") if job.spec.security.enabled else {}
    data_dir = str(datasets.data_dir())
    # The app's path is a path in the image; locally, relative paths start at the job file.
    app_path = {} if job.spec.app is None else {contract.ENV_APP_PATH: str((job_dir / job.spec.app.path).resolve())}
    server_env = (
        environment.user_values(job.spec.server)
        | environment.server_environment(job)
        | {
            contract.ENV_SUPERLINK_PORT: str(superlink_port),
            contract.ENV_SUPERLINK_LOOPBACK_PORT: str(loopback_port),
            contract.ENV_STATUS_PORT: str(status_port),
            contract.ENV_BIND_HOST: "127.0.0.1",
            contract.ENV_OUTPUT_DIR: str(output),
            contract.ENV_DATA_DIR: data_dir,
            contract.ENV_FINAL_STATUS: "",  # no operator here: the output folder says if the run finished
            contract.ENV_STOP_TOKEN: "",  # nor anyone to stop the run through the status port (Ctrl-C does)
            contract.ENV_WORK_DIR: str(contract.OutputFolder(output).app),
            "FLWR_HOME": str(home / "server"),
            **({contract.ENV_TLS_DIR: str(key_dirs["server"])} if key_dirs else {}),
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
                contract.ENV_WORK_DIR: str(home / f"client-{ordinal}" / "app"),  # as a pod's own emptyDir
                "FLWR_HOME": str(home / f"client-{ordinal}"),
                **({contract.ENV_CLIENT_KEYS_DIR: str(key_dirs["clients"])} if key_dirs else {}),
            }
            | app_path
        )
        members.append((f"client-{ordinal}", list(contract.CLIENT_COMMAND), client_env))
    return members


def write_keys(job: FederatedTrainingJob, folder: Path) -> dict[str, Path]:
    """Throwaway keys for one local run, laid out as the job's two Secrets are mounted in its pods:
    {"server": the server's folder, "clients": the clients' folder}, private to this user."""
    server, clients = folder / "server", folder / "clients"
    for path in (folder, server, clients):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    tls = keys.server_tls(environment.server_names(job))
    files = {server: tls.files(), clients: {keys.CA_CERT: tls.ca_cert}}
    for ordinal in range(job.spec.clients.replicas):
        pair = keys.client_key()
        files[server][keys.client_public_key_file(ordinal)] = pair.public_pem
        files[clients][keys.client_private_key_file(ordinal)] = pair.private_openssh
    for where, contents in files.items():
        for name, data in contents.items():
            descriptor = os.open(where / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as out:
                out.write(data)
    return {"server": server, "clients": clients}


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
            metrics = escape(_metrics_text(status, job.spec.metric_names))
            note = escape(status.message or status.phase.value)
            bar.update(task, completed=status.current_round, total=status.total_rounds, metrics=metrics, note=note)
            line = f"{job.metadata.name}: round {status.current_round}/{status.total_rounds}  {metrics}  {note}"
            if not console.is_terminal and line != shown:
                console.print(line, highlight=False)  # escaped: the message may hold [brackets]
                shown = line
            time.sleep(STATUS_POLL)
    return status


def _report(status: ServerStatus, output: Path, console: Console, names: MetricNames) -> None:
    """Summary table (every metric under its name), and the plot of the curves next to metrics.json."""
    table = Table(title=f"{status.phase.value}: {status.current_round}/{status.total_rounds} rounds")
    columns = _metric_columns(status.history)
    picked = [curve for _, curves in _loss_and_accuracy(status.history, names) for curve in curves]
    others = [column for column in columns if column not in picked][: max(0, TABLE_METRICS - len(picked))]
    shown = [column for column in columns if column in picked or column in others]
    table.add_column("round", justify="right")
    for group, name in shown:
        table.add_column(escape(_heading(group, name)), justify="right")
    for column in ("replies", "failures", "seconds"):
        table.add_column(column, justify="right")
    for record in status.history:
        values = [_number(_group(record, group).get(name)) for group, name in shown]
        table.add_row(str(record.round), *values, str(record.replies), str(record.failures), f"{record.seconds:.1f}")
    # A log file is not a terminal: its lines may be as long as the table, whose headings are names.
    (console if console.is_terminal else Console(file=console.file, width=LOG_WIDTH)).print(table)
    if len(columns) > len(shown):
        console.print(f"{len(columns) - len(shown)} more metrics in metrics.json")
    if status.history:
        _plot(status, contract.OutputFolder(output).plot, names)
    if status.phase != Phase.SUCCEEDED:
        console.print(f"[red]job failed:[/red] {escape(status.message)}")
    folder = contract.OutputFolder(output)
    produced = [path.name for path in folder.results() if path.exists()]
    if folder.app.is_dir():  # what the app saved in its working directory
        produced += [f"{folder.app.name}/{path.name}" for path in sorted(folder.app.iterdir())]
    console.print(escape(f"results in {output}: {', '.join(produced) or 'nothing'}; logs in {folder.logs}"))


def _group(record: RoundRecord, group: str) -> dict[str, float]:
    return {"train": record.train_metrics, "evaluate": record.metrics, "server": record.server_metrics}[group]


def _metric_columns(history: list[RoundRecord]) -> list[tuple[str, str]]:
    """(group, name) of every metric in the history, by group, in order of first appearance."""
    seen: dict[tuple[str, str], None] = {}
    for group in GROUPS:
        for record in history:
            seen.update(dict.fromkeys((group, name) for name in _group(record, group)))
    return list(seen)


def _heading(group: str, name: str) -> str:
    """A metric's column: its name, after `train` or `server` unless it says so itself."""
    if group == "evaluate" or name.startswith(group):
        return name
    return f"{group} {name}"


DEFAULT_NAMES = MetricNames()


def _loss_and_accuracy(history: list[RoundRecord], names: MetricNames) -> list[tuple[str, list[tuple[str, str]]]]:
    """The loss and the accuracy curves, (group, name) each, as `names` (else the defaults) pick them in each group."""
    wanted: tuple[tuple[str, tuple[tuple[str, MetricKind], ...]], ...] = (
        ("loss", (("train", "train_loss"), ("evaluate", "loss"), ("server", "loss"))),
        ("accuracy", (("evaluate", "accuracy"), ("server", "accuracy"))),
    )
    panels = []
    for title, kinds in wanted:
        curves = []
        for group, kind in kinds:
            metrics = [_group(r, group) for r in history]
            # The job's names, else (the centralized evaluation often names its own) the defaults.
            name = next((n for m in metrics if (n := names.pick(kind, m) or DEFAULT_NAMES.pick(kind, m))), None)
            if name is not None:
                curves.append((group, name))
        panels.append((title, curves))
    return panels


def _plot(status: ServerStatus, path: Path, names: MetricNames) -> None:
    """Loss and accuracy (as `names` picks them) of each group per round, and every other metric."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    history = status.history
    rounds = [r.round for r in history]
    panels = _loss_and_accuracy(history, names)
    shown = {curve for _, curves in panels for curve in curves}
    others = [column for column in _metric_columns(history) if column not in shown][:PLOT_OTHER_LINES]
    if others:
        panels.append(("other metrics", others))
    figure, axes_list = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for axes, (title, curves) in zip(axes_list, panels, strict=True):
        for group, name in curves:
            values = [_group(r, group).get(name, float("nan")) for r in history]
            axes.plot(rounds, values, marker="o", label=_heading(group, name))
        if curves:
            axes.legend(fontsize="small")
        axes.set_xlabel("round")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(title)
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


def _metrics_text(status: ServerStatus, names: MetricNames) -> str:
    """The last round's loss and accuracy, the clients' evaluation's first, else the ServerApp's."""
    shown = []
    for kind in ("loss", "accuracy"):
        for metrics in (status.metrics, status.server_metrics):
            if (name := names.pick(kind, metrics)) is not None:
                shown.append(f"{name} {metrics[name]:.4f}")
                break
    return "  ".join(shown)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
