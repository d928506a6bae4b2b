"""infra/: every manifest parses, names an image built from this repository, runs job modules and
configs that exist with arguments their parsers accept, and asks for the resources its config
needs (GPUs for training, none for preprocessing)."""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from assynch.config import load_config

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
RAY_PIN = re.search(
    r'"ray\[[^\]]*\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text()
).group(1)  # type: ignore[union-attr]
OUR_IMAGE = re.compile(rf"^ghcr\.io/assynch/assynch:{re.escape(VERSION)}-(cpu|cuda)$")


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def all_infra_yaml() -> list[Path]:
    return sorted(INFRA.rglob("*.yaml"))


def walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def images_in(documents: list[dict[str, Any]]) -> list[str]:
    found = []
    for node in walk(documents):
        for key in ("image", "worker_image"):
            if isinstance(node.get(key), str):
                found.append(node[key])
    return found


def job_command(entrypoint: str) -> tuple[str, list[str]]:
    words = shlex.split(entrypoint)
    assert words[:2] == ["python", "-m"], f"entrypoint {entrypoint!r} is not `python -m MODULE`"
    return words[2], words[3:]


def argument_parser_accepts(module_name: str, args: list[str]) -> None:
    module = importlib.import_module(module_name)
    parse = getattr(module, "parse_args", None)
    assert parse is not None, f"{module_name} has no parse_args(argv) to check its arguments with"
    parse(args)  # argparse exits (SystemExit) on arguments it does not know


def config_of(args: list[str]) -> Path:
    config = Path(args[args.index("--config") + 1])
    assert (REPO / config).is_file(), f"config {config} named by infra/ does not exist"
    return config


def rayjobs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted((INFRA / "kuberay").glob("rayjob-*.yaml"))
        for doc in yaml_documents(path)
    ]


def group_resources(cluster_spec: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """(container limits, max replicas) of each worker group."""
    groups = []
    for group in cluster_spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        groups.append((limits, int(group.get("maxReplicas", group.get("replicas", 1)))))
    return groups


@pytest.mark.parametrize("path", all_infra_yaml(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_parses_and_names_only_our_images(path: Path) -> None:
    documents = yaml_documents(path)
    assert documents, f"{path} is empty"
    for image in images_in(documents):
        if "mlflow-server" in image:
            assert (INFRA / "mlflow" / "Dockerfile").is_file()
            continue
        assert OUR_IMAGE.match(image), f"{path.name}: image {image!r} is not built by infra/docker"


def test_the_image_recipe_builds_on_rays_image_of_the_pinned_version() -> None:
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    base = re.search(r"^ARG RAY_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base is not None and base.group(1) == f"rayproject/ray:{RAY_PIN}-py311-cpu"
    assert f"rayproject/ray:{RAY_PIN}-py311-gpu" in dockerfile  # the CUDA variant's build arg
    for copied in re.findall(r"^COPY \S+ (.+) \./", dockerfile, re.MULTILINE):
        for name in copied.split():
            assert (REPO / name).exists(), f"Dockerfile copies {name}, which does not exist"


@pytest.mark.parametrize(("name", "rayjob"), rayjobs(), ids=[name for name, _ in rayjobs()])
def test_rayjobs_run_existing_modules_and_configs_with_accepted_arguments(
    name: str, rayjob: dict[str, Any]
) -> None:
    spec = rayjob["spec"]
    module, args = job_command(spec["entrypoint"])
    assert module.startswith("pipelines."), module
    config = config_of(args)
    load_config(REPO / config, [])
    argument_parser_accepts(module, args)
    assert spec["rayClusterSpec"]["rayVersion"] == RAY_PIN


def test_resources_follow_the_config() -> None:
    jobs = {name: doc for name, doc in rayjobs()}
    preprocess = jobs["rayjob-preprocess.yaml"]["spec"]
    for limits, _ in group_resources(preprocess["rayClusterSpec"]):
        assert "nvidia.com/gpu" not in limits, "preprocessing decodes on CPUs only"
    train = jobs["rayjob-train.yaml"]["spec"]
    _, args = job_command(train["entrypoint"])
    config = load_config(REPO / config_of(args), [])
    assert config.train.use_gpu
    gpu_groups = [
        (limits, replicas) for limits, replicas in group_resources(train["rayClusterSpec"])
        if int(limits.get("nvidia.com/gpu", 0)) > 0
    ]
    assert gpu_groups, "training with train.use_gpu needs a GPU worker group"
    assert sum(replicas for _, replicas in gpu_groups) == config.train.num_workers, (
        "one GPU worker per Ray Train worker (train.num_workers)"
    )


def test_long_running_cluster_and_launcher_agree_with_the_jobs() -> None:
    (cluster,) = yaml_documents(INFRA / "kuberay" / "raycluster.yaml")
    assert cluster["spec"]["rayVersion"] == RAY_PIN
    kinds = {
        group["groupName"]: "nvidia.com/gpu" in limits
        for group, (limits, _) in zip(
            cluster["spec"]["workerGroupSpecs"], group_resources(cluster["spec"]), strict=True
        )
    }
    assert kinds == {"cpu-workers": False, "gpu-workers": True}
    (launcher,) = yaml_documents(INFRA / "aws" / "ray-cluster.yaml")
    types = launcher["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}
    assert types["gpu_worker"]["resources"]["GPU"] >= 1
    assert "GPU" not in types["cpu_worker"]["resources"]
    assert "IamInstanceProfile" in types["cpu_worker"]["node_config"]
    text = (INFRA / "aws" / "ray-cluster.yaml").read_text()
    assert not re.search(r"(?i)aws_secret_access_key|aws_access_key_id", text), "no keys in files"


def test_dagster_deployment_serves_the_dag_module() -> None:
    documents = yaml_documents(INFRA / "dagster" / "dagster.k8s.yaml")
    commands = [
        container["command"]
        for doc in documents if doc["kind"] == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]
    (code,) = [c for c in commands if c[:3] == ["dagster", "api", "grpc"]]
    module = code[code.index("--module-name") + 1]
    importlib.import_module(module)
    (env,) = [doc["data"] for doc in documents if doc["kind"] == "ConfigMap"]
    config = REPO / env["ASSYNCH_CONFIG"]
    assert config.is_file()
    assert load_config(config, []).preprocess.input.startswith("s3://")
    for path in ("infra/dagster/workspace.yaml", "infra/dagster/dagster.yaml"):
        assert (REPO / path).is_file()
