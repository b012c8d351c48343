"""cluster/: one Ray version everywhere, launcher + KubeRay manifests, runtime_env, scripts.

Nothing here reaches a cloud or a Docker engine. The AWS cluster config goes through Ray's own
``ray up`` config resolution (defaults, schema validation, instance-type resource detection,
IAM/subnet/security-group/key-pair bootstrap) against moto's in-process AWS; the shell scripts
run with fake ``ray``/``uv``/``docker`` executables first on PATH that record how they were called.
The ``slow`` test at the end starts a real head with cluster/local.sh and submits a job to it
with cluster/submit.sh.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from ray_head import free_port, head_port_args, own_pids, stop_pids

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
DOCKERFILE = CLUSTER / "docker" / "Dockerfile"
AWS_YAML = CLUSTER / "aws" / "cluster.yaml"
K8S = CLUSTER / "k8s"
RAYCLUSTER_YAML = K8S / "raycluster.yaml"
RAYJOB_YAMLS = {"fuse": K8S / "rayjob-fuse.yaml", "distill": K8S / "rayjob-distill.yaml"}
RUNTIME_ENV_YAML = CLUSTER / "runtime_env.yaml"
SUBMIT_SH = CLUSTER / "submit.sh"
LOCAL_SH = CLUSTER / "local.sh"
BUILD_PUSH_SH = CLUSTER / "docker" / "build_push.sh"
STAGES = ("fuse", "distill", "evaluate", "query")


# ----------------------------------------------------------------------------- helpers


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _doc(path: Path, kind: str) -> dict:
    found = [d for d in _docs(path) if d.get("kind") == kind]
    assert len(found) == 1, f"{path.name}: expected exactly one {kind}, found {len(found)}"
    return found[0]


def _raycluster_spec() -> dict:
    return _doc(RAYCLUSTER_YAML, "RayCluster")["spec"]


def _all_cluster_specs() -> dict[str, dict]:
    specs = {"raycluster.yaml": _raycluster_spec()}
    for stage, path in RAYJOB_YAMLS.items():
        specs[path.name] = _doc(path, "RayJob")["spec"]["rayClusterSpec"]
    return specs


def _pod_templates(spec: dict) -> dict[str, dict]:
    out = {"head": spec["headGroupSpec"]["template"]}
    for group in spec["workerGroupSpecs"]:
        out[group["groupName"]] = group["template"]
    return out


def _dockerfile_from() -> str:
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    finals = [f for f in froms if f.startswith("rayproject/")]
    assert len(finals) == 1, f"expected one rayproject/ base image, got {froms}"
    return finals[0]


def _diff(a, b, path="") -> list[str]:
    """Paths at which two parsed YAML trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'first' if key in a else 'second'}")
            else:
                out.extend(_diff(a[key], b[key], f"{path}.{key}"))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _fake_exe(bindir: Path, name: str, body: str) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    exe = bindir / name
    exe.write_text("#!/usr/bin/env bash\n" + body)
    exe.chmod(0o755)
    return exe


# A fake `ray`: answers --version like Ray 2.60.0 and records every other call (argv NUL-separated,
# plus the working directory and the auth-relevant environment) as one JSON line.
FAKE_RAY = r"""
if [[ "${1:-}" == "--version" ]]; then echo "ray, version 2.60.0"; exit 0; fi
python3 - "$@" <<'PY'
import json, os, sys
rec = {"argv": sys.argv[1:], "cwd": os.getcwd(),
       "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE")}
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(rec) + "\n")
PY
"""


