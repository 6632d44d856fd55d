"""The API model, the generated CRD and validation: every invalid job is caught by every layer."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from kubeflower import cli
from kubeflower.core.api import FederatedTrainingJob
from kubeflower.core.crd import crd
from kubeflower.core.validation import JobInvalid, parse_job
from kubeflower.core.vocabulary import STRATEGY_PARAMETERS, DatasetName, ModelName
from testbed.jobs import INVALID, invalid_job, job

ROOT = Path(__file__).resolve().parents[1]
CRD_FILE = ROOT / "crds" / "federatedtrainingjobs.kubeflower.io.yaml"


def schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_is_generated_from_the_model() -> None:
    committed = yaml.safe_load(CRD_FILE.read_text())
    assert committed == crd(), "crds/ is stale: run `make crd` and commit the result"


def _walk(node: dict[str, Any], path: str = "") -> Any:
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_crd_schema_is_structural() -> None:
    """Every node has a type (or is int-or-string / preserve-unknown-fields); no refs, no nulls."""
    for path, node in _walk(schema()):
        assert ("$ref" not in node and "anyOf" not in node) or node.get("x-kubernetes-int-or-string"), path
        assert (
            node.get("type")
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), f"{path} has no type"
        assert node.get("type") != "null", path


def test_crd_names_subresources_and_columns() -> None:
    spec = crd()["spec"]
    assert spec["names"]["shortNames"] == ["ftj"] and spec["scope"] == "Namespaced"
    version = spec["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.clients.replicas"
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Round"] == ".status.round" and columns["Clients"] == ".status.clients"
    assert columns["Accuracy"] == ".status.metrics.accuracy" and columns["Age"] == ".metadata.creationTimestamp"


def test_defaults_live_in_the_schema() -> None:
    spec_props = schema()["properties"]["spec"]["properties"]
    assert spec_props["rounds"]["default"] == 3
    assert spec_props["clients"]["properties"]["replicas"]["default"] == 2
    assert spec_props["strategy"]["properties"]["name"]["default"] == "FedAvg"
    assert spec_props["runPolicy"]["properties"]["cleanPolicy"]["default"] == "Clients"
    assert spec_props["service"]["properties"]["type"]["default"] == "ClusterIP"


# --- the API server, as far as these tests need it: defaulting, strict fields, schema, CEL ---


def _default(node: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in node:
        for name, prop in node["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = _default(prop, value[name])
    return value


def _strict(node: Any) -> Any:
    """fieldValidation=Strict (kubectl's default): unknown fields are errors, not pruned."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "metadata" not in node["properties"]
    ):
        out["additionalProperties"] = False
    return out


def _cel_errors(node: dict[str, Any], value: Any, path: str) -> list[str]:
    errors = []
    env = celpy.Environment()
    for rule in node.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            errors.append(f"{path}{rule.get('fieldPath', '.metadata.name' if not path else '')}: {rule['message']}")
    if isinstance(value, dict):
        for name, prop in node.get("properties", {}).items():
            if name in value:
                errors += _cel_errors(prop, value[name], f"{path}.{name}")
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            errors += _cel_errors(node["items"], item, f"{path}[{i}]")
    return errors


def _error_path(error: jsonschema.ValidationError) -> str:
    """The error's field as the API server names it (`spec.env[0].name`); an unknown field by its
    own name, as the API server's strict field validation does (`unknown field "spec.x.bogus"`)."""
    parts = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        parts.append(sorted(set(error.instance) - known)[0])
    if error.validator == "required" and isinstance(error.instance, dict):
        parts.append(next(name for name in error.validator_value if name not in error.instance))
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# The API server decodes JSON numbers as Go does: 2.0 is a float, refused where an integer is due.
_API_SERVER_TYPES = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    type_checker=jsonschema.Draft7Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


