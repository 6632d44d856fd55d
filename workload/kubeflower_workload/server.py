"""`kubeflower-server`: the server pod's entry point.

Runs `flower-superlink` on loopback behind the front proxy (`frontproxy`: only the Fleet API
reaches it from the network), registers the clients' public keys (SuperNode authentication),
submits the job's run (the built-in Flower App, or the user's app from
the image) with the job's run config through the Control API, follows it to its end, and serves
the status document (`kubeflower.core.server_status`) on its own port. When the run has finished it
writes `metrics.json` (the final status document) into the output folder, stops the SuperLink and
keeps serving the final state, so a Deployment never restarts a finished job. SIGTERM stops the
run and exits 0.

The run's own log (the ServerApp's lines, its prints and its traceback) is copied to our output,
the pod's log (`logs/server.log` in `kubeflower run`). Every process of the app starts in the app's
working directory (ENV_WORK_DIR). A user's app must declare every run-config key the job sets
(`spec.rounds` under `spec.app.roundsKey`), checked before the run is submitted; a round in which
every client's training failed stops its run as Failed, as the built-in app does.

Exit codes: 0 after SIGTERM; 1 when the SuperLink cannot start or dies during the run (a restart
may help); 2 for a bad environment (the operator's bug, not the user's). A run that fails, or an
app that cannot be bundled or submitted, is reported as Failed with the reason, and the process
stays up: restarting would fail the same way.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from kubeflower.core import contract, keys
from kubeflower.core.server_status import ClientCounts, Phase, RoundRecord, ServerStatus
from kubeflower_workload import BUILTIN_APP, checkpoints, frontproxy, processes, progress, status_server
from kubeflower_workload.control import Control, ControlError, RunState, app_config_keys, build_fab

LOG = logging.getLogger("kubeflower-server")
SUPERLINK_START_TIMEOUT = 60.0
POLL_INTERVAL = 5.0
"""Seconds between looks at the run's status and the connected SuperNodes (the SuperLink logs
each). The end of a run is seen at once: the log stream ends with it and wakes the supervisor."""
STOP_GRACE = 10.0
LOG_DRAIN_TIMEOUT = 30.0
"""Seconds to wait, once the run finished, for the rest of its log (its last rounds)."""
ERRORS_KEPT = 5
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
"""A metrics.json found at start is read only up to this size (its history is bounded)."""
RELAY_DELAY = 0.5
"""Seconds for the SuperLink's log lines about a refused request to reach `SuperLinkOutput`."""


class SettingsError(Exception):
    """The environment does not describe a job (a variable missing or malformed)."""