def _calls(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _script_env(tmp_path: Path, bindir: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VIRTUAL_ENV"))}
    env.update(
        {
            "PATH": f"{bindir}:{os.environ['PATH']}",
            "HOME": str(home),
            "FAKE_LOG": str(tmp_path / "calls.jsonl"),
        }
    )
    env.update(extra)
    return env


def _run(cmd: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _git_sha() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


# ----------------------------------------------------------------------------- 1. one Ray version


def test_one_ray_version_everywhere():
    import ray

    versions: dict[str, str] = {"installed ray.__version__": ray.__version__}

    base = _dockerfile_from()
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-gpu", base)
    assert m, f"Dockerfile base {base!r} is not rayproject/ray:<ver>-py3xx-gpu"
    versions["Dockerfile FROM"] = m.group(1)
    arg = re.search(r"^ARG RAY_VERSION=(\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert arg, "Dockerfile has no ARG RAY_VERSION default"
    versions["Dockerfile ARG RAY_VERSION"] = arg.group(1)

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if re.match(r"ray(\[|=|\s)", d)]
    assert len(pins) == 1, pins
    pin = re.search(r"==\s*([0-9][^,;\s]*)", pins[0])
    assert pin, f"pyproject.toml must pin ray exactly (==), got {pins[0]!r}"
    versions["pyproject.toml"] = pin.group(1)

    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = [p["version"] for p in lock["package"] if p["name"] == "ray"]
    assert len(locked) == 1, f"uv.lock has {len(locked)} ray entries"
    versions["uv.lock"] = locked[0]

    for name, spec in _all_cluster_specs().items():
        assert isinstance(spec["rayVersion"], str), f"{name}: rayVersion must be a quoted string"
        versions[f"{name} rayVersion"] = spec["rayVersion"]

    submit = re.search(r'RAY_VERSION_PINNED="([^"]+)"', SUBMIT_SH.read_text())
    assert submit
    versions["submit.sh"] = submit.group(1)

    assert len(set(versions.values())) == 1, f"Ray versions disagree: {versions}"

    # The image's Python is the one the lock was resolved for.
    requires = pyproject["project"]["requires-python"]
    assert f">={m.group(2)}.{m.group(3)}" in requires, (base, requires)


def test_one_image_everywhere_and_no_ray_ml():
    images = {"cluster.yaml docker.image": yaml.safe_load(AWS_YAML.read_text())["docker"]["image"]}
    for name, spec in _all_cluster_specs().items():
        for group, template in _pod_templates(spec).items():
            for c in template["spec"]["containers"]:
                images[f"{name}:{group}:{c['name']}"] = c["image"]
    assert len(set(images.values())) == 1, f"head and workers must run one image: {images}"
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    for ref in [*images.values(), *froms]:
        assert "ray-ml" not in ref, f"{ref}: rayproject/ray-ml images are no longer published"


# ----------------------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_the_locked_environment():
    text = DOCKERFILE.read_text()
    exports = re.findall(r"uv export ([^;\n]*?)-o ([^\s;]+)", text)
    assert exports, "the Dockerfile must export its requirements from uv.lock"
    for flags, _ in exports:
        assert "--locked" in flags and "--no-dev" in flags and "--no-emit-project" in flags, flags
    assert re.search(r"uv pip install [^;\n]*-r /tmp/requirements\.txt", text)
    # The project itself goes in without re-resolving its dependencies.
    assert re.search(r"uv pip install [^;\n]*--no-deps \.", text)
    # Ray is never upgraded or re-pinned on top of the image.
    assert not re.search(r"pip install[^\n]*\bray\b", text), "Ray must stay the image's version"
    assert "ray.__version__" in text, "the build should assert the installed Ray version"

    # Everything the Dockerfile copies from the context exists and is let through the
    # Dockerfile-specific .dockerignore (which keeps the multi-GB .venv out of the context).
    copies = [
        src
        for line in re.findall(r"^COPY (?!--from)(.*)$", text, flags=re.M)
        for src in line.split()[:-1]
        if not src.startswith("--")
    ]
    assert {"pyproject.toml", "uv.lock", "openscene_ray", "jobs"} <= set(copies), copies
    for src in copies:
        assert (REPO / src).exists(), f"COPY {src}: missing from the repo"
    ignore = (CLUSTER / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert "**" in ignore
    allowed = {p.lstrip("!").removesuffix("/**") for p in ignore if p.startswith("!")}
    assert set(copies) <= allowed, f"COPY sources excluded by the .dockerignore: {set(copies) - allowed}"
    assert not any(".venv" in p for p in allowed)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) the way Docker reads the file: comment lines dropped (also inside
    a continuation), backslash-newline continuations joined."""
    out, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or (not current and not line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        keyword, _, args = current.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    assert not current.strip(), "Dockerfile ends inside a continuation"
    return out


def test_dockerfile_parses_and_run_steps_are_valid_shell():
    instructions = _dockerfile_instructions()
    known = {"FROM", "ARG", "ENV", "WORKDIR", "COPY", "RUN", "LABEL", "USER", "ENTRYPOINT", "CMD", "SHELL"}
    assert {k for k, _ in instructions} <= known, [k for k, _ in instructions if k not in known]
    assert instructions[-1][0] != "FROM"
    runs = [args for k, args in instructions if k == "RUN"]
    assert runs
    for body in runs:
        while body.startswith("--"):  # RUN flags such as --mount=type=cache,...
            body = body.split(None, 1)[1]
        proc = subprocess.run(["sh", "-n", "-c", body], capture_output=True, text=True)
        assert proc.returncode == 0, f"RUN {body[:80]}...: {proc.stderr}"
        assert "set -eux" in body, "RUN steps should stop at the first failing command"


def test_dockerfile_export_command_works_on_this_lock(tmp_path):
    """Run the Dockerfile's own `uv export` lines here: the lock is current and pins Ray."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv not on PATH")
    text = DOCKERFILE.read_text()
    outputs = {}
    for flags, target in re.findall(r"uv export ([^;\n]*?)-o ([^\s;]+)", text):
        out = tmp_path / Path(target).name
        proc = subprocess.run(
            [uv, "export", *flags.split(), "-o", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "UV_OFFLINE": "1"},
        )
        assert proc.returncode == 0, proc.stderr
        outputs[out.name] = out.read_text()
    constraints = outputs["constraints.txt"]
    import ray

    assert f"ray=={ray.__version__}" in constraints.splitlines()
    for heavy in ("torch==", "tensorflow==", "spconv-cu118==", "open-clip-torch==", "s3fs==", "pyarrow=="):
        assert any(line.startswith(heavy) for line in constraints.splitlines()), heavy
    assert "--hash=sha256:" in outputs["requirements.txt"]
    assert not any(line.startswith(("pytest==", "moto==")) for line in constraints.splitlines())


def test_build_push_tags_with_git_sha_and_pushes_to_registry(tmp_path):
    bindir = tmp_path / "bin"
    _fake_exe(bindir, "docker", FAKE_RAY.replace("ray, version 2.60.0", "Docker version 27"))
    env = _script_env(tmp_path, bindir)

    refused = _run(["bash", str(BUILD_PUSH_SH)], env)
    assert refused.returncode == 2 and "REGISTRY" in refused.stderr
    assert _calls(tmp_path / "calls.jsonl") == []

    env["REGISTRY"] = "registry.example.com/team/"
    ok = _run(["bash", str(BUILD_PUSH_SH)], env)
    assert ok.returncode == 0, ok.stderr
    sha = _git_sha()
    ref_re = rf"registry\.example\.com/team/openscene-ray:{sha}(-dirty)?"
    ref = ok.stdout.strip().splitlines()[-1].removeprefix("IMAGE=")
    assert re.fullmatch(ref_re, ref), ref
    build, push = _calls(tmp_path / "calls.jsonl")
    assert build["cwd"] == str(REPO)
    argv = build["argv"]
    assert argv[0] == "build" and argv[-1] == "."
    assert argv[argv.index("--file") + 1] == "cluster/docker/Dockerfile"
    assert argv[argv.index("--tag") + 1] == ref
    assert "RAY_VERSION=2.60.0" in argv
    assert push["argv"] == ["push", ref]


# ----------------------------------------------------------------------------- 2. AWS cluster launcher


def _aws_config() -> dict:
    return yaml.safe_load(AWS_YAML.read_text())


def test_aws_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(_aws_config()))  # defaults.yaml merge, as `ray up`
    validate_config(prepared)  # ray-schema.json + cross-field checks
    # Ray's AWS defaults pip-install a nightly Ray in setup_commands unless overridden: the
    # image already has everything, so all setup hooks must come out empty.
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert prepared[key] == [], f"{key}: {prepared[key]}"
    # The launcher does not log in to a private registry: the image's registry needs a login
    # on every VM before the pull.
    registry = prepared["docker"]["image"].split("/")[0]
    if ".dkr.ecr." in registry:
        logins = [c for c in prepared["initialization_commands"] if "docker login" in c and registry in c]
        assert logins, f"no docker login to {registry} in initialization_commands"


def test_aws_cluster_yaml_structure():
    config = _aws_config()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "no Ray work on the head"
    assert head.get("max_workers", 0) == 0

    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    # The head launches workers that carry an instance profile, which needs iam:PassRole: Ray's
    # default head profile lacks it, so the head has its own profile too.
    assert head["node_config"]["IamInstanceProfile"], "head needs a profile with iam:PassRole"
    gpu = {n: t for n, t in workers.items() if t.get("resources", {}).get("GPU", 0) > 0}
    cpu = {n: t for n, t in workers.items() if t.get("resources", {}).get("GPU", 0) == 0}
    assert gpu and cpu, f"need a GPU and a CPU worker type: {sorted(workers)}"
    for name, t in workers.items():
        assert t["min_workers"] == 0, f"{name} must scale from zero"
        assert t["max_workers"] > 0, name
        profile = t["node_config"].get("IamInstanceProfile")
        assert profile and (profile.get("Arn") or profile.get("Name")), f"{name} has no IamInstanceProfile (S3)"
    for name, t in gpu.items():
        assert t["node_config"]["InstanceType"].split(".")[0][:2] in {"g4", "g5", "g6", "p3", "p4", "p5"}, name
    assert sum(t["max_workers"] for t in workers.values()) >= config["max_workers"] > 0

    assert config["idle_timeout_minutes"] > 0
    docker = config["docker"]
    assert docker["image"] and ":latest" not in docker["image"]
    assert any("nofile=65536" in o for o in docker["run_options"])
    assert any("RAY_AUTH_MODE=token" in o for o in docker["run_options"])
    # Token shared by all nodes and the submitting machine.
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"

    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    for cmds in (head_start, worker_start):
        assert "ulimit -n 65536" in cmds and "RAY_AUTH_MODE=token ray start" in cmds
    assert "--head" in head_start and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "--address=$RAY_HEAD_IP:6379" in worker_start


def test_aws_ray_up_bootstrap_offline_with_moto(tmp_path, monkeypatch):
    """`ray up`'s config resolution, minus launching: runs Ray's AWS bootstrap against moto."""
    moto = pytest.importorskip("moto")
    import boto3
    from ray.autoscaler._private import commands
    from ray.autoscaler._private.aws import config as aws_config
    from ray.autoscaler._private.aws import node_provider as aws_node_provider
    from ray.autoscaler._private.aws import utils as aws_utils

    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "OPENSCENE_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # not needed; loading them is slow
    monkeypatch.setenv("HOME", str(tmp_path))  # the bootstrap writes ~/.ssh/ray-autoscaler_*.pem

    def clear_caches():
        aws_utils.client_cache.cache_clear()
        aws_utils.resource_cache.cache_clear()
        for obj in vars(aws_config).values():
            if hasattr(obj, "cache_clear"):
                obj.cache_clear()

    config = _aws_config()
    # Ray lists every EC2 instance type to detect node resources (~1000 through moto: slow);
    # ask for the ones this config uses. Same data (moto ships AWS's instance-type catalogue).
    wanted = sorted({t["node_config"]["InstanceType"] for t in config["available_node_types"].values()})

    def list_ec2_instances(region_name, aws_credentials=None):
        ec2 = boto3.client("ec2", region_name=region_name)
        return ec2.describe_instance_types(InstanceTypes=wanted)["InstanceTypes"]

    monkeypatch.setattr(aws_node_provider, "list_ec2_instances", list_ec2_instances)
    clear_caches()
    try:
        with moto.mock_aws():
            resolved = commands._bootstrap_config(copy.deepcopy(config), no_config_cache=True)
    finally:
        clear_caches()

    types = resolved["available_node_types"]
    stated = config["available_node_types"]
    head_type = resolved["head_node_type"]
    # Ray autodetects resources from the instance types; the stated ones must agree with them
    # (e.g. a GPU count that does not match the InstanceType) and the head stays at CPU 0.
    assert types[head_type]["resources"]["CPU"] == 0
    for name, t in types.items():
        for key, value in stated[name].get("resources", {}).items():
            assert t["resources"][key] == value, (name, key)
        if name != head_type:
            assert t["resources"]["memory"] > 0, f"{name}: instance type not recognised"
    gpu_types = [n for n, t in stated.items() if t.get("resources", {}).get("GPU")]
    for name in gpu_types:
        assert any(k.startswith("accelerator_type:") for k in types[name]["resources"]), name
    # Every node type keeps its own profile; Ray creates no default one (it would give that
    # to the head only, without iam:PassRole for the workers' profile).
    assert "IamInstanceProfile" not in resolved["head_node"]
    for name, t in types.items():
        assert t["node_config"]["IamInstanceProfile"] == stated[name]["node_config"]["IamInstanceProfile"]
        assert len(t["node_config"]["SubnetIds"]) == len(config["provider"]["availability_zone"].split(","))
        assert t["node_config"]["SecurityGroupIds"]
    assert Path(resolved["auth"]["ssh_private_key"]).is_file()


# ----------------------------------------------------------------------------- 3. KubeRay


def test_raycluster_manifest_structure():
    docs = _docs(RAYCLUSTER_YAML)
    assert [d["kind"] for d in docs] == ["ServiceAccount", "RayCluster"]
    sa, rc = docs
    assert rc["apiVersion"] == "ray.io/v1"
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    _check_cluster_spec(rc["spec"], sa["metadata"]["name"])


def _check_cluster_spec(spec: dict, service_account: str) -> None:
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    assert spec["authOptions"] == {"mode": "token"}

    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert {6379, 8265, 10001} <= head_ports

    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}

    def limits(group: dict) -> dict:
        return group["template"]["spec"]["containers"][0]["resources"]["limits"]

    gpu = [g for g in groups.values() if "nvidia.com/gpu" in limits(g)]
    cpu = [g for g in groups.values() if g not in gpu]
    assert len(gpu) >= 1 and len(cpu) >= 1, sorted(groups)
    for g in gpu:
        assert g["minReplicas"] == 0 and g.get("replicas", 0) == 0 and g["maxReplicas"] > 0
        res = g["template"]["spec"]["containers"][0]["resources"]
        assert int(res["limits"]["nvidia.com/gpu"]) >= 1
        # Extended resources: requests, if given, must equal limits.
        n_gpus = res["limits"]["nvidia.com/gpu"]
        assert res.get("requests", {}).get("nvidia.com/gpu", n_gpus) == n_gpus
        tolerations = g["template"]["spec"]["tolerations"]
        assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in tolerations)
    for g in cpu:
        assert g["minReplicas"] == 0 and g["maxReplicas"] > 0

    for group_spec in [head, *spec["workerGroupSpecs"]]:
        # KubeRay's rayStartParams is map[string]string: unquoted numbers are rejected.
        assert all(isinstance(v, str) for v in group_spec["rayStartParams"].values()), group_spec["rayStartParams"]
    for name, template in _pod_templates(spec).items():
        pod = template["spec"]
        assert pod["serviceAccountName"] == service_account, f"{name}: no IRSA service account"
        for c in pod["containers"]:
            assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"], name