def api_server_errors(document: dict[str, Any]) -> list[str]:
    """What a real API server would answer to `kubectl apply` of the document, as field paths."""
    s = schema()
    value = _default(s, copy.deepcopy(document))
    validator = _API_SERVER_TYPES(_strict(s))
    errors = [f"{_error_path(e)} {e.message}"[:300] for e in validator.iter_errors(value)]
    return errors if errors else [e.lstrip(".") for e in _cel_errors(s, value, "")]


def test_the_valid_job_passes_every_layer() -> None:
    assert api_server_errors(job()) == []
    assert parse_job(job()).spec.clients.replicas == 2


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_job_is_rejected_by_the_model(case: tuple[str, list[Any], str]) -> None:
    _, mutations, field = case
    with pytest.raises(JobInvalid) as caught:
        parse_job(invalid_job(mutations))
    assert field in [e.path for e in caught.value.errors], caught.value.errors


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_job_is_rejected_by_the_crd_schema(case: tuple[str, list[Any], str]) -> None:
    _, mutations, field = case
    errors = api_server_errors(invalid_job(mutations))
    assert errors, "the CRD schema accepted an invalid job"
    # jsonschema reports the path without the leading root; CEL errors carry the full path.
    assert any(e.startswith(field) for e in errors), errors


PARAMETER_VALUES = {
    "proximalMu": 0.1,
    "serverLearningRate": 1.0,
    "serverMomentum": 0.9,
    "eta": 0.1,
    "etaL": 0.1,
    "beta1": 0.9,
    "beta2": 0.99,
    "tau": 0.001,
    "beta": 0.2,
    "numMaliciousClients": 0,
    "numClientsToKeep": 1,
}


def _with_strategy(strategy: str, **fields: Any) -> dict[str, Any]:
    document = job()
    document["spec"]["strategy"] = {"name": strategy, **fields}
    document["spec"]["clients"] = {"replicas": 5}  # enough for every strategy (Bulyan)
    return document


def cel_corpus() -> list[dict[str, Any]]:
    """Jobs for every rule, valid and invalid: each strategy parameter with each strategy."""
    documents = [job(), job(image=""), *(invalid_job(m) for _, m, _ in INVALID)]
    for parameter, accepted in STRATEGY_PARAMETERS.items():
        value = PARAMETER_VALUES[parameter]  # a KeyError: a new parameter needs a value here
        documents += [_with_strategy(name, **{parameter: value}) for name in ("FedAvg", "Krum")]
        documents += [_with_strategy(s.value, **{parameter: value}) for s in accepted.strategies]
    for model in ModelName:  # every model with every data set
        for dataset in DatasetName:
            document = job()
            document["spec"]["task"] = {"model": model.value, "dataset": dataset.value}
            documents.append(document)
    return documents


def test_cel_rules_mean_what_their_python_mirror_means() -> None:
    """Each CelRule's CEL text and Python check agree on valid and invalid jobs alike."""
    documents = cel_corpus()
    broken: set[str] = set()
    for document in documents:
        try:
            parse_job(document)
            model_ok = True
        except JobInvalid as exc:
            model_ok = False
            rule_paths = {e.path for e in exc.errors}
        cel = api_server_errors(document)
        # Both directions: the API server accepts exactly what the model accepts ...
        assert (cel == []) == model_ok, (document, cel)
        if not model_ok and not any(" " in e.split(":")[0] for e in cel):
            # ... and where only CEL rules fail, the same fields fail in the model and in the CRD.
            assert {e.split(":")[0] for e in cel} == rule_paths, (cel, rule_paths)
        broken |= {e.split(": ", 1)[1] for e in cel if ": " in e}
    # Each rule of the CRD was seen failing (on the document written to break it), so none goes unchecked.
    assert set(_cel_messages(schema())) <= broken, set(_cel_messages(schema())) - broken


def _cel_messages(node: Any) -> list[str]:
    if isinstance(node, list):
        return [m for n in node for m in _cel_messages(n)]
    if not isinstance(node, dict):
        return []
    own = [rule["message"] for rule in node.get("x-kubernetes-validations", [])]
    return own + [m for key, value in node.items() if key != "x-kubernetes-validations" for m in _cel_messages(value)]


