"""The entry points' reading of the environment contract, and local mode's use of the builders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubeflower.core import contract, environment, keys
from kubeflower.core.api import FederatedTrainingJob
from kubeflower.core.runconfig import run_config
from kubeflower.local import local_commands
from kubeflower_operator import builders
from kubeflower_operator.settings import Settings
from kubeflower_workload import client, server, supernode
from testbed.jobs import job

BASE = {
    contract.ENV_SUPERLINK: "j-server.ns.svc:9092",
    contract.ENV_NUM_PARTITIONS: "3",
    contract.ENV_SECURITY: contract.SECURITY_DISABLED,  # keys: tests/test_security.py
}


def test_a_client_starts_a_new_supernode_only_when_it_lost_its_place_or_may_wait_to_join() -> None:
    lost = supernode.CONNECTION_LOST
    # It had joined: the SuperLink forgot its node id (Flower's own exit 0 on a 401) or its
    # connection ended on an error; at once, however long the client has been waiting.
    for code in (0, lost):
        assert client.why_start_again(code, joined=True, not_registered=False, may_wait=False)
    # It could not join (305): only while the client may still wait for its key to be registered.
    assert client.why_start_again(1, joined=False, not_registered=True, may_wait=True)
    assert client.why_start_again(1, joined=False, not_registered=True, may_wait=False) is None
    # Any other end is the pod's to report (and the kubelet's to restart): a crash after joining,
    # an exit 0 before joining (a 401 at activation: a bad signature, a clock far off).
    assert client.why_start_again(1, joined=True, not_registered=False, may_wait=True) is None
    assert client.why_start_again(-9, joined=True, not_registered=False, may_wait=True) is None
    assert client.why_start_again(0, joined=False, not_registered=False, may_wait=True) is None


def test_the_supernode_runs_as_flower_supernode_does() -> None:
    """The client starts `kubeflower_workload.supernode`, Flower's own entry function with the same
    arguments: its --help is flower-supernode's."""
    helped = subprocess.run([*supernode.COMMAND, "--help"], capture_output=True, text=True, check=True, timeout=60)
    stock = subprocess.run(
        [str(Path(sys.executable).parent / "flower-supernode"), "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "--auth-supernode-private-key" in helped.stdout
    # The usage line names the program; from the description on, the help is the same.
    _, found, options = helped.stdout.partition("Start a Flower SuperNode")
    assert found and options == stock.stdout.partition(found)[2]


def test_client_partition_from_the_pod_ordinal() -> None:
    command = client.supernode_command({**BASE, contract.ENV_POD_NAME: "j-clients-2"})
    assert command[:4] == ["flower-supernode", "--insecure", "--superlink", "j-server.ns.svc:9092"]
    assert command[command.index("--node-config") + 1] == "partition-id=2 num-partitions=3"
    assert command[command.index("--port") + 1] == str(contract.SUPERNODE_PORT)


def test_a_client_added_by_a_scale_up_shares_a_partition() -> None:
    """The split is fixed when the clients are made (3 here): client 4 trains on partition 1."""
    command = client.supernode_command({**BASE, contract.ENV_POD_NAME: "j-clients-4"})
    assert command[command.index("--node-config") + 1] == "partition-id=1 num-partitions=3"


def test_a_client_added_by_a_scale_up_has_its_own_key(tmp_path: Path) -> None:
    """It shares client 1's partition, never its key: Flower ties a node to its key."""
    for name in (keys.CA_CERT, keys.client_private_key_file(1), keys.client_private_key_file(4)):
        (tmp_path / name).write_bytes(b"x")
    env = {
        **BASE,
        contract.ENV_POD_NAME: "j-clients-4",
        contract.ENV_SECURITY: contract.SECURITY_ENABLED,
        contract.ENV_CLIENT_KEYS_DIR: str(tmp_path),
    }
    command = client.supernode_command(env)
    assert command[command.index("--auth-supernode-private-key") + 1] == str(tmp_path / "client-4.key")
    assert command[command.index("--node-config") + 1] == "partition-id=1 num-partitions=3"


def test_an_explicit_partition_id_wins() -> None:
    env = {
        **BASE,
        contract.ENV_POD_NAME: "j-clients-2",
        contract.ENV_PARTITION_ID: "0",
        contract.ENV_SUPERNODE_PORT: "9999",
    }
    command = client.supernode_command(env)
    assert "partition-id=0 num-partitions=3" in command and "9999" in command


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({contract.ENV_NUM_PARTITIONS: "2", contract.ENV_POD_NAME: "x-0"}, "KUBEFLOWER_SUPERLINK is not set"),
        ({**BASE, contract.ENV_POD_NAME: "no-ordinal"}, "does not end in a StatefulSet ordinal"),
        ({**BASE, contract.ENV_PARTITION_ID: "3"}, "outside 0..2"),
        ({contract.ENV_SUPERLINK: "x:1", contract.ENV_POD_NAME: "j-0"}, "KUBEFLOWER_NUM_PARTITIONS"),
    ],
)
def test_client_settings_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(client.SettingsError, match=message):
        client.supernode_command(env)


