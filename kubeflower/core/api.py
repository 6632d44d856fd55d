"""The FederatedTrainingJob API (kubeflower.io/v1alpha1): the single source of truth.

The CRD schema in `crds/` is generated from these models (see `kubeflower.core.crd`), the CLI validates
with them, the operator parses every job with them, and local mode reads the same spec. Cross-field
rules are declared once as `CelRule`s: each carries the CEL text that goes into the CRD's
`x-kubernetes-validations` and a Python predicate that mirrors it, so a bad spec is rejected by the
API server and again by the operator, with the same message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from kubeflower.core import contract, corev1
from kubeflower.core.contract import POD_VOLUMES
from kubeflower.core.corev1 import RESTRICTED_VOLUME_TYPES
from kubeflower.core.server_status import MAX_ROUNDS, Phase
from kubeflower.core.vocabulary import (
    MODEL_INPUTS,
    STRATEGY_PARAMETERS,
    DatasetName,
    ModelName,
    StrategyName,
    datasets_for,
)

API_VERSION: Final = "kubeflower.io/v1alpha1"
GROUP, VERSION = API_VERSION.split("/")
KIND: Final = "FederatedTrainingJob"
PLURAL = "federatedtrainingjobs"
SINGULAR = "federatedtrainingjob"
SHORT_NAMES = ["ftj"]

# A StatefulSet stamps `controller-revision-hash=<name>-<hash>` on its pods; that label value must
# fit in 63 characters, which caps a StatefulSet name at 52. `<job>-clients` is the longest child.
LONGEST_CHILD_SUFFIX = "-clients"
MAX_NAME_LENGTH = 52 - len(LONGEST_CHILD_SUFFIX)
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

# Every integer, duration, string, list and map has a maximum: a value past it would overflow a
# computation (a deadline of 10^11 s), grow the operator's memory, or push a CEL rule's cost
# estimate past the API server's budget.
MAX_SECONDS = 10 * 365 * 24 * 3600
"""Durations (deadlines, TTLs): ten years, far below what a datetime can add without overflowing."""
MAX_SEED = 2**31 - 1
MAX_CLIENTS = 1000
MAX_ENV = 128
MAX_LIST = 64
MAX_STRING = 1024
IMAGE_PATTERN = (
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
"""A container image reference (registry/path:tag@digest), as the container runtime parses it."""
LabelKey = Annotated[str, Field(min_length=1, max_length=corev1.MAX_KEY)]
LabelValue = Annotated[str, Field(max_length=63)]
AnnotationValue = Annotated[str, Field(max_length=4 * MAX_STRING)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253)]
"""A Kubernetes object's name (a claim, a service account, a priority or runtime class)."""
RunConfigKey = Annotated[str, Field(min_length=1, max_length=corev1.MAX_KEY)]
# Any scalar: Flower run config values are str, int, float or bool; pydantic checks the type.
RunConfigValue = Annotated[
    bool | int | float | Annotated[str, Field(max_length=MAX_STRING)],
    WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True}),
]
RESERVED_ENV_PREFIXES = ("KUBEFLOWER_", "FLWR_")
"""Environment variables of the contract between operator and workload (`contract`) and Flower's
own: a user's value would change what the pods are (a partition, a bind address, a Control API
reopened on 0.0.0.0), so they are refused. Others, OMP_NUM_THREADS included, stay the user's."""


@dataclass(frozen=True)
class CelRule:
    """One cross-field rule, written once for the API server (CEL) and once for Python.

    `check` receives the model instance and returns True when the rule holds; it must mean exactly
    what `rule` means, which `tests/test_api_validation.py` verifies by evaluating both.
    """

    rule: str
    message: str
    field_path: str
    check: Callable[[Any], bool]

    def schema(self) -> dict[str, str]:
        rule = {"rule": self.rule, "message": self.message}
        # The API server resolves fieldPath against the schema, where metadata has no properties.
        if not self.field_path.startswith(".metadata"):
            rule["fieldPath"] = self.field_path
        return rule


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors, not silently lost."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", allow_inf_nan=False)

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        for rule in self.cel_rules:
            if not rule.check(self):
                # The field path travels in the error context, so messages name the exact field.
                raise PydanticCustomError(
                    "cel_rule", "{message}", {"message": rule.message, "field_path": rule.field_path}
                )
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema: dict[str, Any] = handler(core_schema)
        if cls.cel_rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [r.schema() for r in cls.cel_rules]
        return schema