def test_validate_cli_names_every_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    documents = [job()] + [invalid_job(m, name=f"bad-{i}") for i, (_, m, _) in enumerate(INVALID)]
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    assert cli.main(["validate", str(path)]) == 1
    out = capsys.readouterr()
    assert "job digits-fedavg is valid" in out.out
    assert "Traceback" not in out.err
    sections = dict(re.findall(r"\(document (\d+), job [^)]*\): invalid\n((?:  .*\n)+)", out.err))
    for i, (_, _, field) in enumerate(INVALID):
        assert f"  {field}:" in sections[str(i + 2)], sections.get(str(i + 2))


def test_validate_cli_accepts_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job()))
    assert cli.main(["validate", str(path)]) == 0


def test_bad_yaml_and_missing_file_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("spec: [unclosed")
    assert cli.main(["validate", str(path)]) == 1
    assert "not valid YAML" in capsys.readouterr().err
    assert cli.main(["render", str(tmp_path / "nope.yaml")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_model_round_trips_with_defaults() -> None:
    parsed = FederatedTrainingJob.model_validate(job())
    wire = parsed.model_dump(by_alias=True, exclude_none=True)
    assert wire["spec"]["strategy"]["name"] == "FedAvg" and wire["spec"]["runPolicy"]["backoffLimit"] == 3
    assert FederatedTrainingJob.model_validate(wire) == parsed


def test_crd_fits_client_side_apply() -> None:
    """`kubectl apply` (client-side) keeps the whole object as JSON in an annotation, capped at 256 KiB."""
    assert len(json.dumps(crd(), separators=(",", ":"))) < 256 * 1024


def test_every_spec_number_string_list_and_map_has_a_maximum() -> None:
    """Bounded input, and what keeps the API server's CEL cost estimate within its budget."""
    unbounded = []
    for path, node in _walk(schema()["properties"]["spec"], "spec"):
        kind = node.get("type")
        if node.get("x-kubernetes-int-or-string"):
            bounded = "maximum" in node and "maxLength" in node
        elif kind in ("integer", "number"):
            bounded = "maximum" in node or "exclusiveMaximum" in node
        elif kind == "string":
            bounded = "maxLength" in node or "enum" in node
        elif kind == "array":
            bounded = "maxItems" in node
        elif kind == "object" and isinstance(node.get("additionalProperties"), dict):
            bounded = "maxProperties" in node
        else:
            bounded = True
        if not bounded:
            unbounded.append(path)
    assert unbounded == []


def test_kubernetes_core_schemas_are_generated_from_the_client() -> None:
    """corev1.json is what scripts/corev1.py makes from the installed Kubernetes client."""
    spec = importlib.util.spec_from_file_location("corev1_script", ROOT / "scripts" / "corev1.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    committed = json.loads((ROOT / "kubeflower" / "core" / "corev1.json").read_text())
    assert committed == script.generate(), "run `make crd` and commit kubeflower/core/corev1.json"


def test_a_job_using_every_kubernetes_field_passes_every_layer() -> None:
    """The strict schemas refuse nonsense, not what a real job sets: secrets of its own namespace,
    OMP_NUM_THREADS, quantities in every form, tolerations, affinity, spread."""
    pod = {
        "env": [
            {"name": "OMP_NUM_THREADS", "value": "2"},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
            {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "1.5Gi"}, "limits": {"cpu": 2, "memory": "2e9"}},
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
                }
            }
        },
    }
    document = job(
        image="registry.example.com:5000/team/app:1.0",
        server=pod,
        clients={
            **pod,
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
        },
    )
    assert api_server_errors(document) == []
    parsed = parse_job(document)
    assert parsed.spec.clients.resources is not None
    assert parsed.spec.clients.resources.wire()["limits"] == {"cpu": 2, "memory": "2e9"}