@dataclass(frozen=True)
class Settings:
    """The job, as the operator's builders (or `kubeflower run`) put it into the environment."""

    job: str
    run_config: dict[str, bool | int | float | str]
    app_dir: Path
    work_dir: Path | None
    """The app's working directory (ENV_WORK_DIR); None: where we were started."""
    rounds: int
    min_clients: int
    superlink_port: int
    """The front proxy's port (the job's Flower port)."""
    loopback_port: int
    """The SuperLink's own port, on 127.0.0.1."""
    status_port: int
    bind_host: str
    output_dir: Path
    tls_dir: Path | None
    """The job's keys (`kubeflower.core.keys` file names); None: security off (plain HTTP)."""
    job_uid: str
    final_status: Path | None
    stop_token: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def need(name: str) -> str:
            if not env.get(name):
                raise SettingsError(f"{name} is not set")
            return env[name]

        def number(name: str) -> int:
            try:
                return int(need(name))
            except ValueError:
                raise SettingsError(f"{name} must be a whole number (got {env[name]!r})") from None

        try:
            run_config = json.loads(env.get(contract.ENV_RUN_CONFIG) or "{}")
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{contract.ENV_RUN_CONFIG} is not JSON: {exc}") from None
        if not isinstance(run_config, dict):
            raise SettingsError(f"{contract.ENV_RUN_CONFIG} must be a JSON object")

        def configured(key: str) -> int:
            value = run_config.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{contract.ENV_RUN_CONFIG} must hold {key!r} as a whole number (got {value!r})")
            return value

        app_path, work_dir = env.get(contract.ENV_APP_PATH), env.get(contract.ENV_WORK_DIR)
        security = env.get(contract.ENV_SECURITY) or contract.SECURITY_ENABLED
        if security not in (contract.SECURITY_ENABLED, contract.SECURITY_DISABLED):
            raise SettingsError(
                f"{contract.ENV_SECURITY} must be {contract.SECURITY_ENABLED} or {contract.SECURITY_DISABLED}"
            )
        return cls(
            job=need(contract.ENV_JOB_NAME),
            run_config=run_config,
            app_dir=Path(app_path).absolute() if app_path else BUILTIN_APP,
            work_dir=Path(work_dir).absolute() if work_dir else None,
            # Each fact has one channel: the run config for the built-in app (its strategy reads the
            # same keys); a user's app's run config is its own, so its minimum comes alone, and its
            # rounds are under its own key (ENV_ROUNDS_KEY).
            rounds=configured(env.get(contract.ENV_ROUNDS_KEY) or contract.RUN_CONFIG_ROUNDS),
            min_clients=number(contract.ENV_MIN_CLIENTS) if app_path else configured(contract.RUN_CONFIG_MIN_CLIENTS),
            superlink_port=number(contract.ENV_SUPERLINK_PORT),
            loopback_port=number(contract.ENV_SUPERLINK_LOOPBACK_PORT),
            status_port=number(contract.ENV_STATUS_PORT),
            bind_host=env.get(contract.ENV_BIND_HOST) or "0.0.0.0",
            output_dir=Path(need(contract.ENV_OUTPUT_DIR)),
            tls_dir=Path(need(contract.ENV_TLS_DIR)) if security == contract.SECURITY_ENABLED else None,
            job_uid=env.get(contract.ENV_JOB_UID, ""),
            final_status=Path(env[contract.ENV_FINAL_STATUS]) if env.get(contract.ENV_FINAL_STATUS) else None,
            stop_token=env.get(contract.ENV_STOP_TOKEN, ""),
        )

    def tls_files(self) -> frontproxy.TLSFiles | None:
        if self.tls_dir is None:
            return None
        files = frontproxy.TLSFiles(
            self.tls_dir / keys.CA_CERT, self.tls_dir / keys.SERVER_CERT, self.tls_dir / keys.SERVER_KEY
        )
        missing = [str(p) for p in (files.ca_cert, files.cert, files.key) if not p.is_file()]
        if missing:
            raise SettingsError(f"missing key files {', '.join(missing)} ({contract.ENV_TLS_DIR})")
        return files


def superlink_command(settings: Settings, tls: frontproxy.TLSFiles | None) -> list[str]:
    """`flower-superlink` on loopback: with TLS and SuperNode authentication, or plain (security off)."""
    command = ["flower-superlink", "--host", "127.0.0.1", "--port", str(settings.loopback_port)]
    if tls is None:
        command.append("--insecure")
    else:
        command += [
            "--ssl-ca-certfile",
            str(tls.ca_cert),
            "--ssl-certfile",
            str(tls.cert),
            "--ssl-keyfile",
            str(tls.key),
            "--enable-supernode-auth",
        ]
    return [*command, "--disable-runtime-dependency-installation"]


class KeyRegistrar:
    """Registers the clients' public keys found in the keys folder with the SuperLink, each once.

    Looked at again while the run goes on: a scale-up adds keys to the job's Secret, and the
    kubelet brings them into the mounted folder.
    """

    def __init__(self, folder: Path, control: Control) -> None:
        self.folder, self.control = folder, control
        self.registered: set[bytes] = set()

    def register_new(self) -> int:
        """Register the keys not registered yet; how many. ControlError when the SuperLink refuses."""
        count = 0
        for path in sorted(self.folder.glob("client-*.pub")):
            key = path.read_bytes()
            if key not in self.registered:
                self.control.register_node(key)
                self.registered.add(key)
                count += 1
        if count:
            LOG.info("registered %d SuperNode public key(s) (%d in all)", count, len(self.registered))
        return count


class Board:
    """The status document, shared by the supervisor's threads and the HTTP server."""

    def __init__(self, status: ServerStatus) -> None:
        self._status = status
        self._lock = threading.Lock()

    def get(self) -> ServerStatus:
        with self._lock:
            return self._status

    def apply(self, change: Callable[[ServerStatus], ServerStatus]) -> ServerStatus:
        with self._lock:
            self._status = change(self._status)
            return self._status


