"""Flower's Control API, as the server entry point uses it: start, follow and stop one run.

The Control API is protobuf over HTTP (`flwr.supercore.control.ControlHttpClient`). Importing that
client imports all of `flwr` (numpy, grpc, cryptography, httpx: about 40 MB of private memory),
which the entry point, a long-lived process next to the SuperLink, should not carry. So requests
are made with `http.client`, and only the protobuf message classes of `flwr.proto` are imported,
without running `flwr/__init__` (see `_load_protos`); the wire format (paths, media types, the
4-byte length prefix of streamed frames) is that of `flwr.supercore.protobuf.client`, pinned with
flwr==1.42.0. Building a FAB needs Flower's CLI code, so it runs as the `flwr build` command.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import subprocess
import sys
import tempfile
import tomllib
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeflower_workload import processes

PROTOBUF = "application/protobuf"
PROTOBUF_STREAM = "application/flower-protobuf-stream"
FRAME_HEADER = 4
STREAM_READ_TIMEOUT = 60.0
"""A log stream silent this long is closed; the caller reconnects from its last timestamp."""
FAB_BUILD_TIMEOUT = 120.0


class ControlError(Exception):
    """The SuperLink refused a request, or could not be reached; the text says which."""


@dataclass(frozen=True)
class RunState:
    """A run's status as Flower reports it: `pending`, `starting`, `running`, `finished`."""

    status: str
    sub_status: str = ""
    """For finished runs: `completed`, `failed` or `stopped`."""
    details: str = ""
    """Why a run failed (a ServerApp's exception)."""

    @property
    def finished(self) -> bool:
        return self.status == "finished"


def _load_protos() -> types.SimpleNamespace:
    """`flwr.proto`'s generated modules, imported without `flwr/__init__`.

    They import only protobuf and each other, under the `flwr.proto` package name; a bare `flwr`
    package object pointing at the installed files is registered just for their import, then
    removed, so a later `import flwr` (if any) runs the real package and finds these modules.
    """
    if "flwr" in sys.modules:
        from flwr.proto import control_pb2, fab_pb2, transport_pb2
    else:
        spec = importlib.util.find_spec("flwr")
        if spec is None or spec.submodule_search_locations is None:
            raise ControlError("flwr is not installed")
        package = types.ModuleType("flwr")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["flwr"] = package
        try:
            from flwr.proto import control_pb2, fab_pb2, transport_pb2
        finally:
            del sys.modules["flwr"]
            sys.modules.pop("flwr.proto", None)
    return types.SimpleNamespace(control=control_pb2, fab=fab_pb2, transport=transport_pb2)


_pb = _load_protos()