@pytest.mark.parametrize("stage", sorted(RAYJOB_YAMLS))
def test_rayjob_manifest_structure(stage):
    path = RAYJOB_YAMLS[stage]
    docs = _docs(path)
    assert [d["kind"] for d in docs] == ["ServiceAccount", "RayJob"]
    sa, job = docs
    assert job["apiVersion"] == "ray.io/v1"
    # The ServiceAccount is the same object as in raycluster.yaml (each file applies alone).
    assert sa == _doc(RAYCLUSTER_YAML, "ServiceAccount")
    spec = job["spec"]
    entry = spec["entrypoint"].split()
    assert entry[:3] == ["python", f"jobs/{stage}.py", "--config"] and entry[3].startswith("configs/"), entry
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] >= 3600
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 0
    assert spec.get("submissionMode", "K8sJobMode") == "K8sJobMode"

    from ray.runtime_env import RuntimeEnv

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert set(runtime_env) <= RuntimeEnv.known_fields, set(runtime_env) - RuntimeEnv.known_fields
    # (RuntimeEnv checks that a local working_dir exists; this one exists inside the image.)
    RuntimeEnv(**{k: v for k, v in runtime_env.items() if k != "working_dir"})
    assert not {"pip", "uv", "conda"} & set(runtime_env), "heavy deps belong in the image"
    # Same env vars as `cluster/submit.sh` jobs get.
    assert runtime_env["env_vars"] == yaml.safe_load(RUNTIME_ENV_YAML.read_text())["env_vars"]
    # working_dir is the repo copy inside the image.
    app_dir = re.search(r"APP_DIR=(\S+)", DOCKERFILE.read_text()).group(1)
    assert runtime_env["working_dir"] == app_dir

    _check_cluster_spec(spec["rayClusterSpec"], sa["metadata"]["name"])


