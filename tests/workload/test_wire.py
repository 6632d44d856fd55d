"""The built-in app's model on the wire (`wire`): packed losslessly, a few objects, checked on return.

The server side is driven through `federation.exchange` with an in-memory Grid whose "clients" are
the real built-in ClientApp function (`task.train`) or hand-made replies; no network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.task_identity import TaskIdentity

from kubeflower.core import contract
from kubeflower.core.runconfig import run_config
from kubeflower.core.validation import load_job
from kubeflower_workload import federation, models, task, wire
from kubeflower_workload.messages import ARRAYS, CONFIG, EVALUATE_RECEIVED, LAYOUT, METRICS, NUM_EXAMPLES
from tests.workload.conftest import REPO

DEMO_CONFIG = run_config(load_job(REPO / "examples" / "digits-fedavg.yaml").spec)
Reply = Callable[[Message], Message]


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Messages are stamped with the run they belong to, as in a ServerApp process."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


def state(model: str) -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return {name: value.numpy() for name, value in models.build(model).state_dict().items()}


@pytest.mark.parametrize("model", ["digits-cnn", "mnist-cnn", "cifar-cnn", "resnet18"])
def test_packing_is_lossless_in_values_dtypes_shapes_and_order(model: str) -> None:
    tensors = state(model)
    packed, layout = wire.pack(tensors)
    unpacked = wire.unpack(packed, wire.layout_of(layout))
    assert list(unpacked) == list(tensors)
    for name, value in tensors.items():
        assert unpacked[name].dtype == value.dtype and unpacked[name].shape == value.shape
        assert np.array_equal(unpacked[name], value)
    # resnet18's BatchNorm counters are int64 (0-d): one Array per dtype, nothing cast.
    assert list(packed) == list(dict.fromkeys(value.dtype.name for value in tensors.values()))


def test_a_packed_model_is_a_few_flower_objects_not_two_per_tensor() -> None:
    """What the packing is for: Flower pulls and pushes every object of a message in a request."""
    record = ArrayRecord({name: Array(value) for name, value in state("digits-cnn").items()})
    per_tensor = RecordDict({ARRAYS: record, CONFIG: ConfigRecord()})
    arrays, layout = wire.pack_record(record)
    packed = RecordDict({ARRAYS: arrays, LAYOUT: layout, CONFIG: ConfigRecord()})
    assert len(get_all_nested_objects(per_tensor)) == 19  # RecordDict, 2 records, 8 Arrays, 8 chunks
    assert len(get_all_nested_objects(packed)) == 6  # RecordDict, 3 records, 1 Array, 1 chunk


def good_layout() -> ConfigRecord:
    return wire.pack({"w": np.zeros((2, 3), np.float32), "n": np.array(5)})[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({wire.NAMES: "w"}, "'names' must be a list of str"),
        ({wire.NDIMS: [2.0, 0.0]}, "'ndims' must be a list of int"),
        ({wire.DTYPES: ["float32"]}, "one entry per tensor"),
        ({wire.NAMES: ["w", "w"]}, "a tensor name appears twice"),
        ({wire.DIMS: [2, -3]}, "do not describe the shapes"),
        ({wire.DIMS: [2, 3, 4]}, "do not describe the shapes"),
        ({wire.DTYPES: ["object", "int64"]}, "must name numeric numpy dtypes"),
        ({wire.DTYPES: ["<U3", "int64"]}, "must name numeric numpy dtypes"),
    ],
)
def test_a_malformed_layout_is_refused_naming_the_key(change: dict[str, object], message: str) -> None:
    layout = good_layout()
    layout.update(change)
    with pytest.raises(wire.WireError, match=message):
        wire.layout_of(layout)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"float32": np.zeros(6, np.float32)}, r"one per dtype \['float32', 'int64'\], got 1"),
        ({"float32": np.zeros(5, np.float32), "int64": np.zeros(1, np.int64)}, "float32 Array must be flat with 6"),
        ({"float32": np.zeros((2, 3), np.float32), "int64": np.zeros(1, np.int64)}, "must be flat"),
        ({"float32": np.zeros(6, np.float64), "int64": np.zeros(1, np.int64)}, "float32 Array must be flat"),
    ],
)
def test_packed_arrays_that_do_not_fit_their_layout_are_refused(arrays: dict[str, np.ndarray], message: str) -> None:
    packed = ArrayRecord({dtype: Array(value) for dtype, value in arrays.items()})
    with pytest.raises(wire.WireError, match=message):
        wire.unpack(packed, wire.layout_of(good_layout()))


def test_array_bytes_that_are_not_what_their_metadata_says_are_refused() -> None:
    """An Array's dtype and shape are metadata beside its bytes: the bytes are what is checked."""
    layout = wire.layout_of(good_layout())
    five = Array(np.zeros(5, np.float32))
    lying = Array(dtype="float32", shape=(6,), stype=five.stype, data=five.data)
    packed = ArrayRecord({"float32": lying, "int64": Array(np.zeros(1, np.int64))})
    with pytest.raises(wire.WireError, match="float32 Array must be flat with 6"):
        wire.unpack(packed, layout)
    junk = Array(dtype="float32", shape=(6,), stype=five.stype, data=b"not numpy")
    with pytest.raises(wire.WireError, match="does not hold a readable numpy array"):
        wire.unpack(ArrayRecord({"float32": junk, "int64": Array(np.zeros(1, np.int64))}), layout)