class PartitioningType(str, Enum):
    IID = "iid"
    DIRICHLET = "dirichlet"


class CleanPolicy(str, Enum):
    """What goes when the job finishes. `Clients` keeps the server pod, its logs and final model."""

    CLIENTS = "Clients"
    ALL = "All"
    NONE = "None"


class ServiceType(str, Enum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class KubernetesObject(ApiModel):
    """A Kubernetes core type in the job's spec, its model generated (`kubeflower.core.corev1`)."""

    def wire(self) -> dict[str, Any]:
        """As the pod spec carries it (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


if TYPE_CHECKING:  # built at import time from corev1.json; to the type checker, each is a KubernetesObject
    EnvVar: TypeAlias = KubernetesObject
    Toleration: TypeAlias = KubernetesObject
    Affinity: TypeAlias = KubernetesObject
    ResourceRequirements: TypeAlias = KubernetesObject
    TopologySpreadConstraint: TypeAlias = KubernetesObject
    LabelSelector: TypeAlias = KubernetesObject
    NetworkPolicyPeer: TypeAlias = KubernetesObject
    NetworkPolicyEgressRule: TypeAlias = KubernetesObject
    Volume: TypeAlias = KubernetesObject
    VolumeSource: TypeAlias = KubernetesObject
    VolumeMount: TypeAlias = KubernetesObject
    LocalObjectReference: TypeAlias = KubernetesObject
else:
    EnvVar = corev1.model("EnvVar", KubernetesObject)
    Toleration = corev1.model("Toleration", KubernetesObject)
    Affinity = corev1.model("Affinity", KubernetesObject)
    ResourceRequirements = corev1.model("ResourceRequirements", KubernetesObject)
    TopologySpreadConstraint = corev1.model("TopologySpreadConstraint", KubernetesObject)
    LabelSelector = corev1.model("LabelSelector", KubernetesObject)
    NetworkPolicyPeer = corev1.model("NetworkPolicyPeer", KubernetesObject)
    NetworkPolicyEgressRule = corev1.model("NetworkPolicyEgressRule", KubernetesObject)
    Volume = corev1.model("Volume", KubernetesObject)
    VolumeSource = corev1.model("VolumeSource", KubernetesObject)
    VolumeMount = corev1.model("VolumeMount", KubernetesObject)
    LocalObjectReference = corev1.model("LocalObjectReference", KubernetesObject)

_RESERVED_CEL = " && ".join(f"!self.name.startsWith('{p}')" for p in RESERVED_ENV_PREFIXES)
EnvVar.cel_rules = (
    CelRule(
        rule=_RESERVED_CEL,
        message=(
            "KUBEFLOWER_* and FLWR_* variables are set by the operator (partition, addresses, Flower's own "
            "settings); rename it (OMP_NUM_THREADS and other variables stay yours)"
        ),
        field_path=".name",
        check=lambda env: not env.name.startswith(RESERVED_ENV_PREFIXES),
    ),
)


_ONE_SOURCE = CelRule(
    rule=" + ".join(f"(has(self.{t}) ? 1 : 0)" for t in RESTRICTED_VOLUME_TYPES) + " == 1",
    message="give exactly one volume type: one of " + ", ".join(RESTRICTED_VOLUME_TYPES),
    field_path="",
    check=lambda v: len(set(v.wire()) & set(RESTRICTED_VOLUME_TYPES)) == 1,
)
VolumeSource.cel_rules = (_ONE_SOURCE,)
Volume.cel_rules = (
    _ONE_SOURCE,
    CelRule(
        rule="!(self.name in " + str(list(POD_VOLUMES)) + ")",
        message=f"volume names {', '.join(POD_VOLUMES)} are the operator's own; rename it",
        field_path=".name",
        check=lambda v: v.name not in POD_VOLUMES,
    ),
)


def _outside_ours(path: str) -> bool:
    return not any(path == ours or path.startswith(ours.rstrip("/") + "/") for ours in POD_VOLUMES.values())


VolumeMount.cel_rules = (
    CelRule(
        rule="!(self.name in " + str(list(POD_VOLUMES)) + ")",
        message="the operator's own volumes are mounted already; mount a volume of yours (volumes)",
        field_path=".name",
        check=lambda m: m.name not in POD_VOLUMES,
    ),
    CelRule(
        rule="self.mountPath.startsWith('/') && "
        + " && ".join(f"self.mountPath != '{p}' && !self.mountPath.startsWith('{p}/')" for p in POD_VOLUMES.values()),
        message=(
            f"mountPath must be absolute and outside the operator's own ({', '.join(POD_VOLUMES.values())}); "
            "choose another path"
        ),
        field_path=".mountPath",
        check=lambda m: m.mount_path.startswith("/") and _outside_ours(m.mount_path),
    ),
)


def _invalid(message: str) -> PydanticCustomError:
    """A field's error in our words (no "Value error," before it)."""
    return PydanticCustomError("invalid", "{message}", {"message": message})


def _restricted_types(value: Any, where: str) -> None:
    """Raises the error naming a volume type the restricted Pod Security Standard forbids (before
    the generic "extra inputs" error that the strict model would give for it)."""
    if not isinstance(value, dict):
        return
    for key in value:
        if key != "name" and key not in RESTRICTED_VOLUME_TYPES:
            raise _invalid(
                f"{where}: volume type {key!r} is not allowed by the restricted Pod Security Standard that every "
                f"pod of a job meets; use one of {', '.join(RESTRICTED_VOLUME_TYPES)} (for a share: a "
                "persistentVolumeClaim bound to it)"
            )


class PodSettings(ApiModel):
    """Scheduling and resources shared by the server pod and the client pods, and what a pod
    template carries beyond them; the operator's own fields (its containers' command, env and
    security context, its volumes and labels) always win."""

    resources: ResourceRequirements | None = None
    env: list[EnvVar] | None = Field(default=None, max_length=MAX_ENV)
    node_selector: dict[LabelKey, LabelValue] | None = Field(default=None, max_length=MAX_LIST)
    tolerations: list[Toleration] | None = Field(default=None, max_length=MAX_LIST)
    affinity: Affinity | None = None
    volumes: list[Volume] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description=(
            "More pod volumes (restricted Pod Security Standard types: configMap, csi, downwardAPI, emptyDir, "
            "ephemeral, persistentVolumeClaim, projected, secret); names other than the operator's own."
        ),
    )
    volume_mounts: list[VolumeMount] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description="Mounts of those volumes in the container, at paths other than the operator's.",
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(default=None, max_length=MAX_LIST)
    service_account_name: ObjectName | None = Field(
        default=None,
        description=(
            "The pod's service account. Named: its token is mounted (the pods never use it themselves: it is for "
            "what you add, a sidecar or workload identity). Unset: the namespace's default account, no token."
        ),
    )
    priority_class_name: ObjectName | None = None
    runtime_class_name: ObjectName | None = None
    labels: dict[LabelKey, LabelValue] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description="Pod labels, under the operator's own (which win on the same key).",
    )
    annotations: dict[LabelKey, AnnotationValue] | None = Field(
        default=None, max_length=MAX_LIST, description="Pod annotations."
    )
    topology_spread_constraints: list[TopologySpreadConstraint] | None = Field(
        default=None, max_length=16, description="The pod spec's topologySpreadConstraints."
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            # A mount of the operator's own volume is refused by VolumeMount's rule, not twice.
            rule=(
                "!has(self.volumeMounts) || self.volumeMounts.all(m, m.name in " + str(list(POD_VOLUMES)) + " || "
                "(has(self.volumes) && self.volumes.exists(v, v.name == m.name)))"
            ),
            message="every volumeMounts entry names a volume of volumes; add it there",
            field_path=".volumeMounts",
            check=lambda s: (
                {m.name for m in s.volume_mounts or []} - set(POD_VOLUMES) <= {v.name for v in s.volumes or []}
            ),
        ),
    )

    @field_validator("volumes", mode="before")
    @classmethod
    def _volume_types(cls, volumes: Any) -> Any:
        for volume in volumes if isinstance(volumes, list) else []:
            _restricted_types(volume, f"volume {volume.get('name')!r}" if isinstance(volume, dict) else "volume")
        return volumes