class Control:
    """A Control API client for one SuperLink (`host:port`, plain HTTP as the SuperLink runs it)."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        host, _, port = address.rpartition(":")
        self._host, self._port, self._timeout = host, int(port), timeout

    def start_run(self, fab: bytes, run_config: Mapping[str, bool | int | float | str]) -> int:
        request = _pb.control.StartRunRequest(
            fab=_pb.fab.Fab(hash_str=hashlib.sha256(fab).hexdigest(), content=fab),
        )
        for key, value in run_config.items():
            request.override_config[key].CopyFrom(_scalar(value))
        response = self._call("start-run", request, _pb.control.StartRunResponse)
        if not response.HasField("run_id"):
            raise ControlError(f"the SuperLink did not start the run{': ' + response.note if response.note else ''}")
        return int(response.run_id)

    def run_state(self, run_id: int) -> RunState:
        response = self._call("list-runs", _pb.control.ListRunsRequest(run_id=run_id), _pb.control.ListRunsResponse)
        if run_id not in response.run_dict:
            raise ControlError(f"the SuperLink has no run {run_id}")
        status = response.run_dict[run_id].status
        return RunState(status.status, status.sub_status, status.details)

    def stop_run(self, run_id: int) -> bool:
        response = self._call("stop-run", _pb.control.StopRunRequest(run_id=run_id), _pb.control.StopRunResponse)
        return bool(response.success)

    def online_nodes(self) -> int:
        response = self._call("list-nodes", _pb.control.ListNodesRequest(), _pb.control.ListNodesResponse)
        return sum(1 for node in response.nodes_info if node.status == "online")

    def stream_logs(self, run_id: int, after: float) -> Iterator[tuple[str, float]]:
        """(text, latest timestamp) chunks of the run's log after `after`, until the run ends.

        Ends early (no error) when the stream is silent for STREAM_READ_TIMEOUT; resume with the
        last timestamp seen.
        """
        request = _pb.control.StreamLogsRequest(run_id=run_id, after_timestamp=after)
        connection = http.client.HTTPConnection(self._host, self._port, timeout=STREAM_READ_TIMEOUT)
        try:
            response = self._send(connection, "stream-logs", request, PROTOBUF_STREAM)
            while header := response.read(FRAME_HEADER):
                if len(header) < FRAME_HEADER:
                    raise ControlError("the SuperLink cut a log frame short")
                frame = _pb.control.StreamLogsResponse()
                frame.ParseFromString(response.read(int.from_bytes(header, "big")))
                yield frame.log_output, frame.latest_timestamp
        except TimeoutError:
            return
        finally:
            connection.close()

    def _call(self, method: str, request: Any, response_type: Any) -> Any:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            response = self._send(connection, method, request, PROTOBUF)
            result = response_type()
            result.ParseFromString(response.read())
            return result
        finally:
            connection.close()

    def _send(self, connection: http.client.HTTPConnection, method: str, request: Any, accept: str) -> Any:
        try:
            connection.request(
                "POST",
                f"/v1/control/{method}",
                body=request.SerializeToString(deterministic=True),
                headers={"content-type": PROTOBUF, "accept": accept},
            )
            response = connection.getresponse()
        except OSError as exc:
            raise ControlError(f"cannot reach the SuperLink at {self._host}:{self._port}: {exc}") from None
        if response.status != 200:
            raise ControlError(f"{method}: {_error_detail(response.read(4096))} (HTTP {response.status})")
        return response


def _error_detail(body: bytes) -> str:
    """The public message of a Flower API error (`{"code": .., "detail": ".."}`), else the body."""
    text = body.decode("utf-8", "replace")
    try:
        detail = json.loads(text).get("detail")
    except (ValueError, AttributeError):
        return text
    return str(detail) if detail else text


def _scalar(value: bool | int | float | str) -> Any:
    """A run-config value as Flower serialises it (`flwr.common.serde.user_config_value_to_proto`)."""
    if isinstance(value, bool):
        return _pb.transport.Scalar(bool=value)
    if isinstance(value, float):
        return _pb.transport.Scalar(double=value)
    if isinstance(value, int):
        return _pb.transport.Scalar(sint64=value)
    if isinstance(value, str):
        return _pb.transport.Scalar(string=value)
    raise ControlError(f"run config values must be bool, int, float or str (got {type(value).__name__}: {value!r})")


def build_fab(app_dir: Path) -> bytes:
    """The Flower App Bundle of an app project, built by `flwr build` (its errors as ControlError)."""
    with tempfile.TemporaryDirectory(prefix="kubeflower-fab-") as out:
        try:
            result = subprocess.run(
                ["flwr", "build", "--app", str(app_dir)],
                check=False,
                cwd=out,
                env=processes.child_env(),
                capture_output=True,
                text=True,
                timeout=FAB_BUILD_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ControlError(f"cannot run `flwr build`: {exc}") from None
        fabs = list(Path(out).glob("*.fab"))
        if result.returncode != 0 or len(fabs) != 1:
            output = (result.stderr or result.stdout).strip()
            raise ControlError(f"the Flower App in {app_dir} could not be bundled: {output}")
        return fabs[0].read_bytes()


def app_config_keys(app_dir: Path) -> set[str]:
    """The run-config keys an app project declares (`[tool.flwr.app.config]`, nested tables as
    dotted keys, as Flower flattens them); ControlError when its pyproject.toml cannot be read."""
    try:
        project = tomllib.loads((app_dir / "pyproject.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ControlError(f"the Flower App's pyproject.toml in {app_dir} cannot be read: {exc}") from None
    config = project.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    return set(_flat_keys(config)) if isinstance(config, dict) else set()


def _flat_keys(table: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flat_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"
