"""The container files (Dockerfile, compose.yaml, deploy/k8s/) checked without a Docker
engine or a cluster: schemas bundled with maintained validators (kubernetes-validate,
check-jsonschema's vendored Compose spec, dockerfile-parse), every command against the real
CLIs, every salesflow variable against the settings. No network is used.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from functools import cache
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
# The Kubernetes API version the manifests are written for (schemas bundled offline).
K8S_VERSION = "1.33.0"
IMAGE_WORKDIR = "/app"
# Placeholders the example Secret may carry instead of real values.
PLACEHOLDER = "CHANGE-ME"
SALESFLOW_SERVICES = ("prefect-worker", "api", "dashboard", "deploy")


# --- loading ------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@cache
def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in k8s_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def k8s_by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == kind}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec.get("template", {}).get("spec")


def k8s_containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container of every workload."""
    out = []
    for _, doc in k8s_docs():
        spec = pod_spec(doc)
        for c in (spec or {}).get("containers", []):
            out.append((doc["metadata"]["name"], spec, c))
    return out


@cache
def dockerfile():
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(str(ROOT / "Dockerfile"))


def instructions(name: str) -> list[str]:
    return [i["value"] for i in dockerfile().structure if i["instruction"] == name]


def exec_form(value: str) -> list[str]:
    """A Dockerfile JSON (exec) form; a shell form would hide the process from signals."""
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"not the exec form: {value}"
    return parsed


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,doc", k8s_docs(), ids=[n for n, _ in k8s_docs()])
def test_k8s_manifest_is_valid(name, doc):
    """Every manifest validates strictly against the bundled Kubernetes schema."""
    import kubernetes_validate

    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_validator_rejects_a_misspelt_field():
    """The validator is live: a misspelt probe field fails strict validation."""
    import kubernetes_validate

    doc = json.loads(json.dumps(k8s_by_kind("Deployment")["api"]))
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret():
    """kustomization.yaml applies every manifest except secret.example.yaml."""
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    expected = {p.name for p in k8s_files()} - {"secret.example.yaml"}
    assert set(kust["resources"]) == expected
    assert not k8s_by_kind("Secret") or "secret.example.yaml" not in kust["resources"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_renders_the_manifests():
    """kubectl kustomize (offline) renders every listed resource into the namespace."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert names == {
        (d["kind"], d["metadata"]["name"]) for _, d in k8s_docs() if d["kind"] != "Secret"
    }
    assert all(
        d["metadata"].get("namespace") == "salesflow" for d in docs if d["kind"] != "Namespace"
    )


def test_k8s_services_deployments_and_job_exist():
    """Deployments and Services for each server, the worker, and the deploy Job."""
    deployments, services = k8s_by_kind("Deployment"), k8s_by_kind("Service")
    assert {
        "prefect-server",
        "mlflow",
        "api",
        "dashboard",
        "prefect-worker",
        "dask-scheduler",
        "dask-worker",
    } <= set(deployments)
    assert {"prefect-server", "mlflow", "api", "dashboard", "dask-scheduler"} <= set(services)
    assert "deploy-flows" in k8s_by_kind("Job")
    for name, svc in services.items():
        selected = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= selected.items(), name


def test_k8s_pods_run_as_non_root_with_resources():
    """Every pod runs as non-root; every container has requests and limits and no :latest."""
    for name, spec, c in k8s_containers():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), name
        assert {"cpu", "memory"} <= c["resources"]["limits"].keys(), name
        assert ":" in c["image"] and not c["image"].endswith(":latest"), name


@pytest.mark.parametrize(
    "workload,probe,path",
    [
        ("api", "readinessProbe", "/ready"),
        ("api", "livenessProbe", "/health"),
        ("mlflow", "readinessProbe", "/health"),
        ("mlflow", "livenessProbe", "/health"),
        ("prefect-server", "readinessProbe", "/api/health"),
        ("prefect-server", "livenessProbe", "/api/health"),
        ("dashboard", "readinessProbe", "/_stcore/health"),
        ("prefect-worker", "livenessProbe", "/health"),
        ("dask-scheduler", "readinessProbe", "/health"),
        ("dask-scheduler", "livenessProbe", "/health"),
        ("dask-worker", "livenessProbe", "/health"),
    ],
)
def test_k8s_probes_hit_the_health_routes(workload, probe, path):
    """Each server's probes call its own health route on a port the container declares."""
    c = k8s_by_kind("Deployment")[workload]["spec"]["template"]["spec"]["containers"][0]
    get = c[probe]["httpGet"]
    assert get["path"] == path
    assert get["port"] in {p.get("name") for p in c["ports"]} | {
        p["containerPort"] for p in c["ports"]
    }


def test_k8s_secrets_come_from_secret_key_refs():
    """Database URLs and tokens are secretKeyRefs to salesflow-secrets, never values."""
    secret_keys = set(k8s_by_kind("Secret")["salesflow-secrets"]["stringData"])
    refs = set()
    for name, _, c in k8s_containers():
        for env in c.get("env", []):
            if SECRETISH.search(env["name"]):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                assert ref and "value" not in env, f"{name}: {env['name']} is not a secretKeyRef"
                assert ref["name"] == "salesflow-secrets"
                refs.add(ref["key"])
    assert refs == secret_keys, "the example Secret and the references disagree"


def test_k8s_example_secret_holds_placeholders_only():
    """secret.example.yaml carries CHANGE-ME placeholders, no usable credential."""
    data = k8s_by_kind("Secret")["salesflow-secrets"]["stringData"]
    for key, value in data.items():
        assert PLACEHOLDER in value, key
        for user_info in re.findall(r"://([^@/]+)@", value):
            assert user_info.endswith(PLACEHOLDER), key


# --- compose ------------------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    files = resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
    return json.loads((files / "compose-spec.json").read_text(encoding="utf-8"))


def test_compose_validates_against_the_compose_spec():
    """compose.yaml validates against the Compose spec schema vendored by check-jsonschema."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(compose_schema())
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors


def test_compose_validator_rejects_a_wrong_condition():
    """The schema is live: an unknown depends_on condition fails validation."""
    from jsonschema import Draft202012Validator

    bad = json.loads(json.dumps(compose()))
    bad["services"]["api"]["depends_on"]["mlflow"]["condition"] = "service_ready"
    assert list(Draft202012Validator(compose_schema()).iter_errors(bad))


def test_compose_services_wait_for_healthy_dependencies():
    """Every dependency is awaited by condition, and service_healthy ones have a check."""
    services = compose()["services"]
    assert {"postgres", "prefect-server", "mlflow", *SALESFLOW_SERVICES} <= set(services)
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            assert cond["condition"] in {"service_healthy", "service_completed_successfully"}
            if cond["condition"] == "service_healthy":
                check = services[dep].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), f"{name} -> {dep}"


def test_compose_long_running_services_have_health_checks():
    """Every service but the one-shot deploy has its own health check and restarts."""
    for name, svc in compose()["services"].items():
        if name == "deploy":
            assert svc["restart"] == "no"
            continue
        assert svc["healthcheck"]["test"][0] == "CMD", name
        assert svc["restart"] == "unless-stopped", name


def test_compose_postgres_creates_the_three_databases():
    """The init script creates the prefect, mlflow and warehouse databases."""
    pg = compose()["services"]["postgres"]
    mount = next(v for v in pg["volumes"] if "docker-entrypoint-initdb.d" in v)
    sql = (ROOT / mount.split(":")[0]).read_text(encoding="utf-8")
    created = set(re.findall(r"^CREATE DATABASE (\w+);", sql, flags=re.M))
    assert created == {"prefect", "mlflow", "warehouse"}
    urls = [v for s in compose()["services"].values() for v in env_of(s).values()]
    used = {m for u in urls for m in re.findall(r"@postgres:5432/(\w+)$", str(u))}
    assert used == created


def test_compose_password_is_only_interpolated():
    """POSTGRES_PASSWORD appears only as a required ${POSTGRES_PASSWORD:?...} reference."""
    text = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    uses = re.findall(r"\$\{POSTGRES_PASSWORD([^}]*)\}", text)
    assert uses and all(u.startswith(":?") for u in uses)
    for svc in compose()["services"].values():
        for key, value in env_of(svc).items():
            for user_info in re.findall(r"://([^@/]+)@", str(value)):
                assert user_info.partition(":")[2].startswith("${POSTGRES_PASSWORD:?"), key


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_base_image_is_a_pinned_slim_python():
    """The base image is python:3.11+ slim, pinned by tag (never latest)."""
    base = dockerfile().baseimage
    m = re.fullmatch(r"python:3\.(\d+)(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base)
    assert m and int(m.group(1)) >= 11, base


def test_dockerfile_runs_as_a_non_root_user():
    """The last USER is neither root nor uid 0."""
    user = instructions("USER")[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_has_healthcheck_and_quiet_settings():
    """HEALTHCHECK is set, and so are the telemetry, OpenMP and SALESFLOW_HOME variables."""
    assert instructions("HEALTHCHECK")
    envs = dockerfile().envs
    assert envs["OMP_WAIT_POLICY"] == "PASSIVE"
    assert envs["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert envs["GX_ANALYTICS_ENABLED"] == "false"
    assert envs["SALESFLOW_HOME"] == IMAGE_WORKDIR
    assert instructions("WORKDIR")[-1] == IMAGE_WORKDIR


def test_dockerfile_bakes_in_no_secret():
    """No ENV or ARG has a secret-looking name or a URL with credentials as its value."""
    df = dockerfile()
    pairs = dict(df.envs)
    for arg in instructions("ARG"):
        name, _, value = arg.partition("=")
        pairs[name.strip()] = value
    for name, value in pairs.items():
        assert not SECRETISH.search(name), name
        assert "://" not in value and not literal_secret(f"{name}={value}"), name


def test_dockerfile_installs_the_lock_and_copies_what_the_image_uses():
    """The image installs requirements/prod.txt, then salesflow without dependencies."""
    runs = " ".join(instructions("RUN"))
    assert "pip install -r requirements/prod.txt" in runs
    assert "pip install --no-deps -e ." in runs
    copied = {i.split()[0] for i in instructions("COPY")}
    for needed in ("salesflow", "features", "tasks", "flows", "configs", "deployments"):
        assert needed in copied, needed
    assert "deploy/docker" in copied


def test_dockerignore_keeps_state_and_secrets_out():
    """.dockerignore excludes local state, the venv, git, benchmark output and env files."""
    lines = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".venv", "data/local", ".env", "*.env"} <= lines
    assert "benchmarks" in lines or "benchmarks/out" in lines


# --- requirements -------------------------------------------------------------------------


def test_requirements_lock_agrees_with_pyproject():
    """requirements/prod.txt holds every pyproject pin as is, and ranges are satisfied."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lock = {}
    for line in (ROOT / "requirements" / "prod.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            lock[canonicalize_name(name)] = version
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is missing from requirements/prod.txt"
        assert req.specifier.contains(lock[name], prereleases=True), f"{spec} vs {lock[name]}"
        for extra in req.extras:  # psycopg[binary] brings psycopg-binary
            assert canonicalize_name(f"{req.name}-{extra}") in lock, spec
    assert "salesflow" not in lock


def test_validators_are_pinned_in_the_dev_extra():
    """The validators these tests use are exact pins of the dev extra (.ci/run installs it)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dev = {
        canonicalize_name(Requirement(r).name): Requirement(r)
        for r in project["optional-dependencies"]["dev"]
    }
    for name in ("kubernetes-validate", "check-jsonschema", "dockerfile-parse"):
        assert str(dev[name].specifier).startswith("=="), name
    assert ".[dev]" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


# --- commands -----------------------------------------------------------------------------


def split_shell(argv: list[str]) -> list[list[str]]:
    """``sh -c 'a && b'`` as its commands; any other argv as itself (tini stripped)."""
    if argv[:2] == ["/usr/bin/tini", "--"]:
        argv = argv[2:]
    if argv[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in argv[2].split("&&")]
    return [argv] if argv else []


def all_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command the container files run."""
    out: list[tuple[str, list[str]]] = []
    entry = exec_form(instructions("ENTRYPOINT")[-1])
    for where, value in (("Dockerfile CMD", instructions("CMD")[-1]),):
        out += [(where, a) for a in split_shell(entry + exec_form(value))]
    check = instructions("HEALTHCHECK")[-1].split(" CMD ", 1)[1]
    out.append(("Dockerfile HEALTHCHECK", exec_form(check)))
    for name, svc in compose()["services"].items():
        if name == "postgres":
            continue  # the postgres image's own tools (pg_isready)
        for key in ("entrypoint", "command"):
            if key in svc:
                out += [(f"compose {name}.{key}", a) for a in split_shell(svc[key])]
        test = svc.get("healthcheck", {}).get("test")
        if test:
            out.append((f"compose {name}.healthcheck", test[1:]))
    for name, _, c in k8s_containers():
        argv = c.get("command", []) + c.get("args", [])
        out += [(f"k8s {name}", a) for a in split_shell(argv)]
        hook = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        if hook:
            out.append((f"k8s {name}.preStop", hook))
    return out


def commands_of(program: str) -> list[tuple[str, list[str]]]:
    return [(w, a) for w, a in all_commands() if a[0] == program]


def test_every_command_uses_a_known_program():
    """Containers run only salesflow, prefect, mlflow, dask and python (all in the image)."""
    programs = {a[0] for _, a in all_commands()}
    assert programs <= {"salesflow", "prefect", "mlflow", "dask", "python"}, programs
    assert {"salesflow", "prefect", "mlflow", "dask"} <= programs
    for program in programs - {"python"}:
        assert (BIN / program).exists(), f"{program} is not installed in the venv"


def test_salesflow_commands_parse_with_the_real_cli():
    """Every salesflow command parses with salesflow's own argparse parser."""
    from salesflow.commands.cli import build_parser

    found = commands_of("salesflow")
    assert {a[1] for _, a in found} >= {"serve", "dashboard"}
    for where, argv in found:
        try:
            args = build_parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{where}: salesflow rejects {argv[1:]}")
        if args.command in {"serve", "dashboard"}:
            assert args.host == "0.0.0.0", f"{where}: a container must listen on all interfaces"


@cache
def prefect_help(words: tuple[str, ...]) -> str:
    env = {**os.environ, "COLUMNS": "200", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    out = subprocess.run(
        [str(BIN / "prefect"), *words, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, f"prefect {' '.join(words)}: {out.stderr[-500:]}"
    return out.stdout


def split_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """(leading subcommand words, --options) of an argv without the program name."""
    words = []
    for a in argv:
        if a.startswith("-"):
            break
        words.append(a)
    return words, [a.split("=")[0] for a in argv if a.startswith("--")]


def test_prefect_commands_exist_with_their_options():
    """Every prefect subcommand exists (its help's usage names it, with room for the
    positional arguments given) and lists each option the containers pass."""
    found = commands_of("prefect")
    assert len(found) >= 4
    for where, argv in found:
        rest = argv[1:]
        n = next(i for i, a in enumerate(rest) if not a.startswith("-"))
        for opt in rest[:n]:  # options of the prefect command itself (--no-prompt)
            assert re.search(rf"(?<![\w-]){opt}(?![\w-])", prefect_help(())), f"{where}: {opt}"
        words, options = split_options(rest[n:])
        helptext = prefect_help(tuple(words))
        usage = re.search(r"Usage: prefect (.*)", helptext).group(1).split()
        path = [u for u in usage if re.fullmatch(r"[a-z][a-z0-9-]*", u)]
        positional = [u for u in usage if u.isupper() and u != "COMMAND"]
        assert words[: len(path)] == path, f"{where}: prefect has no {' '.join(words)}"
        assert len(words) - len(path) <= len(positional), f"{where}: {usage}"
        for opt in options:
            assert re.search(rf"(?<![\w-]){opt}(?![\w-])", helptext), f"{where}: {opt}"


def dask_context(argv: list[str]) -> dict[str, Any]:
    """``dask scheduler|worker ...`` parsed by distributed's own click commands (the
    options' values checked as the CLI checks them); a bad option fails the test."""
    import click
    from distributed.cli import dask_scheduler, dask_worker

    command = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}[argv[1]]
    try:
        return command.make_context(f"dask {argv[1]}", list(argv[2:])).params
    except click.ClickException as exc:  # pragma: no cover - reported as the failure
        pytest.fail(f"dask {argv[1]} rejects {argv[2:]}: {exc.format_message()}")


def test_dask_commands_parse_with_the_real_cli_and_meet():
    """The Dask scheduler and workers parse with distributed's CLI; the workers dial the
    scheduler's Service on its port, the Prefect worker points salesflow at the same
    address, and each Dask worker's memory limit sits below its container's limit."""
    from dask.utils import parse_bytes

    found = {a[1]: (w, a) for w, a in commands_of("dask")}
    assert set(found) == {"scheduler", "worker"}
    scheduler = dask_context(found["scheduler"][1])
    worker = dask_context(found["worker"][1])
    service = k8s_by_kind("Service")["dask-scheduler"]
    comm = {p["name"]: p["port"] for p in service["spec"]["ports"]}["comm"]
    assert int(scheduler["port"]) == comm
    address = f"tcp://dask-scheduler:{comm}"
    assert worker["scheduler"] == address
    prefect_worker = k8s_by_kind("Deployment")["prefect-worker"]
    env = {e["name"]: e.get("value") for e in pod_spec(prefect_worker)["containers"][0]["env"]}
    assert env["SALESFLOW_COMPUTE__ENGINE"] == "dask"
    assert env["SALESFLOW_COMPUTE__ADDRESS"] == address
    container = pod_spec(k8s_by_kind("Deployment")["dask-worker"])["containers"][0]
    limit = parse_bytes(container["resources"]["limits"]["memory"].replace("Gi", "GiB"))
    assert parse_bytes(worker["memory_limit"]) < limit
    names = {e["name"] for e in container["env"]}
    assert {"SALESFLOW_WAREHOUSE_URL", "OMP_WAIT_POLICY", "POD_NAME"} <= names
    assert "$(POD_NAME)" in found["worker"][1]


def pool_of(argv: list[str]) -> str | None:
    if argv[1:3] == ["work-pool", "create"]:
        return argv[3]
    return argv[argv.index("--pool") + 1] if "--pool" in argv else None


def test_workers_poll_the_pool_of_the_deployments():
    """The work pool created and polled is deployments/prefect.yaml's pool."""
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text(encoding="utf-8"))
    pool = spec["definitions"]["work_pool"]["name"]
    pools = {pool_of(a) for _, a in commands_of("prefect")} - {None}
    assert pools == {pool}
    deploys = [a for _, a in commands_of("prefect") if "deploy" in a]
    for argv in deploys:
        assert (ROOT / argv[argv.index("--prefect-file") + 1]).exists()


MLFLOW_PROBE = """
import json, sys
import mlflow.cli as c
from mlflow.server.security_utils import is_allowed_host_header
asked = json.load(sys.stdin)
out = {"options": {}, "allowed": {}}
for name in asked["commands"]:
    cmd = c.cli.commands.get(name)
    out["options"][name] = None if cmd is None else sorted(
        o for p in cmd.params for o in p.opts + p.secondary_opts
    )
for hosts, host in asked["hosts"]:
    out["allowed"][hosts + " " + host] = is_allowed_host_header(hosts.split(","), host)
json.dump(out, sys.stdout)
"""


def tracking_hosts() -> list[str]:
    """The Host headers clients send to MLflow: from every tracking URI the files set."""
    uris = [env_of(s).get("SALESFLOW_MLFLOW__TRACKING_URI") for s in compose()["services"].values()]
    uris += [
        d["data"].get("SALESFLOW_MLFLOW__TRACKING_URI") for d in k8s_by_kind("ConfigMap").values()
    ]
    return sorted({u.split("://", 1)[1].rstrip("/") for u in uris if u})


def test_mlflow_commands_exist_and_allow_the_clients_host():
    """mlflow server takes every option given, and its --allowed-hosts admit the clients'
    Host header (MLflow answers 403 to others), checked with MLflow's own matcher."""
    found = commands_of("mlflow")
    assert found
    hosts = tracking_hosts()
    assert hosts
    pairs = []
    for _, argv in found:
        allowed = argv[argv.index("--allowed-hosts") + 1]
        pairs += [(allowed, h) for h in hosts] + [(allowed, "localhost:5000")]
    asked = {"commands": sorted({a[1] for _, a in found}), "hosts": pairs}
    out = subprocess.run(
        [sys.executable, "-c", MLFLOW_PROBE],
        input=json.dumps(asked),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    probe = json.loads(out.stdout)
    for where, argv in found:
        opts = probe["options"][argv[1]]
        assert opts is not None, f"{where}: no mlflow {argv[1]}"
        for opt in split_options(argv[2:])[1]:
            assert opt in opts, f"{where}: mlflow {argv[1]} has no {opt}"
    rejected = [k for k, ok in probe["allowed"].items() if not ok]
    assert not rejected


def test_python_commands_run_files_of_the_image():
    """python commands name a script the image copies, or code that compiles."""
    copied = [i.split()[0] for i in instructions("COPY")]
    for where, argv in commands_of("python"):
        if argv[1] == "-c":
            compile(argv[2], where, "exec")
            continue
        script = argv[1].removeprefix(f"{IMAGE_WORKDIR}/")
        assert (ROOT / script).is_file(), f"{where}: {argv[1]}"
        assert any(script.startswith(f"{c}/") for c in copied), f"{where}: not copied"


def test_ensure_experiment_script_imports_the_core():
    """deploy/docker/ensure_experiment.py finds the core functions it calls."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy; runpy.run_path('deploy/docker/ensure_experiment.py')",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_healthcheck_script_exits_by_status():
    """healthcheck.py exits 0 on a 2xx answer and 1 on a 503 or a closed port."""
    server = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    script = str(ROOT / "deploy" / "docker" / "healthcheck.py")
    try:
        codes = [
            subprocess.run(
                [sys.executable, script, url], capture_output=True, timeout=30
            ).returncode
            for url in (f"{base}/health", f"{base}/ready")
        ]
    finally:
        server.shutdown()
        server.server_close()
    closed = subprocess.run(
        [sys.executable, script, base + "/health"], capture_output=True, timeout=30
    )
    assert codes == [0, 1] and closed.returncode == 1


# --- environment and secrets --------------------------------------------------------------

SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|_URL$|_URI$|CONNECTION|API_KEY", re.I)
# key=value or key: value with a password-like key and a literal value; ${...} references
# are replaced by REF first (literal_secret), and REF or an empty value is no literal.
LITERAL_SECRET = re.compile(
    r"(password|passwd|secret|token|api[_-]?key)[\"']?\s*[=:]\s*(?![\s\"']*(REF\b|$|\"\"|''))",
    re.I,
)


def literal_secret(line: str) -> str | None:
    """The credential written in ``line`` (a password in a URL, a password-like key with a
    literal value), or None; ${...} interpolations are references, not literals."""
    plain = re.sub(r"\$\{[^}]*\}", "REF", line)
    for user_info in re.findall(r"://([^@/\s]+)@", plain):
        if user_info.partition(":")[2] not in {"", "REF"}:
            return user_info
    m = LITERAL_SECRET.search(plain)
    return m.group(0) if m else None


NOT_SECRET_URLS = re.compile(r"^https?://[\w.-]+(:\d+)?(/[\w/]*)?$")


def text_files() -> list[Path]:
    files = [ROOT / "Dockerfile", ROOT / "compose.yaml", ROOT / ".dockerignore"]
    return files + sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())


def test_no_secret_literal_anywhere():
    """No password, token or credentialed URL is written in the container files."""
    for path in text_files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{n}"
            if line.lstrip().startswith(("#", "--")) or PLACEHOLDER in line:
                continue
            assert not literal_secret(line), f"{where}: {line.strip()}"


def test_secret_scan_catches_a_literal():
    """The scan is live: a literal password in a URL or an assignment is caught."""
    assert literal_secret("POSTGRES_PASSWORD: hunter2")
    assert literal_secret("url: postgresql://u:hunter2@db/x")
    assert literal_secret("url: postgresql://u:hunter2${X}@db/x")
    assert not literal_secret("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it}")
    assert not literal_secret("url: postgresql://u:${POSTGRES_PASSWORD:?set it}@db/x")
    assert not literal_secret("url: postgresql://u@db/x")


def container_environments() -> dict[str, dict[str, str]]:
    """The environment each salesflow process gets: image ENV, then compose or k8s values
    (secret references replaced by a URL of their kind)."""
    image = dict(dockerfile().envs)
    out = {}
    for name in SALESFLOW_SERVICES:
        out[f"compose {name}"] = {**image, **env_of(compose()["services"][name])}
    config = {k: v for d in k8s_by_kind("ConfigMap").values() for k, v in d["data"].items()}
    secret = k8s_by_kind("Secret")["salesflow-secrets"]["stringData"]
    for name, _, c in k8s_containers():
        if c["command"][0] not in {"salesflow", "sh"} and "worker" not in c["command"]:
            continue
        env = {**image}
        for src in c.get("envFrom", []):
            assert src["configMapRef"]["name"] in k8s_by_kind("ConfigMap")
            env.update(config)
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            # a fieldRef (the pod's name) is filled in by Kubernetes: any value does here
            env[e["name"]] = secret[ref["key"]] if ref else e.get("value", "pod-name")
        out[f"k8s {name}"] = env
    return out


LOAD = (
    "from salesflow.config.settings import load_settings; s = load_settings(); "
    "print(s.env, s.tracking_uri, s.warehouse_url.split('@')[-1])"
)


def run_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """load_settings() in a fresh process with ``env`` as its only SALESFLOW_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("SALESFLOW_")}
    # ${VAR...} is compose's interpolation: give it a value, as compose would.
    resolved = {k: re.sub(r"\$\{[^}]*\}", "pw", v) for k, v in env.items()}
    resolved = {k: v.replace(PLACEHOLDER, "pw") for k, v in resolved.items()}
    return subprocess.run(
        [sys.executable, "-c", LOAD],
        cwd=ROOT,
        env={**base, **resolved},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_container_environments_are_accepted_by_the_settings():
    """Each container's SALESFLOW_* variables load as prod settings (unknown names fail)."""
    envs = container_environments()
    assert len(envs) >= 8
    unique = {json.dumps(sorted(e.items())): where for where, e in envs.items()}
    for key, where in unique.items():
        out = run_settings(dict(json.loads(key)))
        assert out.returncode == 0, f"{where}: {out.stderr[-1500:]}"
        env, tracking, warehouse = out.stdout.split()
        assert env == "prod", where
        assert tracking == "http://mlflow:5000", where
        assert warehouse.endswith("/warehouse"), where


def test_settings_refuse_a_misspelt_container_variable():
    """The check is live: a misspelt SALESFLOW_ variable makes the same load fail."""
    env = {**container_environments()["compose api"], "SALESFLOW_MLFLOW__TRACKINGURI": "x"}
    out = run_settings(env)
    assert out.returncode != 0 and "SALESFLOW_MLFLOW__TRACKINGURI" in out.stderr


def test_urls_of_the_config_carry_no_credentials():
    """Values in the ConfigMap and compose's shared block are plain service URLs."""
    for d in k8s_by_kind("ConfigMap").values():
        for key, value in d["data"].items():
            assert "://" not in value or NOT_SECRET_URLS.match(value), key