class VolumeSpec(ApiModel):
    """A volume the job does not own: a PersistentVolumeClaim by name, or any pod volume source."""

    claim_name: ObjectName | None = Field(
        default=None, description="A PersistentVolumeClaim in the job's namespace (never deleted)."
    )
    source: VolumeSource | None = Field(
        default=None,
        description=(
            "A pod volume source instead of a claim, as in a pod's volumes[] without its name ({csi: {...}}); "
            "restricted Pod Security Standard types only."
        ),
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="has(self.claimName) != has(self.source)",
            message="set exactly one of claimName (a PersistentVolumeClaim) and source (any volume source)",
            field_path=".claimName",
            check=lambda v: (v.claim_name is None) != (v.source is None),
        ),
    )

    @field_validator("source", mode="before")
    @classmethod
    def _source_types(cls, source: Any) -> Any:
        _restricted_types(source, "source")
        return source

    def volume(self, name: str, read_only: bool = False) -> dict[str, Any]:
        """The pod's `volumes[]` entry (`read_only`: a claim mounted read-only, as the mount is)."""
        if self.claim_name is not None:
            claim: dict[str, Any] = {"claimName": self.claim_name, **({"readOnly": True} if read_only else {})}
            return {"name": name, "persistentVolumeClaim": claim}
        return {**(self.source.wire() if self.source else {}), "name": name}

    def describe(self) -> str:
        """Where the volume is, in words (the job's status)."""
        if self.claim_name is not None:
            return f"persistentVolumeClaim {self.claim_name}"
        return f"volume {', '.join(sorted(self.source.wire() if self.source else {})) or 'source'}"


