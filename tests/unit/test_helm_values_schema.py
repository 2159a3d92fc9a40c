"""The Helm chart's values schema, without helm or a cluster: it is valid JSON Schema, the
chart's values.yaml satisfies it, and it refuses what ``helm install`` must refuse (unknown
keys, wrong types, uid 0, secrets in the ConfigMap's config). tests/integration/
test_helm_chart.py checks the same through ``helm lint``/``template`` and installs the chart."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "kernelyard"


def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def errors(vals: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(vals)]


def test_schema_is_valid_json_schema() -> None:
    s = schema()
    assert s["$schema"].endswith("/draft/2020-12/schema")
    jsonschema.Draft202012Validator.check_schema(s)


def test_values_yaml_satisfies_the_schema() -> None:
    assert errors(values()) == []


def test_every_object_of_the_schema_is_strict() -> None:
    """Each group of values refuses unknown keys (free-form maps say what they hold)."""
    loose = []

    def walk(node: dict[str, Any], path: str) -> None:
        if "properties" in node and node.get("additionalProperties", True) is True:
            if path not in ("config",):  # config: {"Class": {...}}, any configurable class
                loose.append(path or "<top>")
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{key}".lstrip("."))
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")

    walk(schema(), "")
    assert loose == []


def with_change(path: str, value: Any) -> dict[str, Any]:
    vals = copy.deepcopy(values())
    *parents, last = path.split(".")
    node = vals
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return vals


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("imageTag", "1", "'imageTag' was unexpected"),
    ("image.tags", "1", "'tags' was unexpected"),
    ("port", "8888", "port: '8888' is not of type 'integer'"),
    ("auth.authenticators", "token", "auth.authenticators: 'token' is not of type 'array'"),
    ("kubernetes.userMap", {"alice": {"uid": 0}}, "kubernetes.userMap.alice.uid: 0 is less than"),
    ("kubernetes.namespace", "Kernels_NS", "kubernetes.namespace: 'Kernels_NS' does not match"),
    ("kubernetes.namespaceMode", "pod", "kubernetes.namespaceMode: 'pod' is not one of"),
    ("kernelspecs", {"py": {"displayName": "no image"}}, "'image' is a required property"),
    ("kernelspecs", {"Py/x": {"image": "k:1"}}, "'Py/x' does not match"),
    ("podSecurityContext.runAsUser", 0, "podSecurityContext.runAsUser: 0 is less than"),
    ("config", {"KernelyardApp": {"auth_token": "s3cret"}}, "config.KernelyardApp: "),
    ("config", {"ProxyHeaderAuthenticator": {"secret": "s3cret"}},
     "config.ProxyHeaderAuthenticator"),
    ("quotas.maxKernelsPerUser", -1, "quotas.maxKernelsPerUser: -1 is less than"),
])
def test_bad_values_are_refused_naming_the_key(path: str, value: Any, expected: str) -> None:
    found = errors(with_change(path, value))
    assert any(expected in e for e in found), found


def test_good_variations_pass() -> None:
    vals = with_change("kubernetes.userMap", {"alice": {"uid": 1001, "gid": 1001}})
    vals["kubernetes"]["namespaceMode"] = "user"
    vals["quotas"].update(maxKernelsPerUser=3, userMaxKernels={"alice": 5, "bob": None},
                          groupResourceLimits={"*": {"KERNEL_MEMORY": "2g", "KERNEL_GPUS": 0}})
    vals["kernelspecs"]["python-gpu"] = {"image": "k:1", "namespace": "gpu-kernels",
                                         "resourceLimits": {"KERNEL_GPUS": 1},
                                         "config": {"pod_template": {"spec": {}}}}
    vals["config"] = {"KernelyardApp": {"list_kernels": False}}
    assert errors(vals) == []


def test_the_chart_readme_documents_every_value_group() -> None:
    text = (CHART / "README.md").read_text()
    missing = [key for key in values() if f"`{key}" not in text]
    assert missing == []