class LogFollower(threading.Thread):
    """Reads the run's log through StreamLogs, copies it to our output and posts each finished
    round on the board; `on_end` is called when the run ended or one of its rounds failed."""

    def __init__(
        self, control: Control, run_id: int, board: Board, on_end: Callable[[], None], *, builtin: bool
    ) -> None:
        super().__init__(name="run-log", daemon=True)
        self.control, self.run_id, self.board, self.on_end = control, run_id, board, on_end
        self.parser = progress.LogProgress(builtin=builtin)
        self._mismatch_told = False

    def run(self) -> None:
        after = 0.0
        while True:
            try:
                for text, latest in self.control.stream_logs(self.run_id, after):
                    after = max(after, latest)
                    sys.stdout.write(text)
                    sys.stdout.flush()
                    self._post(self.parser.feed(text, time.time()))
                    if self.parser.failure is not None:
                        self.on_end()
                if self.control.run_state(self.run_id).finished:
                    self.on_end()
                    return
            except ControlError as exc:
                LOG.warning("reading the run's log: %s; retrying", exc)
                time.sleep(POLL_INTERVAL)

    def _with_round(self, status: ServerStatus, record: RoundRecord) -> ServerStatus:
        # The job's rounds reach a user's app through its run config; one that runs another number
        # (it ignores that key) is told in the log, and the job's total stays the one it asked for.
        total = self.parser.total_rounds
        if total is not None and total != status.total_rounds and not self._mismatch_told:
            self._mismatch_told = True
            LOG.warning(
                "the app runs %d rounds where the job says %d: does it read its rounds key?", total, status.total_rounds
            )
        return status.with_round(record)

    def close_last_round(self) -> None:
        """The run completed: a round still open in Flower's log lines is finished."""
        self._post(self.parser.finish(time.time()))

    def _post(self, records: list[RoundRecord]) -> None:
        for record in records:
            self.board.apply(functools.partial(self._with_round, record=record))
            LOG.info("round %d finished: %s", record.round, progress.summary(record))


class SuperLinkOutput(threading.Thread):
    """Relays the SuperLink's output to ours (the pod's log) and keeps its latest errors.

    Flower's API answers a refused run with a public message only ("Invalid run configuration.");
    the reason (`Key 'x' is not present in the main dictionary`) is in the SuperLink's log.
    """

    def __init__(self, stream: IO[bytes], copy: IO[bytes] | None = None) -> None:
        super().__init__(name="superlink-output", daemon=True)
        self.stream, self.copy = stream, copy
        self.errors: deque[str] = deque(maxlen=ERRORS_KEPT)

    def run(self) -> None:
        for line in self.stream:
            for out in (sys.stdout.buffer, self.copy):
                if out is not None:
                    out.write(line)
                    out.flush()
            text = progress.strip_ansi(line.decode("utf-8", "replace")).strip()
            if text.startswith("ERROR"):
                self.errors.append(text.removeprefix("ERROR").lstrip(" :"))