class ServerSpec(PodSettings):
    pass


class ClientsSpec(PodSettings):
    replicas: int = Field(default=2, ge=1, le=MAX_CLIENTS, description="Number of client pods (SuperNodes).")
    warm_client_apps: bool = Field(
        default=True,
        description=(
            "Fork each ClientApp message's process from a fork server that has already imported torch, Flower and "
            "the app's declared modules (tool.kubeflower.preload), instead of starting a fresh Python per message: "
            "about 0.2 instead of 3.3 CPU-seconds a message, for about 0.5 GB more memory per client pod. "
            "false: Flower's stock process per message."
        ),
    )
    topology_spread_constraints: list[TopologySpreadConstraint] | None = Field(  # PodSettings', the clients' default
        default=None,
        max_length=16,
        description=(
            "How the client pods spread over the cluster (pod spec's topologySpreadConstraints). Unset: a soft "
            "spread over nodes (kubernetes.io/hostname, ScheduleAnyway); set, even to [], it replaces that default."
        ),
    )


class StrategySpec(ApiModel):
    """The Flower strategy and its own parameters (each accepted only by the strategies that use it)."""

    name: StrategyName = StrategyName.FED_AVG
    fraction_train: float = Field(default=1.0, gt=0, le=1, description="Share of clients sampled to train each round.")
    fraction_evaluate: float = Field(default=1.0, ge=0, le=1, description="Share of clients sampled to evaluate.")
    min_available_clients: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CLIENTS,
        description="Clients that must be connected before a round starts; defaults to clients.replicas.",
    )
    proximal_mu: float | None = Field(default=None, ge=0, le=1000, description="FedProx: weight of the proximal term.")
    server_learning_rate: float | None = Field(
        default=None, gt=0, le=1000, description="FedAvgM: server-side learning rate."
    )
    server_momentum: float | None = Field(default=None, ge=0, lt=1, description="FedAvgM: server-side momentum.")
    eta: float | None = Field(
        default=None, gt=0, le=1000, description="FedAdam, FedYogi, FedAdagrad: server learning rate."
    )
    eta_l: float | None = Field(
        default=None, gt=0, le=1000, description="FedAdam, FedYogi, FedAdagrad: client learning rate."
    )
    beta1: float | None = Field(default=None, ge=0, lt=1, description="FedAdam, FedYogi: first moment decay.")
    beta2: float | None = Field(default=None, ge=0, lt=1, description="FedAdam, FedYogi: second moment decay.")
    tau: float | None = Field(default=None, gt=0, le=1000, description="FedAdam, FedYogi, FedAdagrad: adaptivity.")
    beta: float | None = Field(default=None, gt=0, lt=0.5, description="FedTrimmedAvg: fraction cut at each end.")
    num_malicious_clients: int | None = Field(
        default=None, ge=0, le=MAX_CLIENTS, description="Krum, MultiKrum, Bulyan."
    )
    num_clients_to_keep: int | None = Field(
        default=None, ge=1, le=MAX_CLIENTS, description="MultiKrum: updates averaged."
    )

    def parameters(self) -> dict[str, Any]:
        """The strategy's own parameters that are set, by wire name."""
        wire = self.model_dump(by_alias=True, exclude_none=True)
        return {k: v for k, v in wire.items() if k in STRATEGY_PARAMETERS}