def test_an_own_apps_rounds_under_its_own_key_and_its_working_directory() -> None:
    from kubeflower.core.environment import client_environment, server_environment

    model = FederatedTrainingJob.model_validate(
        job("mine", task=None, app={"path": "/app", "roundsKey": "rounds", "runConfig": {"lr": 0.1}}, image="me/a:1")
    )
    assert run_config(model.spec) == {"rounds": 3, "lr": 0.1}
    settings = server.Settings.from_env(server_environment(model))
    assert settings.rounds == 3 and settings.app_dir == Path("/app")
    assert settings.work_dir == Path(contract.OUTPUT_DIR) / "app"
    assert client_environment(model)[contract.ENV_WORK_DIR] == f"{contract.OUTPUT_DIR}/app"
    default = FederatedTrainingJob.model_validate(job("mine", task=None, app={"path": "/app"}, image="me/a:1"))
    assert run_config(default.spec) == {contract.RUN_CONFIG_ROUNDS: 3}  # Flower's templates' key


def test_server_settings_from_the_builders_environment() -> None:
    from kubeflower.core.environment import server_environment as server_env

    model = FederatedTrainingJob.model_validate(job("digits", namespace="ns"))
    settings = server.Settings.from_env(server_env(model))
    assert settings.run_config == run_config(model.spec)
    assert (settings.rounds, settings.min_clients, settings.superlink_port) == (3, 2, contract.SUPERLINK_PORT)
    assert settings.app_dir == server.BUILTIN_APP and settings.bind_host == "0.0.0.0"
    # The rounds and the minimum of clients have one channel: the run config the app gets too.
    assert contract.ENV_MIN_CLIENTS not in server_env(model)
    bad = json.dumps({**run_config(model.spec), contract.RUN_CONFIG_ROUNDS: "three"})
    with pytest.raises(server.SettingsError, match="must hold 'num-server-rounds' as a whole number"):
        server.Settings.from_env({**server_env(model), contract.ENV_RUN_CONFIG: bad})


def test_a_users_app_gets_the_rounds_in_its_run_config_and_the_minimum_apart() -> None:
    from kubeflower.core.environment import server_environment as server_env

    model = FederatedTrainingJob.model_validate(
        job("mine", task=None, app={"path": "/app", "runConfig": {"lr": 0.1}}, image="me/app:1", rounds=5)
    )
    settings = server.Settings.from_env(server_env(model))
    assert settings.run_config == {"lr": 0.1, contract.RUN_CONFIG_ROUNDS: 5}
    assert (settings.rounds, settings.min_clients) == (5, 2)