class LocalGrid:
    """A Grid whose nodes answer at once, in-process: `replies[node](message)`."""

    def __init__(self, replies: dict[int, Reply]) -> None:
        self.replies = replies
        self.pushed: dict[str, Message] = {}

    def get_node_ids(self) -> Iterable[int]:
        return list(self.replies)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        for message in messages:
            message.metadata.__dict__["_message_id"] = message.object_id  # as Flower's own Grid does
            self.pushed[message.object_id] = message
        return list(self.pushed)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies[self.pushed[i].metadata.dst_node_id](self.pushed[i]) for i in message_ids]


def trained_by_hand(step: float, packed: bool = True) -> Reply:
    """A client that adds `step` to every float tensor and answers packed (or per tensor)."""

    def reply(message: Message) -> Message:
        tensors, _ = wire.received(message.content)
        tensors = {k: v + step if v.dtype.kind == "f" else v for k, v in tensors.items()}
        metrics = MetricRecord({NUM_EXAMPLES: 10, "loss": 1.0})
        if packed:
            arrays, layout = wire.pack(tensors)
            return Message(RecordDict({ARRAYS: arrays, LAYOUT: layout, METRICS: metrics}), reply_to=message)
        model = ArrayRecord({name: Array(value) for name, value in tensors.items()})
        return Message(RecordDict({ARRAYS: model, METRICS: metrics}), reply_to=message)

    return reply


def round_of(grid: LocalGrid, model: dict[str, np.ndarray]) -> tuple[list[Message], ArrayRecord | None]:
    strategy = FedAvg(min_available_nodes=len(grid.replies), min_train_nodes=len(grid.replies))
    sent = ArrayRecord({name: Array(value) for name, value in model.items()})
    replies = federation.exchange(grid, strategy.configure_train(1, sent, ConfigRecord(), grid))
    return replies, strategy.aggregate_train(1, replies)[0]


def test_the_server_sends_packed_and_the_strategy_reads_per_tensor_replies_of_either_form() -> None:
    model = state("digits-cnn")
    grid = LocalGrid({1: trained_by_hand(1.0), 2: trained_by_hand(3.0, packed=False)})
    replies, aggregated = round_of(grid, model)
    for message in grid.pushed.values():
        assert list(message.content.array_records[ARRAYS]) == ["float32"] and LAYOUT in message.content
    assert [reply.has_error() for reply in replies] == [False, False]
    assert all(LAYOUT not in reply.content for reply in replies)
    assert aggregated is not None and list(aggregated) == list(model)
    for name, value in model.items():  # the mean of +1 and +3
        assert np.allclose(aggregated[name].numpy(), value + 2.0)