def _parameter_rule(param: str, strategies: tuple[StrategyName, ...]) -> CelRule:
    names = [s.value for s in strategies]
    attr = re.sub(r"(?<!^)(?=[A-Z])", "_", param).lower()
    cel_names = ", ".join(f"'{n}'" for n in names)

    def check(strategy: Any) -> bool:
        return getattr(strategy, attr) is None or strategy.name.value in names

    return CelRule(
        rule=f"!has(self.{param}) || self.name in [{cel_names}]",
        message=f"{param} applies only to strategy {' or '.join(names)}; remove it or change strategy.name",
        field_path=f".{param}",
        check=check,
    )


StrategySpec.cel_rules = tuple(_parameter_rule(name, p.strategies) for name, p in STRATEGY_PARAMETERS.items())


def _model_rule(model: ModelName) -> CelRule:
    datasets = datasets_for(model)
    names = [d.value for d in datasets]
    shape = "x".join(map(str, MODEL_INPUTS[model]))
    return CelRule(
        rule=f"self.model != '{model.value}' || self.dataset in [{', '.join(repr(n) for n in names)}]",
        message=f"model {model.value} needs {shape} images: use dataset {' or '.join(names)}, or model auto",
        field_path=".model",
        check=lambda t: t.model != model or t.dataset in datasets,
    )


class Partitioning(ApiModel):
    type: PartitioningType = PartitioningType.IID
    alpha: float = Field(default=0.5, gt=0, le=1000, description="Dirichlet concentration; smaller is more skewed.")
    seed: int = Field(
        default=42, ge=0, le=MAX_SEED, description="Seed of the split: the same seed gives the same partitions."
    )


class TaskSpec(ApiModel):
    """The built-in Flower App: a model trained on a dataset split across the clients."""

    model: ModelName = ModelName.AUTO
    dataset: DatasetName = DatasetName.DIGITS
    partitioning: Partitioning = Field(default_factory=Partitioning)
    local_epochs: int = Field(default=1, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=65536)
    learning_rate: float = Field(default=0.05, gt=0, le=10)
    test_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of each client's data held out to evaluate."
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of model initialisation and training order.")
    fused_train_evaluate: bool = Field(
        default=True,
        description=(
            "One message per round that evaluates the received model, then trains it (each message starts a "
            "process on every client); false: separate train and evaluate messages, as Flower's strategies send."
        ),
    )

    # Each model takes the data sets of its input shape (`kubeflower.core.vocabulary`).
    cel_rules: ClassVar[tuple[CelRule, ...]] = tuple(_model_rule(m) for m in MODEL_INPUTS)


_HIDDEN = tuple(contract.POD_FOLDERS.values())
"""Where the pods' volumes hide an image's files."""


def _visible(path: str) -> bool:
    return not any(path == hidden or path.startswith(f"{hidden}/") for hidden in _HIDDEN)


class AppSpec(ApiModel):
    """Bring your own Flower App, baked into `image`."""

    path: str = Field(
        min_length=1,
        max_length=4096,
        description=(
            "Directory of the Flower App project (its pyproject.toml) in the image; not where the pods' volumes "
            "hide the image's files (/tmp, /var/lib/kubeflower/output, data or flwr)."
        ),
    )
    run_config: dict[RunConfigKey, RunConfigValue] | None = Field(
        default=None, max_length=MAX_LIST, description="Overrides of the app's run config."
    )
    rounds_key: str = Field(
        default=contract.RUN_CONFIG_ROUNDS,
        min_length=1,
        max_length=253,
        description=(
            "The app's run-config key for its number of rounds, which spec.rounds sets; the app must declare it "
            "in [tool.flwr.app.config] (Flower's templates name it num-server-rounds)."
        ),
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule=" && ".join(f"self.path != '{hidden}' && !self.path.startsWith('{hidden}/')" for hidden in _HIDDEN),
            message=(
                f"path is hidden in the pods: their volumes are mounted at {', '.join(_HIDDEN)}; "
                "put the app elsewhere in the image (e.g. /app)"
            ),
            field_path=".path",
            check=lambda a: _visible(a.path),
        ),
        CelRule(
            rule="!has(self.runConfig) || !(self.roundsKey in self.runConfig)",
            message="the number of rounds is spec.rounds: remove the app's rounds key (roundsKey) from app.runConfig",
            field_path=".runConfig",
            check=lambda a: a.rounds_key not in (a.run_config or {}),
        ),
    )