def test_local_mode_gives_each_process_its_pods_command_and_values(tmp_path: Path) -> None:
    """What the builders put into the pods and what `kubeflower run` gives its processes agree: the
    same commands, the same plain values (bar the host's own ports and folders), and a value for
    each variable the kubelet fills in (the pod's name, its CPUs)."""
    model = FederatedTrainingJob.model_validate(
        job("digits", clients={"replicas": 2, "env": [{"name": "MINE", "value": "1"}]}, namespace="ns")
    )
    server_env, client_env = environment.server_environment(model), environment.client_environment(model)
    host_values = {
        contract.ENV_SUPERLINK_PORT,
        contract.ENV_STATUS_PORT,
        contract.ENV_OUTPUT_DIR,
        contract.ENV_DATA_DIR,
        contract.ENV_SUPERLINK,
        contract.ENV_SUPERNODE_PORT,
        contract.ENV_HEALTH_ADDRESS,  # no kubelet probes locally
        contract.ENV_CACHE_DIR,  # the host's data folder is writable
        contract.ENV_FINAL_STATUS,  # no operator locally: the output folder says if the run finished
        contract.ENV_WORK_DIR,
        "FLWR_HOME",
        # The SuperLink's loopback port, and the keys: a throwaway folder of the host's, not the Secrets' mounts.
        contract.ENV_SUPERLINK_LOOPBACK_PORT,
        contract.ENV_TLS_DIR,
        contract.ENV_CLIENT_KEYS_DIR,
    }
    pods = [builders.server_deployment(model, Settings())] + [builders.client_statefulset(model, Settings())] * 2
    for (_, command, env), pod in zip(
        local_commands(model, tmp_path, tmp_path / "out", tmp_path / "h"), pods, strict=True
    ):
        container = pod["spec"]["template"]["spec"]["containers"][0]
        assert command == container["command"]
        plain = {e["name"]: e["value"] for e in container["env"] if "value" in e and e["name"] not in host_values}
        assert plain == {name: env[name] for name in plain}
        assert {e["name"] for e in container["env"] if "valueFrom" in e} <= set(env)
    assert server_env.keys() <= {e["name"] for e in pods[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert client_env.keys() <= {e["name"] for e in pods[1]["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_local_mode_runs_the_pods_commands_with_host_overrides(tmp_path: Path) -> None:
    model = FederatedTrainingJob.model_validate(job("digits", clients={"replicas": 3}))
    members = local_commands(model, tmp_path, tmp_path / "out", tmp_path / "home")
    assert [name for name, _, _ in members] == ["server", "client-0", "client-1", "client-2"]
    (_, server_command, server_env), *clients = members
    assert server_command == ["kubeflower-server"]
    assert json.loads(server_env[contract.ENV_RUN_CONFIG]) == run_config(model.spec)
    assert server_env[contract.ENV_BIND_HOST] == "127.0.0.1"
    assert server_env[contract.ENV_OUTPUT_DIR] == str(tmp_path / "out")
    assert server_env[contract.ENV_WORK_DIR] == str(tmp_path / "out" / "app")  # the output folder's place
    superlink = f"127.0.0.1:{server_env[contract.ENV_SUPERLINK_PORT]}"
    ports = {server_env[contract.ENV_SUPERLINK_PORT], server_env[contract.ENV_STATUS_PORT]}
    for ordinal, (_, command, env) in enumerate(clients):
        assert command == ["kubeflower-client"]
        assert env[contract.ENV_POD_NAME] == f"digits-clients-{ordinal}"
        assert env[contract.ENV_SUPERLINK] == superlink and env[contract.ENV_NUM_PARTITIONS] == "3"
        ports.add(env[contract.ENV_SUPERNODE_PORT])
        assert env["FLWR_HOME"] == str(tmp_path / "home" / f"client-{ordinal}")
        assert env[contract.ENV_WORK_DIR] == str(tmp_path / "home" / f"client-{ordinal}" / "app")
        # The clients share this host's CPUs: torch gets no more threads than a client's share.
        assert env[contract.ENV_THREADS] == str(max(1, (os.cpu_count() or 1) // 3))
    assert contract.ENV_THREADS not in server_env
    assert len(ports) == 5


def test_local_mode_finds_a_users_app_next_to_the_job(tmp_path: Path) -> None:
    model = FederatedTrainingJob.model_validate(job("mine", task=None, app={"path": "apps/mine"}, image="me/app:1"))
    (_, _, env), *_ = local_commands(model, tmp_path, tmp_path / "out", tmp_path / "home")
    assert env[contract.ENV_APP_PATH] == str(tmp_path / "apps" / "mine")


def _modules_after_import(modules: str) -> set[str]:
    """Every module a fresh interpreter holds after importing `modules` (comma separated)."""
    code = f"import sys, {modules}; print(' '.join(sys.modules))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_the_workload_never_imports_the_operators_dependencies() -> None:
    loaded = _modules_after_import(
        "kubeflower_workload.server, kubeflower_workload.client, "
        "kubeflower_workload.federation, kubeflower_workload.task"
    )
    assert not {name.split(".")[0] for name in loaded} & {"kopf", "kubernetes"}


def test_the_server_entry_point_stays_small() -> None:
    """It lives next to the SuperLink for the whole job: Flower's protobuf messages, not Flower."""
    loaded = _modules_after_import("kubeflower_workload.server")
    assert "flwr.proto.control_pb2" in loaded
    assert "flwr" not in loaded  # flwr/__init__ (numpy, grpc, httpx, ...) never ran
    assert not {name.split(".")[0] for name in loaded} & {"torch", "numpy", "httpx", "grpc"}