def test_a_reply_in_another_dtype_is_accepted() -> None:
    """FedAdam's model is float64 after its first round; a float32 client model answers float32."""
    model = {name: value.astype(np.float64) for name, value in state("digits-cnn").items()}

    def as_float32(message: Message) -> Message:
        tensors, _ = wire.received(message.content)
        arrays, layout = wire.pack({name: value.astype(np.float32) for name, value in tensors.items()})
        metrics = MetricRecord({NUM_EXAMPLES: 10, "loss": 1.0})
        return Message(RecordDict({ARRAYS: arrays, LAYOUT: layout, METRICS: metrics}), reply_to=message)

    grid = LocalGrid({1: as_float32})
    replies, aggregated = round_of(grid, model)
    assert [list(message.content.array_records[ARRAYS]) for message in grid.pushed.values()] == [["float64"]]
    assert not replies[0].has_error() and aggregated is not None


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda t: {**t, "fc2.bias": t["fc2.bias"][:-1]}, "differ from the model sent"),
        (lambda t: {k: v for k, v in t.items() if k != "fc2.bias"}, "differ from the model sent"),
        (lambda t: {**t, "fc2.bias": t["fc2.bias"].reshape(1, -1)}, "differ from the model sent"),
    ],
)
def test_a_reply_whose_model_is_not_the_one_sent_is_a_failure_the_round_survives(
    bad: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], reason: str
) -> None:
    def wrong(message: Message) -> Message:
        tensors, _ = wire.received(message.content)
        arrays, layout = wire.pack(bad(tensors))
        metrics = MetricRecord({NUM_EXAMPLES: 10, "loss": 1.0})
        return Message(RecordDict({ARRAYS: arrays, LAYOUT: layout, METRICS: metrics}), reply_to=message)

    model = state("digits-cnn")
    replies, aggregated = round_of(LocalGrid({1: trained_by_hand(1.0), 7: wrong}), model)
    by_node = {reply.metadata.src_node_id: reply for reply in replies}
    assert not by_node[1].has_error() and by_node[7].has_error()
    assert by_node[7].error.reason.startswith("the reply of node 7 is refused:") and reason in by_node[7].error.reason
    assert aggregated is not None and np.allclose(aggregated["fc2.bias"].numpy(), model["fc2.bias"] + 1.0)


def test_packed_arrays_that_contradict_their_own_layout_are_a_failure() -> None:
    def lying(message: Message) -> Message:
        reply = trained_by_hand(1.0)(message)
        reply.content[LAYOUT][wire.NAMES] = ["x"] * 8
        return reply

    replies, _ = round_of(LocalGrid({1: trained_by_hand(1.0), 2: lying}), state("digits-cnn"))
    by_node = {reply.metadata.src_node_id: reply for reply in replies}
    assert not by_node[1].has_error() and "a tensor name appears twice" in by_node[2].error.reason


def client_context(tmp_path: Path) -> Context:
    return Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 0, "num-partitions": 2},
        state=RecordDict(),
        run_config=DEMO_CONFIG,
    )


def test_the_built_in_clientapp_trains_the_same_numbers_packed_or_not_and_answers_in_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same seed, the same model, sent packed and per tensor: the same trained model and metrics."""
    monkeypatch.setenv(contract.ENV_DATA_DIR, str(tmp_path))
    model = state("digits-cnn")
    config = ConfigRecord({"server-round": 1, EVALUATE_RECEIVED: True})
    answers = {}
    for packed in (True, False):
        grid = LocalGrid({1: lambda message: task.train(message, client_context(tmp_path))})
        strategy = FedAvg(min_available_nodes=1, min_train_nodes=1)
        sent = ArrayRecord({name: Array(value) for name, value in model.items()})
        messages = list(strategy.configure_train(1, sent, config, grid))
        if packed:
            [reply] = federation.exchange(grid, messages)
            assert all(LAYOUT in message.content for message in grid.pushed.values())
        else:
            [reply] = grid.pull_messages(grid.push_messages(messages))
        assert not reply.has_error() and LAYOUT not in reply.content
        answers[packed] = reply.content
    packed_model, plain_model = (answers[p].array_records[ARRAYS] for p in (True, False))
    assert list(packed_model) == list(plain_model) == list(model)
    for name in model:
        assert np.array_equal(packed_model[name].numpy(), plain_model[name].numpy())
        assert not np.array_equal(packed_model[name].numpy(), model[name])  # it did train
    assert dict(answers[True].metric_records[METRICS]) == dict(answers[False].metric_records[METRICS])
    assert dict(answers[True].config_records["evaluation"]) == dict(answers[False].config_records["evaluation"])