ACCURACY_NAMES: Final = (
    "accuracy",
    "acc",
    "eval_acc",
    "eval_accuracy",
    "test_acc",
    "test_accuracy",
    "val_acc",
    "val_accuracy",
)
LOSS_NAMES: Final = ("loss", "eval_loss", "test_loss", "val_loss")
TRAIN_LOSS_NAMES: Final = ("train_loss", "loss")
MetricKind = Literal["accuracy", "loss", "train_loss"]


class MetricNames(ApiModel):
    """Which metrics are the job's accuracy and loss (ACCURACY column, kubeflower run's table and plot)."""

    accuracy: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Unset: the first of " + ", ".join(ACCURACY_NAMES) + " that the app reports.",
    )
    loss: str | None = Field(
        default=None, min_length=1, max_length=253, description="Unset: the first of " + ", ".join(LOSS_NAMES) + "."
    )

    def pick(self, kind: MetricKind, metrics: dict[str, float]) -> str | None:
        """The name among `metrics` that is the job's `kind` (train_loss: in training metrics), or None."""
        if kind == "train_loss":
            candidates: tuple[str, ...] = (*TRAIN_LOSS_NAMES, *((self.loss,) if self.loss else ()))
        else:
            chosen = self.accuracy if kind == "accuracy" else self.loss
            candidates = (chosen,) if chosen else ACCURACY_NAMES if kind == "accuracy" else LOSS_NAMES
        return next((name for name in candidates if name in metrics), None)


class RunPolicy(ApiModel):
    clean_policy: CleanPolicy = Field(
        default=CleanPolicy.CLIENTS, description="Children removed when the job finishes."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, le=MAX_SECONDS, description="Delete the job this long after it finishes."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, le=MAX_SECONDS, description="Fail the job when it runs longer than this."
    )
    backoff_limit: int = Field(default=3, ge=0, le=1000, description="Server restarts tolerated before the job fails.")
    suspend: bool = Field(default=False, description="Scale the federation to zero and keep the job.")


class ServiceSpec(ApiModel):
    type: ServiceType = ServiceType.CLUSTER_IP


DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A DNS subdomain (RFC 1123): an object's name in most kinds, an API group."""


class IssuerRef(ApiModel):
    """A cert-manager issuer, in the shape of cert-manager's own `issuerRef` (name, kind, group)."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="The issuer's name.")
    kind: str = Field(
        default="Issuer",
        min_length=1,
        max_length=63,
        pattern=r"^[A-Z][A-Za-z0-9]*$",
        description=("Issuer (in the job's namespace) or ClusterIssuer; an external issuer's own kind with its group."),
    )
    group: str = Field(
        default="cert-manager.io",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="The issuer's API group: cert-manager.io, or an external issuer's.",
    )


class SecuritySpec(ApiModel):
    """TLS and SuperNode authentication with keys made for the job (Secrets owned by the job)."""

    enabled: bool = Field(
        default=True,
        description=(
            "TLS on every Flower connection and SuperNode authentication, with a CA, a server certificate and one "
            "key pair per client made for this job (the certificate from issuerRef's issuer when set). false: plain "
            "HTTP and no authentication, for ClusterIP jobs "
            "only (refused with NodePort or LoadBalancer). Flower's Control API stays inside the server pod either way."
        ),
    )
    server_names: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        default=None,
        max_length=16,
        description=(
            "More DNS names or IP addresses for the server certificate, beside the Service's own names: the "
            "address clients outside the cluster dial (a LoadBalancer's name or IP, a node's address)."
        ),
    )
    issuer_ref: IssuerRef | None = Field(
        default=None,
        description=(
            "A cert-manager issuer that signs the server certificate instead of a CA made for the job: the "
            "operator creates a cert-manager Certificate (JOB-server) whose Secret (JOB-server-cert) the server "
            "mounts and whose ca.crt the clients trust, so the issuer must put ca.crt in the Secret (CA and Vault "
            "issuers do, ACME issuers do not). cert-manager renews it. The clients' authentication keys are still "
            "made by the operator."
        ),
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="!has(self.issuerRef) || self.enabled",
            message=(
                "security.issuerRef names the issuer of a TLS certificate, and security.enabled: false turns TLS "
                "off; remove security.issuerRef or security.enabled: false"
            ),
            field_path=".issuerRef",
            check=lambda s: s.issuer_ref is None or s.enabled,
        ),
    )


class NetworkPolicySpec(ApiModel):
    """Who may reach the job's pods, and whom its clients may reach (NetworkPolicy peers and rules)."""

    fleet_from: list[NetworkPolicyPeer] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description=(
            "NodePort and LoadBalancer jobs: the NetworkPolicy peers (ipBlock, namespaceSelector, podSelector) "
            "allowed to reach the Flower port, where the clients live outside the cluster. Unset: from everywhere. "
            "The job's own client pods are always allowed."
        ),
    )
    monitoring_namespace_selector: LabelSelector | None = Field(
        default=None,
        description=(
            "A namespaceSelector whose namespaces may read the server's status port (Prometheus), beside the "
            "operator's own namespace."
        ),
    )
    client_egress: list[NetworkPolicyEgressRule] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description=(
            "More egress rules for the client pods (NetworkPolicyEgressRule), e.g. to download a data set. By default "
            "they reach only their server's Flower port and DNS."
        ),
    )


