"""Warm ClientApps: the fork server, the `flwr-clientapp` shim, and their pitfalls, with real processes.

The fork server here is the real one (`python -m kubeflower_workload.forkserver`, started by
`WarmClientApps` as the client entry point starts it), and every message runs Flower's own
`flwr-clientapp` entry point; what differs from a pod is only that no SuperNode started the shim.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeflower.core import contract
from kubeflower.core.server_status import ServerStatus
from kubeflower_workload import BUILTIN_APP, client, clientapp_shim, forkserver, processes, warm
from tests.workload.conftest import write_job
from tests.workload.test_federation import write_user_app

NOT_LISTENING = "127.0.0.1:9"  # a Runtime API address where nothing answers: flwr-clientapp retries


def start_server(preload: list[str], env: dict[str, str] | None = None) -> warm.WarmClientApps:
    apps = warm.WarmClientApps.prepare(processes.child_env(env or {}), preload)
    apps.start()
    return apps


@pytest.fixture(scope="module")
def server() -> Iterator[warm.WarmClientApps]:
    apps = start_server([])
    yield apps
    apps.stop(5)


def shim(
    apps: warm.WarmClientApps, *args: str, env: dict[str, str] | None = None, **options: object
) -> subprocess.Popen[str]:
    """The shim, started by name through PATH, as Flower's SuperExec starts it."""
    return subprocess.Popen(
        [forkserver.CLIENTAPP_COMMAND, *args],
        env={**apps.env, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,  # type: ignore[arg-type]
    )


def children_of(pid: int) -> list[int]:
    return processes.descendants(pid)


def wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_flowers_layout_is_the_one_the_fork_server_relies_on() -> None:
    """Fails loudly when a Flower upgrade moves `flwr-clientapp` or stops starting it by name."""
    from flwr.supernode.cli import flwr_clientapp

    assert forkserver.flwr_clientapp_entry_point() is flwr_clientapp
    from flwr.supercore.superexec.executor import subprocess_executor

    source = Path(subprocess_executor.__file__).read_text()
    assert "TASK_TYPE_TO_COMMAND[spec.task_type]" in source and "subprocess.Popen(args)" in source, (
        "SuperExec no longer starts the command by name"
    )


def test_flowers_superexec_role_is_the_one_the_fork_server_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails loudly when a Flower upgrade changes what the fork server relies on as the SuperExec."""
    forkserver.check_superexec_layout()
    from flwr.supercore import constant

    monkeypatch.setitem(constant.TASK_TYPE_TO_APPIO_API_ADDRESS_ARG, constant.TaskType.CLIENT_APP, "--appio-address")
    with pytest.raises(RuntimeError, match="no longer takes --runtime-api-address"):
        forkserver.check_superexec_layout()
    with pytest.raises(RuntimeError, match="SuperExec role changed"):
        forkserver.flwr_clientapp_entry_point()


def test_as_the_superexec_the_fork_server_asks_the_supernode_at_once_when_poked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It asks at start, then, before its poll is due, only when poked (SIGUSR1); a Runtime API that
    does not answer properly does not end it."""
    monkeypatch.setattr(warm, "TASK_POLL", "600")
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    apps = warm.WarmClientApps.prepare(processes.child_env(), [], address)
    apps.start()
    try:
        assert apps.server is not None
        listener.settimeout(120)  # imports first: torch and Flower
        for _ in range(2):  # the first ask; then the poke's
            conn, _ = listener.accept()
            assert b"POST /v1/runtime/acquire-task" in conn.recv(65536)
            conn.close()  # no answer: the fork server drops its connection and waits
            listener.settimeout(1.5)
            with pytest.raises(TimeoutError):  # its next poll is 600 s away: no ask unless poked
                listener.accept()
            apps.poke()
            listener.settimeout(30)
        assert apps.server.poll() is None
    finally:
        apps.stop(5)
        listener.close()


def test_as_the_superexec_the_fork_server_gives_clientapps_the_supernodes_environment() -> None:
    apps = warm.WarmClientApps.prepare(processes.child_env(), [], "127.0.0.1:9094")
    command = apps.command()
    assert command[command.index("--runtime-api-address") + 1] == "127.0.0.1:9094"
    assert command[command.index("--child-unset") + 1] == warm.BLAS_THREADS  # ours only, for the fork
    assert apps.server_env()[warm.BLAS_THREADS] == "1"
    pod_sets_it = warm.WarmClientApps.prepare(processes.child_env({warm.BLAS_THREADS: "4"}), [], "127.0.0.1:9094")
    assert "--child-unset" not in pod_sets_it.command()
    assert "--runtime-api-address" not in warm.WarmClientApps.prepare(processes.child_env(), []).command()
    apps.stop(1)
    pod_sets_it.stop(1)


def test_the_shim_runs_flowers_entry_point_in_a_forked_child_with_its_argv_and_exit_code(
    server: warm.WarmClientApps,
) -> None:
    assert server.server is not None
    done = shim(server, "--help")
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0 and out.startswith("usage: flwr-clientapp"), err
    assert "warm ClientApp not used" not in err
    bad = shim(server, "--no-such-flag")
    out, err = bad.communicate(timeout=60)
    assert bad.returncode == 2 and "flwr-clientapp: error" in err  # argparse's code and message, through the shim
    wait_for(lambda: children_of(server.server.pid) == [])  # every child reaped (a zombie would still be listed)


def test_the_child_works_in_the_shims_folder(server: warm.WarmClientApps, tmp_path: Path) -> None:
    assert server.server is not None
    (tmp_path / "token").write_text("secret")  # a relative --token-file: read from the working folder
    running = shim(server, "--token-file", "token", "--runtime-api-address", NOT_LISTENING, "--insecure", cwd=tmp_path)
    wait_for(lambda: len(children_of(server.server.pid)) == 1)
    child = children_of(server.server.pid)[0]
    assert os.readlink(f"/proc/{child}/cwd") == str(tmp_path)
    # Flower logs this line after reading its token; the shim's streams are read as they come,
    # and SIGTERM waits for the line (sent at once, it could beat the child's first log line).
    lines: list[str] = []
    readers = [threading.Thread(target=lines.extend, args=(stream,)) for stream in (running.stdout, running.stderr)]
    for reader in readers:
        reader.start()
    wait_for(lambda: any("Start `flwr-clientapp` process" in line for line in lines), 60)
    running.send_signal(signal.SIGTERM)
    running.wait(timeout=60)
    for reader in readers:
        reader.join(timeout=60)


def test_sigterm_reaches_the_child_and_the_exit_code_is_the_stock_ones(server: warm.WarmClientApps) -> None:
    assert server.server is not None
    args = ["--token", "t", "--runtime-api-address", NOT_LISTENING, "--insecure"]
    codes = []
    for command in ([server.env[clientapp_shim.ENV_REAL_CLIENTAPP]], [forkserver.CLIENTAPP_COMMAND]):
        process = subprocess.Popen(
            [*command, *args], env=server.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:  # running: Flower retries the Runtime API
            if "Connection attempt failed" in line:
                break
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=60)[0]
        assert "Task stopped." in rest  # Flower's own SIGTERM handler ran in the (forked) process
        codes.append(process.returncode)
    assert codes[1] == codes[0]
    wait_for(lambda: children_of(server.server.pid) == [])


def test_a_killed_shim_takes_its_child_with_it_and_a_killed_child_kills_the_shim(server: warm.WarmClientApps) -> None:
    assert server.server is not None
    args = ["--token", "t", "--runtime-api-address", NOT_LISTENING, "--insecure"]
    first = shim(server, *args)
    wait_for(lambda: len(children_of(server.server.pid)) == 1)
    first.kill()
    first.wait(timeout=10)
    wait_for(lambda: children_of(server.server.pid) == [])  # killed and reaped
    second = shim(server, *args)
    wait_for(lambda: len(children_of(server.server.pid)) == 1)
    os.kill(children_of(server.server.pid)[0], signal.SIGKILL)
    err = second.communicate(timeout=30)[1]
    assert second.returncode == -signal.SIGKILL, err  # the shim dies as its child did


def test_without_a_fork_server_the_shim_runs_the_stock_clientapp_and_says_so(
    server: warm.WarmClientApps, tmp_path: Path
) -> None:
    absent = shim(server, "--help", env={clientapp_shim.ENV_SOCKET: str(tmp_path / "none.sock")})
    out, err = absent.communicate(timeout=60)
    assert absent.returncode == 0 and out.startswith("usage: flwr-clientapp")
    assert "warm ClientApp not used (no fork server at" in err and "starting the stock flwr-clientapp" in err
    installing = shim(server, "--help", "--allow-runtime-dependency-installation")
    out, err = installing.communicate(timeout=60)
    assert "warm ClientApp not used (--allow-runtime-dependency-installation is set)" in err and out.startswith(
        "usage:"
    )


def test_the_socket_is_private_to_the_pods_user(server: warm.WarmClientApps, tmp_path: Path) -> None:
    socket_path = Path(server.env[clientapp_shim.ENV_SOCKET])
    assert socket_path.parent.stat().st_mode & 0o777 == 0o700
    assert socket_path.stat().st_mode & 0o777 == 0o600
    assert (socket_path.parent / forkserver.CLIENTAPP_COMMAND).stat().st_mode & 0o777 == 0o700
    assert server.env["PATH"].split(os.pathsep)[0] == str(socket_path.parent)  # the shim is first on PATH
    tmp_path.chmod(0o755)
    with pytest.raises(RuntimeError, match="must be private to this user"):
        forkserver.listen(tmp_path / "open.sock")


def test_the_fork_server_has_the_supernodes_environment(tmp_path: Path) -> None:
    apps = start_server([], {"OMP_NUM_THREADS": "3", "FLWR_LOG_LEVEL": "DEBUG"})
    try:
        assert apps.server is not None
        environ = Path(f"/proc/{apps.server.pid}/environ").read_bytes().split(b"\0")
        assert b"OMP_NUM_THREADS=3" in environ and b"FLWR_LOG_LEVEL=DEBUG" in environ
        assert b"OPENBLAS_NUM_THREADS=1" in environ  # numpy's BLAS pool would be a second thread
    finally:
        apps.stop(5)


def test_the_fork_server_refuses_to_serve_with_a_second_thread_and_the_shim_falls_back() -> None:
    apps = start_server(["numpy"], {"OPENBLAS_NUM_THREADS": "2"})  # numpy starts a BLAS thread at import
    try:
        assert apps.server is not None
        assert apps.server.wait(timeout=120) == 3
        done = shim(apps, "--help")
        out, err = done.communicate(timeout=60)
        assert done.returncode == 0 and out.startswith("usage: flwr-clientapp")
        assert "warm ClientApp not used" in err
    finally:
        apps.stop(5)


FORK_CHECK = """
import socket, sys
import torch
from kubeflower_workload import forkserver
forkserver.check_fork_safe()  # passes: one thread, no CUDA, no TCP socket
{setup}
try:
    forkserver.check_fork_safe()
except forkserver.Refusal as exc:
    print("refused:", exc)
"""


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (
            "listener = socket.create_server(('127.0.0.1', 0)); "
            "conn = socket.create_connection(listener.getsockname())",
            "TCP sockets are open",
        ),
        ("import threading, time; threading.Thread(target=time.sleep, args=(30,), daemon=True).start()", "2 threads"),
        # No GPU on this machine: torch's own flag stands in for an initialised CUDA.
        ("torch.cuda.is_initialized = lambda: True", "CUDA is initialised"),
    ],
)
def test_the_fork_server_refuses_to_fork_an_unsafe_process(setup: str, reason: str) -> None:
    code = FORK_CHECK.format(setup=setup)
    result = subprocess.run(
        [sys.executable, "-P", "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert f"refused: {reason}" in result.stdout


RESEED = """
import os, random
import numpy, torch
from kubeflower_workload import forkserver
random.seed(1); numpy.random.seed(1); torch.manual_seed(1)
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        forkserver.reseed()
        print(random.random(), numpy.random.rand(), float(torch.rand(1)), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_each_child_draws_fresh_random_numbers() -> None:
    result = subprocess.run(
        [sys.executable, "-P", "-c", RESEED],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    first, second = (line.split() for line in result.stdout.splitlines())
    assert all(a != b for a, b in zip(first, second, strict=True)), result.stdout  # random, numpy, torch


def test_a_fork_server_that_ends_is_restarted() -> None:
    apps = start_server([])
    try:
        assert apps.server is not None
        first = apps.server
        first.kill()
        first.wait()
        apps.pause = 0.0
        apps.supervise()  # notices, schedules the restart
        apps.supervise()  # restarts
        assert apps.restarts == 1 and apps.server is not first and apps.server.poll() is None
        done = shim(apps, "--help")
        out, err = done.communicate(timeout=60)
        assert out.startswith("usage: flwr-clientapp") and "warm ClientApp not used" not in err
    finally:
        apps.stop(5)


def test_preload_comes_from_the_apps_pyproject(tmp_path: Path) -> None:
    assert warm.preload_modules(BUILTIN_APP) == ["kubeflower_workload.task"]
    assert warm.preload_modules(tmp_path) == []  # no pyproject.toml: Flower only
    (tmp_path / "pyproject.toml").write_text('[tool.kubeflower]\npreload = ["torch", "transformers"]\n')
    assert warm.preload_modules(tmp_path) == ["torch", "transformers"]
    (tmp_path / "pyproject.toml").write_text('[tool.kubeflower]\npreload = "torch"\n')
    with pytest.raises(warm.PreloadError, match=r"tool.kubeflower.preload must be a list of module names"):
        warm.preload_modules(tmp_path)


def test_warm_mode_follows_the_job_and_is_off_while_dependencies_install() -> None:
    command = ["flower-supernode", "--insecure"]
    assert client.warm_setting({}, command) == (True, "on")
    assert client.warm_setting({contract.ENV_WARM_CLIENTAPPS: "false"}, command)[0] is False
    off, why = client.warm_setting({}, [*command, "--allow-runtime-dependency-installation"])
    assert not off and "--allow-runtime-dependency-installation" in why
    with pytest.raises(client.SettingsError, match="KUBEFLOWER_WARM_CLIENTAPPS must be true or false"):
        client.warm_setting({contract.ENV_WARM_CLIENTAPPS: "yes"}, command)
    assert client.superexec_setting({}) is True
    assert client.superexec_setting({contract.ENV_WARM_SUPEREXEC: "False"}) is False
    with pytest.raises(client.SettingsError, match="KUBEFLOWER_WARM_SUPEREXEC must be true or false"):
        client.superexec_setting({contract.ENV_WARM_SUPEREXEC: "1"})
    assert client.runtime_api_address([*command, "--port", "9123"]) == "127.0.0.1:9123"


def _logs(output: Path) -> str:
    return "\n".join(path.read_text() for path in sorted((output / "logs").glob("client-*.log")))


@pytest.mark.slow
def test_the_same_seed_gives_the_same_numbers_warm_and_stock_every_round(
    tmp_path: Path, kubeflower_run: object, run_env: dict[str, str]
) -> None:
    """Stock ClientApp processes, warm ones through the shim, and warm ones from the fork server in the
    SuperExec's role (the default): the same numbers in every round."""
    statuses = {}
    for mode, warm_on, superexec in (("superexec", True, None), ("shim", True, "false"), ("stock", False, None)):
        job_file = write_job(tmp_path, mode, rounds=2, clients={"replicas": 2, "warmClientApps": warm_on})
        run_env.pop(contract.ENV_WARM_SUPEREXEC, None)
        if superexec is not None:
            run_env[contract.ENV_WARM_SUPEREXEC] = superexec
        result = kubeflower_run(job_file, tmp_path / mode)  # type: ignore[operator]
        assert result.returncode == 0, result.stdout + result.stderr
        logs = _logs(tmp_path / mode)
        if mode == "superexec":
            assert logs.count("the fork server takes the SuperExec's role") == 2
            assert logs.count("serving warm ClientApps") == 2 and "warm ClientApp not used" not in logs
        elif mode == "shim":
            assert logs.count("serving warm ClientApps") == 2 and "warm ClientApp not used" not in logs
            assert "the fork server takes the SuperExec's role" not in logs
        else:
            assert (
                logs.count("warm ClientApps off: KUBEFLOWER_WARM_CLIENTAPPS=false") == 2 and "fork server" not in logs
            )
        statuses[mode] = ServerStatus.model_validate_json(contract.OutputFolder(tmp_path / mode).metrics.read_text())
    stock_history = statuses["stock"].history
    assert len(stock_history) == 2
    for mode in ("superexec", "shim"):
        assert len(statuses[mode].history) == 2
        for warm_round, stock_round in zip(statuses[mode].history, stock_history, strict=True):
            assert warm_round.metrics == stock_round.metrics and warm_round.train_metrics == stock_round.train_metrics


DRAWING_CLIENT = '''
import json, os, random
import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()

def draw(kind: str) -> None:
    """An unseeded app's shuffles: each generator's first draw in this message's process."""
    drawn = {"kind": kind, "pid": os.getpid(), "random": random.random(), "numpy": float(np.random.rand()),
             "torch": float(torch.rand(1))}
    with open(os.environ["DRAWS_FILE"], "a") as out:
        out.write(json.dumps(drawn) + "\\n")

@app.train()
def train(msg: Message, context: Context) -> Message:
    draw("train")
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    metrics = MetricRecord({"num-examples": 10, "loss": 1.0})
    return Message(RecordDict({"arrays": ArrayRecord([arrays[0] + 1.0]), "metrics": metrics}), reply_to=msg)

@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    draw("evaluate")
    metrics = MetricRecord({"num-examples": 10, "loss": 1.0, "accuracy": 0.5})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
'''


@pytest.mark.slow
def test_a_users_app_runs_warm_with_its_preload_and_unseeded_draws_differ_between_rounds(
    tmp_path: Path, kubeflower_run: object, run_env: dict[str, str]
) -> None:
    app = write_user_app(tmp_path)
    (app / "myapp" / "client_app.py").write_text(DRAWING_CLIENT)
    with (app / "pyproject.toml").open("a") as pyproject:
        pyproject.write('[tool.kubeflower]\npreload = ["numpy", "torch"]\n')
    run_env["DRAWS_FILE"] = str(tmp_path / "draws.jsonl")  # reaches the app through the shim's environment
    job_file = write_job(tmp_path, "drawing", task=None, app={"path": "myapp"}, image="me/app:1", rounds=2)
    result = kubeflower_run(job_file, tmp_path / "out")  # type: ignore[operator]
    assert result.returncode == 0, result.stdout + result.stderr
    logs = _logs(tmp_path / "out")
    assert logs.count("(pre-imports: numpy, torch)") == 2 and "warm ClientApp not used" not in logs
    draws = [json.loads(line) for line in (tmp_path / "draws.jsonl").read_text().splitlines()]
    assert len(draws) == 8  # 2 clients x 2 rounds x (train, evaluate), each in its own process
    assert len({d["pid"] for d in draws}) == 8
    for generator in ("random", "numpy", "torch"):
        assert len({d[generator] for d in draws}) == 8, (
            f"{generator} repeated its draws: {[d[generator] for d in draws]}"
        )


@pytest.mark.parametrize(
    ("payload", "fds", "message"),
    [
        (b"[]", [], "must be a JSON object"),
        (b'{"argv": "x", "env": {}, "cwd": "/", "fds": []}', [], "argv must be a list of strings"),
        (b'{"argv": [], "env": {"A": 1}, "cwd": "/", "fds": []}', [], "env must map strings to strings"),
        (b'{"argv": [], "env": {}, "cwd": "/", "fds": [0, 1]}', [], "do not match"),
        (b'{"argv": [], "env": {}, "cwd": "/", "fds": [7]}', [5], "do not match"),
    ],
)
def test_a_bad_request_is_refused_not_a_crash(payload: bytes, fds: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        forkserver.parse_request(payload, fds)