@pytest.mark.parametrize("stage", sorted(RAYJOB_YAMLS))
def test_rayjob_cluster_spec_is_raycluster_spec(stage):
    job_spec = _doc(RAYJOB_YAMLS[stage], "RayJob")["spec"]["rayClusterSpec"]
    # No deliberate differences today: any drift between the files is a mistake.
    diff = _diff(_raycluster_spec(), job_spec, "spec")
    assert diff == [], "rayClusterSpec drifted from raycluster.yaml:\n" + "\n".join(diff)


@pytest.mark.parametrize("stage", sorted(RAYJOB_YAMLS))
def test_rayjob_entrypoint_files_exist(stage):
    entry = _doc(RAYJOB_YAMLS[stage], "RayJob")["spec"]["entrypoint"].split()
    assert (REPO / entry[1]).is_file(), f"{entry[1]} (RayJob entrypoint) is missing"
    configs = [entry[i + 1] for i, word in enumerate(entry) if word == "--config"]
    assert configs, "the RayJob entrypoint names no config"
    for config in configs:
        assert (REPO / config).is_file(), f"{config} (RayJob config) is missing"


# ----------------------------------------------------------------------------- 4. scripts


@pytest.mark.parametrize("script", [SUBMIT_SH, LOCAL_SH, BUILD_PUSH_SH], ids=lambda p: p.name)
def test_scripts_parse_and_are_strict(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "set -euo pipefail" in script.read_text()
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


def test_submit_builds_the_exact_ray_job_submit_command(tmp_path):
    bindir = tmp_path / "bin"
    _fake_exe(bindir, "ray", FAKE_RAY)
    env = _script_env(tmp_path, bindir)
    proc = _run(
        [str(SUBMIT_SH), "fuse", "--config", "s3://bucket/cfg/fuse.yaml", "--set", "a.b=1",
         "--set", "name=two words", "--", "--overwrite"],
        env,
    )
    assert proc.returncode == 0, proc.stderr
    (call,) = _calls(tmp_path / "calls.jsonl")
    assert call["cwd"] == str(REPO), "`--working-dir .` must be the repo root"
    argv = call["argv"]
    sha = _git_sha()
    sub_id = argv[argv.index("--submission-id") + 1]
    assert re.fullmatch(rf"fuse-{sha}(-dirty)?-\d{{8}}-\d{{6}}", sub_id), sub_id
    metadata = json.loads(argv[argv.index("--metadata-json") + 1])
    assert metadata == {"stage": "fuse", "git_sha": sub_id[5:-16], "config": "s3://bucket/cfg/fuse.yaml"}
    assert argv == [
        "job", "submit",
        "--address", "http://127.0.0.1:8265",
        "--submission-id", sub_id,
        "--working-dir", ".",
        "--runtime-env", "cluster/runtime_env.yaml",
        "--metadata-json", argv[argv.index("--metadata-json") + 1],
        "--",
        "python", "jobs/fuse.py", "--config", "s3://bucket/cfg/fuse.yaml",
        "--set", "a.b=1", "--set", "name=two words", "--overwrite",
    ]  # fmt: skip
    # No token anywhere: the client does not switch token auth on.
    assert call["RAY_AUTH_MODE"] is None


def test_submit_address_no_wait_and_token_auth(tmp_path):
    bindir = tmp_path / "bin"
    _fake_exe(bindir, "ray", FAKE_RAY)
    log = tmp_path / "calls.jsonl"
    (tmp_path / "home" / ".ray").mkdir(parents=True)
    (tmp_path / "home" / ".ray" / "auth_token").write_text("t" * 32)

    env = _script_env(tmp_path, bindir, RAY_ADDRESS="http://10.1.2.3:8265")
    assert _run([str(SUBMIT_SH), "distill" if (REPO / "jobs/distill.py").exists() else "fuse",
                 "--config", "s3://b/c.yaml", "--no-wait"], env).returncode == 0  # fmt: skip
    call = _calls(log)[-1]
    assert call["argv"][call["argv"].index("--address") + 1] == "http://10.1.2.3:8265"
    assert call["argv"].index("--no-wait") < call["argv"].index("--")
    assert call["RAY_AUTH_MODE"] == "token", "~/.ray/auth_token present: the client must send it"

    # RAY_API_SERVER_ADDRESS wins over RAY_ADDRESS, like in the Ray CLI; an explicit opt-out of
    # token auth is respected.
    env.update(RAY_API_SERVER_ADDRESS="https://ray.example.com", RAY_AUTH_MODE="disabled")
    assert _run([str(SUBMIT_SH), "fuse", "--config", "s3://b/c.yaml"], env).returncode == 0
    call = _calls(log)[-1]
    assert call["argv"][call["argv"].index("--address") + 1] == "https://ray.example.com"
    assert call["RAY_AUTH_MODE"] == "disabled"

    # RAY_AUTH_TOKEN alone (e.g. from the KubeRay Secret) also switches token auth on.
    (tmp_path / "home" / ".ray" / "auth_token").unlink()
    env = _script_env(tmp_path, bindir, RAY_AUTH_TOKEN="x" * 32)
    assert _run([str(SUBMIT_SH), "fuse", "--config", "s3://b/c.yaml"], env).returncode == 0
    assert _calls(log)[-1]["RAY_AUTH_MODE"] == "token"


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--config", "s3://b/c.yaml"], "unknown stage 'train'; expected one of: fuse distill evaluate query"),
        (["FUSE", "--config", "s3://b/c.yaml"], "unknown stage 'FUSE'"),
        ([], "STAGE"),
        (["fuse"], "--config is required"),
        (["fuse", "--config", "configs/does-not-exist.yaml"], "not found"),
        (["fuse", "--config", "/abs/cfg.yaml"], "is absolute"),
        (["fuse", "--config", "s3://b/c.yaml", "--set", "novalue"], "KEY=VALUE"),
        (["fuse", "--config", "s3://b/c.yaml", "--bogus"], "unknown option '--bogus'"),
        (["fuse", "--config", "s3://b/c.yaml", "--address", "10.0.0.1:6379"], "not an http(s) job server URL"),
    ],
)
def test_submit_refuses_bad_invocations(tmp_path, args, message):
    bindir = tmp_path / "bin"
    _fake_exe(bindir, "ray", FAKE_RAY)
    proc = _run([str(SUBMIT_SH), *args], _script_env(tmp_path, bindir))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert _calls(tmp_path / "calls.jsonl") == [], "ray must not be called"