_BUILTIN_STRATEGY_RULE = " && ".join(
    [
        "(!has(self.strategy.name) || self.strategy.name == 'FedAvg')",
        "(!has(self.strategy.fractionTrain) || self.strategy.fractionTrain == 1.0)",
        "(!has(self.strategy.fractionEvaluate) || self.strategy.fractionEvaluate == 1.0)",
        *(f"!has(self.strategy.{param})" for param in STRATEGY_PARAMETERS),
    ]
)


def _default_strategy(strategy: StrategySpec) -> bool:
    """Nothing but minAvailableClients differs from the defaults (what the CRD's `{}` gives)."""
    return strategy.model_dump(exclude={"min_available_clients"}) == StrategySpec().model_dump(
        exclude={"min_available_clients"}
    )


def _min_clients_ok(spec: FederatedTrainingJobSpec) -> bool:
    m = spec.strategy.min_available_clients
    return m is None or m <= spec.clients.replicas


class FederatedTrainingJobSpec(ApiModel):
    image: str | None = Field(
        default=None,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="Workload image; defaults to the operator's configured image.",
    )
    rounds: int = Field(default=3, ge=1, le=MAX_ROUNDS)
    clients: ClientsSpec = Field(default_factory=ClientsSpec)
    server: ServerSpec = Field(default_factory=ServerSpec)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    task: TaskSpec | None = None
    app: AppSpec | None = None
    metric_names: MetricNames = Field(default_factory=MetricNames)
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    security: SecuritySpec = Field(default_factory=SecuritySpec)
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    data: VolumeSpec | None = Field(
        default=None,
        description=(
            "A read-only data volume shared by the clients, holding the data sets (torchvision's layout: "
            "cifar-10-batches-py/, MNIST/): the built-in app reads them there instead of downloading them into "
            "each client pod. A ReadWriteOnce claim cannot be shared by clients on several nodes: use ReadOnlyMany "
            "or ReadWriteMany. Unset: an emptyDir per client pod, filled by a download."
        ),
    )
    output: VolumeSpec | None = Field(
        default=None,
        description=(
            "Where the server writes the results (final model, metrics.json, logs, a checkpoint per round): "
            "a volume that outlives the server pod, so a restarted server resumes and the results survive the job. "
            "Unset: an emptyDir, lost with the server pod."
        ),
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="has(self.task) != has(self.app)",
            message="set exactly one of task (the built-in app) and app (your own Flower App)",
            field_path=".task",
            check=lambda s: (s.task is None) != (s.app is None),
        ),
        CelRule(
            rule=(
                "!has(self.strategy.minAvailableClients) || self.strategy.minAvailableClients <= self.clients.replicas"
            ),
            message=(
                "strategy.minAvailableClients must not exceed clients.replicas, or no round can start; "
                "lower it or add replicas"
            ),
            field_path=".strategy.minAvailableClients",
            check=_min_clients_ok,
        ),
        CelRule(
            rule="self.strategy.name != 'Bulyan' || self.clients.replicas >= 5",
            message=(
                "Bulyan needs at least 5 clients (4f+3 with f >= 0 plus margin); add replicas or change strategy.name"
            ),
            field_path=".strategy.name",
            check=lambda s: s.strategy.name != StrategyName.BULYAN or s.clients.replicas >= 5,
        ),
        CelRule(
            rule=(
                "!has(self.security) || self.security.enabled || !has(self.service) || self.service.type == 'ClusterIP'"
            ),
            message=(
                "security.enabled: false is refused with a NodePort or LoadBalancer service: Flower would be "
                "reachable from outside the cluster without TLS or SuperNode authentication; remove "
                "security.enabled or use service.type ClusterIP"
            ),
            field_path=".security.enabled",
            check=lambda s: s.security.enabled or s.service.type == ServiceType.CLUSTER_IP,
        ),
        CelRule(
            rule="!has(self.app) || (" + _BUILTIN_STRATEGY_RULE + ")",
            message=(
                "strategy applies to the built-in app (task) only, except minAvailableClients: your own app builds "
                "its strategy in its code; remove the other strategy fields and pass values through app.runConfig"
            ),
            field_path=".strategy",
            check=lambda s: s.app is None or _default_strategy(s.strategy),
        ),
        CelRule(
            rule="!has(self.app) || has(self.image)",
            message="app needs image: your Flower App is baked into your own image",
            field_path=".image",
            check=lambda s: s.app is None or s.image is not None,
        ),
    )

    @property
    def min_available_clients(self) -> int:
        return self.strategy.min_available_clients or self.clients.replicas