class Supervisor:
    """The SuperLink's keeper and the run's follower; `run()` returns the exit code."""

    def __init__(self, settings: Settings, board: Board, log_copy: IO[bytes] | None = None) -> None:
        self.settings, self.board, self.log_copy = settings, board, log_copy
        self.stop = threading.Event()
        self.abort = threading.Event()
        """The operator failed the job (`POST /stop`): end the run as Failed, stop the SuperLink."""
        self.wake = threading.Event()
        self.tls = settings.tls_files()
        self.control = Control(
            f"127.0.0.1:{settings.loopback_port}", ca_cert=None if self.tls is None else self.tls.ca_cert
        )
        self.registrar = None if settings.tls_dir is None else KeyRegistrar(settings.tls_dir, self.control)
        self.superlink: subprocess.Popen[bytes] | None = None
        self.proxy: subprocess.Popen[bytes] | None = None
        self.certificate: frontproxy.CertificateWatch | None = None
        self.superlink_output: SuperLinkOutput | None = None
        self.superlink_healthy = False

    def request_stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def request_abort(self) -> None:
        self.abort.set()
        self.wake.set()

    def healthy(self) -> bool:
        """Ready and alive: the SuperLink answers, or the run is over and its result is served."""
        return self.superlink_healthy or self.board.get().phase.finished

    def start_superlink(self) -> None:
        """Start `flower-superlink` and the front proxy (before any thread of ours: see `processes.start`)."""
        s = self.settings
        security = "TLS and SuperNode authentication" if self.tls else "security off: plain HTTP"
        LOG.info(
            "job %s: starting the SuperLink on 127.0.0.1:%d behind the front proxy on %s:%d (Fleet API only; %s)",
            s.job,
            s.loopback_port,
            s.bind_host,
            s.superlink_port,
            security,
        )
        self.superlink = processes.start(superlink_command(s, self.tls), processes.child_env(), subprocess.PIPE)
        run_dir = Path(tempfile.mkdtemp(prefix="kubeflower-proxy-"))
        self.proxy = frontproxy.start(
            frontproxy.Listen(s.bind_host, s.superlink_port, s.loopback_port, run_dir), self.tls
        )
        self.certificate = None if self.tls is None else frontproxy.CertificateWatch(self.tls)
        assert self.superlink.stdout is not None
        self.superlink_output = SuperLinkOutput(self.superlink.stdout, self.log_copy)
        self.superlink_output.start()

    def run(self) -> int:
        """Submit the run and follow it; the exit code of the entry point."""
        if self.board.get().phase.finished:
            return self._serve_final()
        if not self._wait_for_superlink():
            return 0 if self.stop.is_set() else 1
        s = self.settings
        try:
            if self.registrar is not None:
                self.registrar.register_new()
            if s.app_dir != BUILTIN_APP:
                _check_declared(s.app_dir, s.run_config)
            LOG.info("bundling the Flower App in %s", s.app_dir)
            run_id = self._submit(build_fab(s.app_dir))
        except ControlError as exc:
            LOG.error("the run could not be submitted: %s", exc)
            self._finished(RunState("finished", "failed", str(exc)), None)
            return self._serve_final()
        LOG.info("run %d submitted (%d rounds, %d clients needed)", run_id, s.rounds, s.min_clients)
        self.board.apply(lambda st: st.model_copy(update={"run_id": run_id, "message": "run submitted"}))
        return self._follow(run_id)

    def _follow(self, run_id: int) -> int:
        assert self.superlink is not None
        builtin = self.settings.app_dir == BUILTIN_APP
        follower = LogFollower(self.control, run_id, self.board, on_end=self.wake.set, builtin=builtin)
        follower.start()
        while not self.stop.is_set():
            if self.abort.is_set():
                LOG.warning("the operator failed the job: stopping run %d and the SuperLink", run_id)
                self._stop_run(run_id)
                self._finished(RunState("finished", "stopped", "stopped by the operator: the job failed"), None)
                return self._serve_final()
            if self.superlink.poll() is not None:
                LOG.error("the SuperLink exited with code %s during run %d", self.superlink.returncode, run_id)
                return 1
            if self.proxy is not None and self.proxy.poll() is not None:
                LOG.error("the front proxy (nginx) exited with code %s during run %d", self.proxy.returncode, run_id)
                return 1
            if follower.parser.failure is not None:
                return self._fail_run(run_id, follower, follower.parser.failure)
            if self.proxy is not None and self.certificate is not None and self.certificate.changed():
                LOG.info("the server certificate changed (renewed): the front proxy loads it")
                frontproxy.reload(self.proxy)
            try:
                if self.registrar is not None:
                    self.registrar.register_new()
                state, connected = self.control.run_state(run_id), self.control.online_nodes()
            except ControlError as exc:
                LOG.warning("asking the SuperLink about run %d: %s", run_id, exc)
            else:
                if state.finished:
                    follower.join(LOG_DRAIN_TIMEOUT)
                    if state.sub_status == "completed":
                        follower.close_last_round()
                    self._finished(state, connected)
                    return self._serve_final()
                previous = self.board.get().phase
                current = self.board.apply(functools.partial(_with_run, state=state, connected=connected)).phase
                if current != previous:
                    LOG.info("run %d is %s", run_id, current.value)
            self.wake.wait(POLL_INTERVAL)
            self.wake.clear()
        LOG.info("stopping run %d", run_id)
        self._stop_run(run_id)
        return 0

    def _stop_run(self, run_id: int) -> None:
        try:
            self.control.stop_run(run_id)
        except ControlError as exc:
            LOG.warning("stopping run %d: %s", run_id, exc)

    def _fail_run(self, run_id: int, follower: LogFollower, reason: str) -> int:
        """A round of a user's app had no client succeed: stop its run and fail it, as the built-in
        app fails its own."""
        LOG.error("run %d: %s; stopping it", run_id, reason)
        try:
            self.control.stop_run(run_id)
        except ControlError as exc:
            LOG.warning("stopping run %d: %s", run_id, exc)
        follower.join(LOG_DRAIN_TIMEOUT)
        self._finished(RunState("finished", "failed", reason), None)
        return self._serve_final()

    def _submit(self, fab: bytes) -> int:
        """Start the run; a refusal carries the reason the SuperLink logged with it."""
        assert self.superlink_output is not None
        self.superlink_output.errors.clear()
        try:
            return self.control.start_run(fab, self.settings.run_config)
        except ControlError as exc:
            time.sleep(RELAY_DELAY)
            logged = self.superlink_output.errors
            raise ControlError(f"{exc}: {logged[0]}" if logged else str(exc)) from None

    def close(self) -> None:
        for child in (self.proxy, self.superlink):
            if child is not None:
                processes.stop(child, STOP_GRACE)
        processes.kill_descendants()

    def _wait_for_superlink(self) -> bool:
        where = f"127.0.0.1:{self.settings.loopback_port}"
        deadline = time.monotonic() + SUPERLINK_START_TIMEOUT
        superlink = self.superlink
        if superlink is None:
            raise RuntimeError("the SuperLink was never started")
        while time.monotonic() < deadline and not self.stop.is_set():
            if superlink.poll() is not None:
                LOG.error("the SuperLink exited with code %s while starting", superlink.returncode)
                return False
            if self.proxy is not None and self.proxy.poll() is not None:
                LOG.error("the front proxy (nginx) exited with code %s while starting", self.proxy.returncode)
                return False
            try:
                self.control.online_nodes()  # the Control API answers: the SuperLink is serving
                self.superlink_healthy = True
            except ControlError:
                pass
            if self.superlink_healthy:
                LOG.info("the SuperLink is up")
                return True
            time.sleep(0.2)
        LOG.error("the SuperLink did not answer on %s within %.0f s", where, SUPERLINK_START_TIMEOUT)
        return False

    def _finished(self, state: RunState, connected: int | None) -> None:
        """Write metrics.json and log the outcome, then publish the final phase: whoever sees it finds both."""
        current = self.board.get()
        status = progress.with_run(
            current, state, current.clients.connected if connected is None else connected, _now()
        )
        output = contract.OutputFolder(self.settings.output_dir).metrics
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_suffix(".tmp")
        tmp.write_text(status.to_json())
        tmp.replace(output)
        outcome = f"failed: {status.message}" if status.phase == Phase.FAILED else "succeeded"
        saved = _app_files(self.settings.work_dir)
        LOG.info(
            "run %s after %d/%d rounds (metrics %s); %s%s",
            outcome,
            status.current_round,
            status.total_rounds,
            status.metrics or "none",
            f"results in {self.settings.output_dir}",
            f"; the app saved {', '.join(saved)} in {self.settings.work_dir}" if saved else "",
        )
        self.board.apply(lambda _: status)  # last: whoever sees the final phase finds the file and the log

    def _serve_final(self) -> int:
        """Stop the SuperLink and its proxy (their work is done) and serve the final status until told to stop."""
        for child in (self.proxy, self.superlink):
            if child is not None:
                processes.stop(child, STOP_GRACE)
        self.superlink_healthy = False
        self.stop.wait()
        return 0