@pytest.mark.parametrize("stage", STAGES)
def test_submit_knows_every_stage(tmp_path, stage):
    """Each stage submits jobs/<stage>.py, or is refused by name while that file is missing."""
    bindir = tmp_path / "bin"
    _fake_exe(bindir, "ray", FAKE_RAY)
    proc = _run([str(SUBMIT_SH), stage, "--config", "s3://b/c.yaml"], _script_env(tmp_path, bindir))
    if (REPO / "jobs" / f"{stage}.py").is_file():
        assert proc.returncode == 0, proc.stderr
        argv = _calls(tmp_path / "calls.jsonl")[0]["argv"]
        assert argv[argv.index("--") + 1 :][:2] == ["python", f"jobs/{stage}.py"]
    else:
        assert proc.returncode == 2 and f"entry point jobs/{stage}.py is missing" in proc.stderr


def test_submit_dry_run_prints_instead_of_running(tmp_path):
    bindir = tmp_path / "bin"
    _fake_exe(bindir, "ray", FAKE_RAY)
    proc = _run([str(SUBMIT_SH), "fuse", "--config", "s3://b/c.yaml", "--dry-run"], _script_env(tmp_path, bindir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ray job submit --address http://127.0.0.1:8265 --submission-id fuse-")
    assert _calls(tmp_path / "calls.jsonl") == []


FAKE_UV = r"""
python3 - "$@" <<'PY'
import json, os, sys
rec = {"argv": sys.argv[1:], "cwd": os.getcwd(), "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE")}
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(rec) + "\n")
PY
"""


def test_local_sh_starts_the_head_from_the_project_venv(tmp_path):
    bindir = tmp_path / "bin"
    _fake_exe(bindir, "uv", FAKE_UV)
    _fake_exe(bindir, "nvidia-smi", 'printf "0\\n1\\n2\\n3\\n"\n')
    env = _script_env(tmp_path, bindir)
    proc = _run([str(LOCAL_SH), "start", "--num-cpus", "2", "--", "--ray-client-server-port=0"], env)
    assert proc.returncode == 0, proc.stderr
    token, start = _calls(tmp_path / "calls.jsonl")
    # No token yet: one is generated with the project's Ray before the head starts.
    assert token["argv"] == ["run", "--locked", "ray", "get-auth-token", "--generate"]
    assert start["cwd"] == str(REPO)
    assert start["argv"] == [
        "run", "--locked", "ray", "start", "--head", "--port=6379",
        "--dashboard-host=127.0.0.1", "--dashboard-port=8265", "--num-gpus=4",
        "--disable-usage-stats", "--num-cpus=2", "--ray-client-server-port=0",
    ]  # fmt: skip
    assert start["RAY_AUTH_MODE"] == "token"

    # Opting out of token auth, explicit GPU count, an existing token file is not regenerated.
    (tmp_path / "calls.jsonl").unlink()
    env["RAY_AUTH_MODE"] = "disabled"
    assert _run([str(LOCAL_SH), "start", "--num-gpus", "0"], env).returncode == 0
    (start,) = _calls(tmp_path / "calls.jsonl")
    assert "--num-gpus=0" in start["argv"] and start["RAY_AUTH_MODE"] == "disabled"

    bad = _run([str(LOCAL_SH), "start", "--num-gpus", "two"], env)
    assert bad.returncode == 2 and "whole number" in bad.stderr


# ----------------------------------------------------------------------------- 5. runtime_env


def test_runtime_env_yaml_is_a_valid_runtime_env():
    from ray.runtime_env import RuntimeEnv

    data = yaml.safe_load(RUNTIME_ENV_YAML.read_text())
    assert set(data) <= RuntimeEnv.known_fields, set(data) - RuntimeEnv.known_fields
    env = RuntimeEnv(**data)
    assert env.working_dir() == "."
    assert not {"pip", "uv", "conda", "py_executable"} & set(data), "heavy deps belong in the image"
    env_vars = data["env_vars"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()), env_vars
    assert env_vars["RAY_TRAIN_V2_ENABLED"] == "1"
    assert "OMP_NUM_THREADS" not in env_vars, "Ray sets it per task from the assigned CPUs"
    secrets = [k for k in env_vars if re.search(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY", k)]
    assert not secrets, f"runtime_env is recorded and shown by Ray: {secrets}"
    assert set(data["config"]) <= {"setup_timeout_seconds", "eager_install", "log_files"}


def test_runtime_env_working_dir_package_is_code_only(tmp_path):
    """Build the package Ray would upload for working_dir=. with these excludes."""
    from ray._private.runtime_env import packaging

    excludes = yaml.safe_load(RUNTIME_ENV_YAML.read_text())["excludes"]
    out = tmp_path / "pkg.zip"
    packaging._zip_files(str(REPO), list(excludes), str(out), include_gitignore=True)
    names = zipfile.ZipFile(out).namelist()
    for needed in ("pyproject.toml", "openscene_ray/__init__.py", "jobs/fuse.py", "cluster/runtime_env.yaml"):
        assert needed in names, needed
    for name in names:
        top = name.split("/")[0]
        assert top not in {".git", ".venv", ".pytest_cache", "runs"}, name
        assert "__pycache__" not in name and not name.endswith(".pyc"), name
    assert out.stat().st_size < packaging.GCS_STORAGE_MAX_SIZE // 2

    # The excludes alone (with .gitignore handling switched off) keep out the big directories.
    from ray._private.thirdparty.pathspec import PathSpec

    spec = PathSpec.from_lines("gitwildmatch", excludes)
    for path in (".venv/lib/python3.11/site-packages/torch/__init__.py", ".git/HEAD", "runs/x/part-0.parquet",
                 "openscene_ray/__pycache__/x.pyc", "weights/openseg.pth", "out/scene.parquet"):  # fmt: skip
        assert spec.match_file(path), path
    for path in ("openscene_ray/__init__.py", "jobs/fuse.py", "configs/fuse.yaml", "uv.lock"):
        assert not spec.match_file(path), path


SECRETS = (".env", ".env.production", ".aws/credentials", ".aws/config", "deploy.pem", "tls/server.key",
           "my_token.txt", "ray_auth_token", "gcp-credentials.json", "db_secret.yaml", ".ssh/id_rsa", ".netrc")


@pytest.mark.parametrize("use_gitignore", [True, False])
def test_working_dir_package_leaves_planted_secrets_behind(tmp_path, use_gitignore):
    """Untracked credentials in a checkout never reach the job package Ray uploads to every node,
    with or without Ray's .gitignore handling."""
    from ray._private.runtime_env import packaging

    checkout = tmp_path / "checkout"
    for name in ("pyproject.toml", ".gitignore", "openscene_ray/__init__.py", "jobs/fuse.py", "configs/fuse.yaml",
                 "cluster/runtime_env.yaml"):  # fmt: skip
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name if (REPO / name).exists() else RUNTIME_ENV_YAML, checkout / name)
    for secret in SECRETS:
        (checkout / secret).parent.mkdir(parents=True, exist_ok=True)
        (checkout / secret).write_text("AKIAEXAMPLE-do-not-ship\n")
    excludes = yaml.safe_load(RUNTIME_ENV_YAML.read_text())["excludes"]
    out = tmp_path / "pkg.zip"
    packaging._zip_files(str(checkout), list(excludes), str(out), include_gitignore=use_gitignore)
    names = set(zipfile.ZipFile(out).namelist())
    assert {"pyproject.toml", "openscene_ray/__init__.py", "jobs/fuse.py", "configs/fuse.yaml"} <= names
    leaked = [s for s in SECRETS if s in names]
    assert not leaked, f"secrets packaged for upload: {leaked}"


# ----------------------------------------------------------------------------- slow: real head + job


@pytest.mark.slow
def test_local_head_from_venv_accepts_token_authenticated_submission(tmp_path):
    """local.sh starts a head with token auth from the venv; submit.sh runs a job on it."""
    if shutil.which("uv") is None:
        pytest.skip("uv not on PATH")
    temp_dir = tempfile.mkdtemp(prefix="osr", dir="/tmp")  # short: Ray's socket paths are limited
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        HOME=str(home),
        UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv")),
        RAY_PORT=str(free_port()),
        DASHBOARD_PORT=str(free_port()),
        RAY_TEMP_DIR=temp_dir,
        OSR_TEST_HEAD=temp_dir,  # inherited by every process of this head: see ray_head.own_pids
        OBJECT_STORE_MEMORY=str(200 * 1024 * 1024),
    )
    extra = head_port_args()
    try:
        start = _run([str(LOCAL_SH), "start", "--num-cpus", "1", "--num-gpus", "0", "--", *extra], env, timeout=180)
        assert start.returncode == 0, start.stdout + start.stderr
        assert (home / ".ray" / "auth_token").is_file(), "local.sh should have generated a token"

        # Without the token the job server refuses the submission...
        no_token = {**env, "RAY_AUTH_MODE": "token", "HOME": str(tmp_path)}
        address = f"http://127.0.0.1:{env['DASHBOARD_PORT']}"
        refused = _run(
            ["uv", "run", "--locked", str(SUBMIT_SH), "fuse", "--config", "s3://b/c.yaml", "--address", address],
            no_token,
            timeout=180,
        )
        assert refused.returncode != 0

        # ...with it (found in ~/.ray/auth_token), the job runs in the head's venv: the entry
        # point imports openscene_ray (its --help needs the whole CLI) and succeeds.
        ok = _run(
            ["uv", "run", "--locked", str(SUBMIT_SH), "fuse", "--config", "s3://b/c.yaml", "--address", address,
             "--", "--help"],
            env,
            timeout=300,
        )  # fmt: skip
        assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
        assert "multi-view" in ok.stdout and "succeeded" in ok.stdout
    finally:
        left = stop_pids(lambda: own_pids(temp_dir), grace=10)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the test head survived: {sorted(left)}"