def name_ok(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and re.match(NAME_PATTERN, name) is not None


NAME_RULE = CelRule(
    rule=f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && self.metadata.name.matches('{NAME_PATTERN}')",
    message=(
        f"must be a DNS label of at most {MAX_NAME_LENGTH} characters starting with a letter, "
        f"so that its children (<name>{LONGEST_CHILD_SUFFIX}) are valid names; choose a shorter name"
    ),
    field_path=".metadata.name",
    check=lambda job: name_ok(job.metadata.name),
)


class ObjectMeta(BaseModel):
    """The parts of metadata the API needs; everything else passes through."""

    model_config = ConfigDict(extra="allow")

    name: str
    namespace: str | None = None
    uid: str | None = None

    @field_validator("name")
    @classmethod
    def _name_rule(cls, name: str) -> str:
        # Checked here too, not only on the job, so a bad name is reported beside spec errors.
        if not name_ok(name):
            raise PydanticCustomError("cel_rule", "{message}", {"message": NAME_RULE.message, "field_path": ""})
        return name


class Condition(ApiModel):
    """metav1.Condition."""

    model_config = ConfigDict(extra="ignore")

    type: str
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = None
    last_transition_time: str
    reason: str
    message: str = ""


class JobMetrics(ApiModel):
    """The last round's metrics by name; accuracy and loss are the ones spec.metricNames picks."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float] = Field(init=False)

    loss: float | None = None
    accuracy: float | None = None


class FederatedTrainingJobStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    phase: Phase | None = None
    conditions: list[Condition] | None = None
    current_round: int | None = None
    total_rounds: int | None = None
    round: str | None = Field(default=None, description="currentRound/totalRounds, for the ROUND column.")
    clients: str | None = Field(
        default=None,
        description=(
            "connected/desired clients, for the CLIENTS column: the SuperNodes the SuperLink sees connected "
            "(ready client pods until the server answers)."
        ),
    )
    replicas: int | None = Field(default=None, description="Ready client pods (scale subresource).")
    selector: str | None = Field(default=None, description="Label selector of the client pods (scale subresource).")
    metrics: JobMetrics | None = None
    server_address: str | None = None
    server_restarts: int | None = Field(
        default=None, description="Server restarts, container restarts and re-created pods (eviction, node loss) alike."
    )
    server_pod: str | None = Field(
        default=None,
        description="UID of the server pod the restart count follows ('!' + UID: a new pod is expected after it).",
    )
    server_pod_restarts: int | None = Field(default=None, description="Container restarts of that pod, last seen.")
    partitions: int | None = Field(
        default=None, description="Shards the data is split into: the client replicas when the clients were made."
    )
    status_failing_since: str | None = Field(
        default=None, description="Since when the server's status document has been unreadable (the failure clock)."
    )
    results: str | None = Field(default=None, description="Where the server writes the job's results.")
    resumed_round: int | None = Field(
        default=None, description="The last round a restarted server resumed after (from its checkpoint)."
    )
    start_time: str | None = None
    completion_time: str | None = None
    reason: str | None = None
    message: str | None = None

    def wire(self) -> dict[str, Any]:
        """The status as the API server stores it (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class FederatedTrainingJob(ApiModel):
    model_config = ConfigDict(extra="ignore")

    api_version: Literal["kubeflower.io/v1alpha1"] = API_VERSION  # mypy checks the two agree
    kind: Literal["FederatedTrainingJob"] = KIND
    metadata: ObjectMeta
    spec: FederatedTrainingJobSpec
    status: FederatedTrainingJobStatus | None = None

    cel_rules: ClassVar[tuple[CelRule, ...]] = (NAME_RULE,)