APP_FILES_LISTED = 20


def _app_files(work_dir: Path | None) -> list[str]:
    """What the app left in its working directory (the first APP_FILES_LISTED names, quoted when
    not printable: they are the app's), for the log."""
    if work_dir is None or not work_dir.is_dir():
        return []
    names = sorted(path.name for path in work_dir.iterdir())[:APP_FILES_LISTED]
    return [name if name.isprintable() else repr(name) for name in names]


def _check_declared(app_dir: Path, config: Mapping[str, object]) -> None:
    """Every key the job sets must be one the app declares: else Flower refuses the run, and only
    this pod can say so with the app's own file (ControlError with the fix)."""
    declared = app_config_keys(app_dir)
    missing = sorted(set(config) - declared)
    if missing:
        raise ControlError(
            f"the Flower App in {app_dir} does not declare {', '.join(map(repr, missing))} in "
            "[tool.flwr.app.config] of its pyproject.toml, which the job sets (spec.rounds under "
            "spec.app.roundsKey, default num-server-rounds; spec.app.runConfig): declare it in the app, "
            "or set spec.app.roundsKey to the app's own key for its number of rounds"
        )


def _with_run(status: ServerStatus, state: RunState, connected: int) -> ServerStatus:
    """The status with the run's state from the SuperLink, as of now."""
    return progress.with_run(status, state, connected, _now())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_server_log(path: Path) -> IO[bytes] | None:
    """The server's log in the output folder, to append to (a resumed server continues it), so
    that it outlives the pod with the results; None when our output already goes there (`kubeflower
    run` writes it) or it cannot be opened (then the pod's log alone has it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(sys.stdout.fileno()), path.stat()):
                return None
        return path.open("ab")
    except OSError as exc:
        LOG.warning("the server's log cannot be written to %s: %s", path, exc)
        return None


def initial_status(settings: Settings, now: str) -> ServerStatus:
    """What the server reports as it starts: the job's final state when it already finished (this
    is a server re-created after the end: it must not run again; its output folder or, without an
    output volume, the operator's ConfigMap says so), the rounds of its latest checkpoint when it
    resumes, else a fresh start."""
    fresh = ServerStatus(
        total_rounds=settings.rounds,
        clients=ClientCounts(expected=settings.min_clients),
        start_time=now,
        message="starting the SuperLink",
        job_uid=settings.job_uid,
    )
    folder = contract.OutputFolder(settings.output_dir)
    # The output folder's own document first (every round's history), else the operator's.
    for path in (folder.metrics, settings.final_status):
        final = _final_document(path, settings.job_uid) if path is not None else None
        if final is not None:
            return final
    found = checkpoints.latest(folder.checkpoints, settings.job_uid)
    if found is None:
        return fresh
    last = found.history[-1] if found.history else None
    return fresh.model_copy(
        update={
            "current_round": last.round if last else 0,
            "metrics": dict(last.metrics) if last else {},
            "history": found.history,
            "resumed_round": found.round,
            "message": f"resuming after round {found.round} from its checkpoint",
        }
    )


def _final_document(path: Path, job_uid: str) -> ServerStatus | None:
    """This job's final status document at `path` (metrics.json, or the operator's ConfigMap file)
    if the job finished; else None. Read bounded and validated: the file outlives pods and jobs."""
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            LOG.warning("%s is larger than %d bytes: ignored", path, MAX_DOCUMENT_BYTES)
            return None
        document = ServerStatus.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        LOG.warning("%s is not a status document (%s): ignored", path, type(exc).__name__)
        return None
    if not document.phase.finished or document.job_uid != job_uid:
        return None
    return document


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        settings = Settings.from_env(os.environ)
        settings.tls_files()
    except SettingsError as exc:
        LOG.error("cannot start: %s (these variables are set by the operator; see kubeflower.core.contract)", exc)
        return 2
    if settings.work_dir is not None:  # the app's processes inherit it
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        os.chdir(settings.work_dir)
    processes.become_subreaper()
    log_copy = open_server_log(contract.OutputFolder(settings.output_dir).server_log)
    if log_copy is not None:
        copy = logging.StreamHandler(io.TextIOWrapper(log_copy, write_through=True))
        copy.setFormatter(logging.getLogger().handlers[0].formatter)
        logging.getLogger().addHandler(copy)
    board = Board(initial_status(settings, _now()))
    supervisor = Supervisor(settings, board, log_copy)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.request_stop())
    finished = board.get().phase.finished
    if finished:
        LOG.info(
            "job %s already %s after %d/%d rounds: serving its final state, not running again",
            settings.job,
            board.get().phase.value.lower(),
            board.get().current_round,
            board.get().total_rounds,
        )
    else:
        if board.get().resumed_round:
            LOG.info("job %s: %s", settings.job, board.get().message)
        try:
            supervisor.start_superlink()
        except frontproxy.ProxyError as exc:
            LOG.error("cannot start the front proxy: %s", exc)
            supervisor.close()
            return 1
    http = status_server.serve(
        settings.status_port,
        board.get,
        supervisor.healthy,
        settings.job,
        settings.bind_host,
        # A finished job has no run to stop; a running one stops when the operator says so.
        stop=status_server.Stop(settings.stop_token, supervisor.request_abort)
        if settings.stop_token and not finished
        else None,
    )
    LOG.info("serving /status, /metrics and /healthz on %s:%d", settings.bind_host, settings.status_port)
    try:
        return supervisor.run()
    finally:
        http.shutdown()
        supervisor.close()


if __name__ == "__main__":
    sys.exit(main())
