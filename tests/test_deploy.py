"""deploy/kubernetes/ holds what docs/deployment.md says, and the pod it describes really works.

Every manifest is parsed (all documents of each file), its kind and apiVersion checked, and then the
properties the deployment depends on: the non-root, read-only security context; probes on /livez and
/readyz at the container's port; a grace period longer than preStop + the config's drain_timeout;
the ConfigMap mounted as a directory (a subPath mount never sees updates, so hot reload would not
work); every ``${NAME}`` of the config provided from the Secret; the config passing the gateway's
own validation pipeline; the Service reaching the container port; the kustomization listing every
file. When ``kubernetes-validate`` is installed the manifests are also checked against the
Kubernetes schemas (offline: it ships them). Last, the pod's own command is run on the ConfigMap's
config laid out as a ConfigMap volume: probes, the Host check for the Service's names, a hot reload
through a ``..data`` symlink swap, and a clean stop on SIGTERM.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from gateway.config.loader import load_text
from gateway.config.model import GatewayConfig
from gateway.config.problems import Problem

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
DOC = ROOT / "docs" / "deployment.md"
MCPGW = str(Path(sys.executable).with_name("mcpgw"))

KINDS = {
    "kustomization.yaml": ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    "configmap.yaml": ("v1", "ConfigMap"),
    "secret.example.yaml": ("v1", "Secret"),
    "deployment.yaml": ("apps/v1", "Deployment"),
    "service.yaml": ("v1", "Service"),
    "hpa.yaml": ("autoscaling/v2", "HorizontalPodAutoscaler"),
}
COMMAND = ["mcpgw", "serve", "/etc/mcpgw/proxy.yaml", "--transport", "streamable-http", "--host", "0.0.0.0"]


# --- reading the manifests ----------------------------------------------------------------------

def documents(name: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file (``---`` separated files included)."""
    with (KUBE / name).open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def objects() -> list[dict[str, Any]]:
    """The Kubernetes objects (everything kustomize applies, the Kustomization itself excluded)."""
    return [doc for name in sorted(KINDS) if name != "kustomization.yaml" for doc in documents(name)]


def one(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in objects() if doc["kind"] == kind]
    return found


def kustomization() -> dict[str, Any]:
    (doc,) = documents("kustomization.yaml")
    return doc


def pod() -> dict[str, Any]:
    return one("Deployment")["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    (only,) = pod()["containers"]
    return only


def container_port(port: int | str) -> int:
    """A probe's or the Service's port, by number or by the container port's name."""
    ports = container()["ports"]
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in ports], f"{port} is not a container port"
        return port
    (found,) = [p["containerPort"] for p in ports if p.get("name") == port]
    return found


def command_line() -> list[str]:
    return list(container().get("command", [])) + list(container().get("args", []))


def config_path() -> PurePosixPath:
    args = command_line()
    return PurePosixPath(args[args.index("serve") + 1])


def proxy_yaml() -> str:
    return one("ConfigMap")["data"][config_path().name]


def secret_values() -> dict[str, str]:
    secret = one("Secret")
    values = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    values.update(secret.get("stringData", {}))
    return values


def pod_env() -> dict[str, str]:
    """The container's environment as the kubelet would build it from the manifests."""
    env: dict[str, str] = {}
    secret = one("Secret")
    for entry in container().get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"], f"{entry['name']}: a Secret this kustomization lacks"
        assert not ref.get("optional"), f"{entry['name']}: a missing key must stop the pod, not blank a secret"
        env[entry["name"]] = secret_values()[ref["key"]]
    return env


def load_config() -> tuple[GatewayConfig | None, list[Problem]]:
    path = config_path()
    result = load_text(proxy_yaml(), str(path), pod_env(), Path(str(path.parent)))
    return result.config, list(result.problems)


def config() -> GatewayConfig:
    loaded, problems = load_config()
    assert loaded is not None, [p.render() for p in problems]
    return loaded


def seconds(duration: Any) -> float:
    return duration.total_seconds() if hasattr(duration, "total_seconds") else float(duration)


def dockerfile_user() -> int:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    user = next(line.split()[1] for line in reversed(lines) if line.startswith("USER "))
    return int(user)


# --- the files ---------------------------------------------------------------------------------

def test_every_manifest_parses_and_has_its_kind_and_api_version() -> None:
    assert {p.name for p in KUBE.glob("*.yaml")} >= set(KINDS)
    for name, (api_version, kind) in KINDS.items():
        docs = documents(name)
        assert [(d.get("apiVersion"), d.get("kind")) for d in docs] == [(api_version, kind)], name
        if kind != "Kustomization":
            assert docs[0]["metadata"]["name"], name
            assert "namespace" not in docs[0]["metadata"], f"{name}: the kustomization sets the namespace"


def test_the_kustomization_lists_every_manifest_and_names_the_deployments_image() -> None:
    kust = kustomization()
    manifests = sorted(p.name for p in KUBE.glob("*.y*ml") if p.name != "kustomization.yaml")
    assert sorted(kust["resources"]) == manifests
    assert len(set(kust["resources"])) == len(kust["resources"])
    image = container()["image"]
    assert image in [i["name"] for i in kust.get("images", [])], "kustomization.yaml must say which image to run"
    assert "configMapGenerator" not in kust, "a generator renames the ConfigMap on edits: rollouts, not hot reload"


@pytest.mark.parametrize("version", ["1.29", "latest"])
def test_the_manifests_pass_the_kubernetes_schemas(version: str) -> None:
    """Strict: an unknown or misspelt field (`periodSecondz`) fails, as `kubectl apply` would."""
    validate = pytest.importorskip("kubernetes_validate.utils", reason="pip install kubernetes-validate")
    wanted = validate.latest_version() if version == "latest" else version
    failures = []
    for obj in objects():
        try:
            validate.validate(obj, wanted, strict=True)
        except validate.ValidationError as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert failures == []


def test_the_secret_is_clearly_an_example_with_placeholder_values() -> None:
    secret = one("Secret")
    assert secret["type"] == "Opaque"
    assert secret_values() and all(v.startswith("CHANGE-ME") for v in secret_values().values())
    assert "EXAMPLE" in (KUBE / "secret.example.yaml").read_text().splitlines()[0]


# --- the configuration in the ConfigMap --------------------------------------------------------

def test_the_configmaps_proxy_yaml_passes_the_gateways_own_validation() -> None:
    loaded, problems = load_config()
    assert [p.render() for p in problems if p.severity == "error"] == []
    # Nothing it shows may be a setting the gateway does not act on yet (shared limits, signed sessions).
    assert [p.render() for p in problems if p.code == "not-supported-yet"] == []
    assert loaded is not None


def test_every_reference_in_the_config_comes_from_the_pods_environment() -> None:
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[-?][^}]*)?\}", proxy_yaml()))
    assert referenced, "the example shows secrets by reference"
    from_secret = {e["name"] for e in container()["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert referenced <= from_secret


def test_the_config_serves_http_on_the_container_port_with_metrics() -> None:
    cfg = config()
    assert cfg.gateway.transport == "streamable-http"
    assert cfg.gateway.http.host == "0.0.0.0"
    assert cfg.gateway.http.port == container_port("http")
    assert cfg.observability.metrics is True


def test_allowed_hosts_cover_every_name_of_the_service() -> None:
    service, namespace = one("Service")["metadata"]["name"], kustomization()["namespace"]
    names = {service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"}
    assert names <= set(config().gateway.http.allowed_hosts)


# --- the Deployment ----------------------------------------------------------------------------

def test_the_container_runs_the_command_the_doc_gives() -> None:
    assert command_line() == COMMAND
    assert " ".join(COMMAND) in DOC.read_text()
    assert str(config_path()) == "/etc/mcpgw/proxy.yaml"


def test_the_pod_runs_as_the_dockerfiles_user_without_privileges() -> None:
    spec, ctr = pod(), container()
    merged = {**spec.get("securityContext", {}), **ctr.get("securityContext", {})}  # the container's wins
    assert merged["runAsNonRoot"] is True
    assert merged["runAsUser"] == dockerfile_user() == 10001
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert not ctr["securityContext"].get("capabilities", {}).get("add")
    assert not ctr["securityContext"].get("privileged", False)
    assert spec.get("automountServiceAccountToken") is False
    # A read-only root filesystem still needs a writable /tmp.
    volumes = {v["name"]: v for v in spec["volumes"]}
    (tmp,) = [m for m in ctr["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]


def test_the_container_has_resource_requests_and_limits() -> None:
    resources = container()["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), section


def test_probes_are_livez_and_readyz_on_the_container_port() -> None:
    ctr = container()
    port = config().gateway.http.port
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", "/livez")):
        get = ctr[probe]["httpGet"]
        assert get["path"] == path, probe
        assert container_port(get["port"]) == port, probe
        assert get.get("scheme", "HTTP") == "HTTP", probe
    # Startup waits for each upstream's connect_timeout before the gateway listens.
    startup = ctr["startupProbe"]
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert budget > max(seconds(s.connect_timeout) for s in config().servers.values())


def test_termination_leaves_time_to_stop_routing_and_to_drain() -> None:
    """The grace period covers preStop (the Service stops routing) and then drain_timeout."""
    spec, ctr = pod(), container()
    pre_stop = ctr["lifecycle"]["preStop"]
    sleep = pre_stop["sleep"]["seconds"] if "sleep" in pre_stop else int(pre_stop["exec"]["command"][-1])
    assert pre_stop.get("sleep") or pre_stop["exec"]["command"][0] == "sleep"
    assert sleep >= 5
    drain = seconds(config().gateway.drain_timeout)
    assert spec["terminationGracePeriodSeconds"] > sleep + drain
    strategy = one("Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0, "a rollout must not lower capacity"


def test_the_configmap_is_mounted_as_a_directory_so_hot_reload_sees_updates() -> None:
    spec, ctr = pod(), container()
    configmap = one("ConfigMap")["metadata"]["name"]
    (volume,) = [v for v in spec["volumes"] if v.get("configMap", {}).get("name") == configmap]
    assert not volume["configMap"].get("items"), "items remap file names; proxy.yaml keeps its own"
    mounts = [m for m in ctr["volumeMounts"] if m["name"] == volume["name"]]
    assert mounts and all("subPath" not in m and "subPathExpr" not in m for m in mounts)
    assert [m["mountPath"] for m in mounts] == [str(config_path().parent)]
    assert "subPath" in (KUBE / "deployment.yaml").read_text(), "the comment saying why not"
    assert "subPath" in DOC.read_text()


def test_the_pod_template_carries_prometheus_scrape_annotations() -> None:
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == config().gateway.http.port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_deployment_selects_its_own_pods_and_leaves_the_count_to_the_hpa() -> None:
    deployment = one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "replicas" not in deployment["spec"], "the HPA owns it; apply would reset it"


# --- Service and HPA ---------------------------------------------------------------------------

def test_the_service_is_cluster_ip_port_80_to_the_container_port_with_affinity() -> None:
    service = one("Service")["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    (port,) = service["ports"]
    assert port["port"] == 80
    assert container_port(port["targetPort"]) == config().gateway.http.port == 12006
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    # Any replica can serve a session (signed ids), but what a session keeps in one replica's memory
    # (questions to the client, resumable streams) wants affinity; the comment beside it says why.
    assert service["sessionAffinity"] == "ClientIP"
    assert "signed session ids" in (KUBE / "service.yaml").read_text()


def test_the_replicas_share_a_session_signing_key_from_the_secret() -> None:
    key = config().gateway.http.session_signing_key
    assert key is not None and key.written_as == "${MCPGW_SESSION_KEY}"
    assert "MCPGW_SESSION_KEY" in secret_values()


def test_the_doc_states_how_replicas_share_sessions_and_limits_and_what_stays_in_one() -> None:
    doc = DOC.read_text()
    for phrase in ("any replica serves any request", "session_signing_key", "What does not cross replicas",
                   "Shared rate limits", "--stateless", "sessionAffinity: ClientIP", "kubectl apply -k deploy/kubernetes"):
        assert phrase in doc, phrase


def test_the_hpa_scales_the_deployment_on_cpu() -> None:
    hpa = one("HorizontalPodAutoscaler")["spec"]
    deployment = one("Deployment")
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert "cpu" in container()["resources"]["requests"], "utilization is a percentage of the request"


# --- the pod's command, run ----------------------------------------------------------------------

def _request(port: int, method: str, path: str, host: str, headers: dict[str, str] | None = None,
             body: dict[str, Any] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _configmap_volume(directory: Path, text: str) -> Path:
    """What the kubelet makes of a ConfigMap: proxy.yaml -> ..data/proxy.yaml, ..data -> ..<stamp>."""
    stamp = directory / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir()
    (stamp / "proxy.yaml").write_text(text, encoding="utf-8")
    (directory / "..data").symlink_to(stamp.name)
    (directory / "proxy.yaml").symlink_to("..data/proxy.yaml")
    return directory / "proxy.yaml"


def _swap(directory: Path, text: str) -> None:
    """A ConfigMap update, as the kubelet does it: a new directory, then one atomic symlink rename."""
    stamp = directory / "..2026_01_01_00_01_00.000000002"
    stamp.mkdir()
    (stamp / "proxy.yaml").write_text(text, encoding="utf-8")
    (directory / "..data_tmp").symlink_to(stamp.name)
    os.replace(directory / "..data_tmp", directory / "..data")


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def test_the_pods_command_serves_probes_checks_hosts_reloads_and_drains(tmp_path: Path) -> None:
    """The Deployment's command on the ConfigMap's config (on loopback, any free port)."""
    volume = tmp_path / "etc-mcpgw"
    volume.mkdir()
    config_file = _configmap_volume(volume, proxy_yaml())
    args = command_line()
    argv = [MCPGW, *args[1:]]
    argv[argv.index(str(config_path()))] = str(config_file)
    argv += ["--host", "127.0.0.1", "--port", "0"]  # the last value of an option wins
    env = {**pod_env(), "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "HOME": str(tmp_path)}
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env=env, cwd=tmp_path)
    try:
        def listening() -> int | None:
            assert process.poll() is None, log.read_text()
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/mcp", log.read_text())
            return int(found.group(1)) if found else None

        port = _wait(listening, 30, "the gateway to listen")
        service, namespace = one("Service")["metadata"]["name"], kustomization()["namespace"]
        pod_ip = "10.1.2.3:12006"  # what the kubelet's probes send as Host

        assert _request(port, "GET", "/livez", pod_ip)[0] == 200
        _wait(lambda: _request(port, "GET", "/readyz", pod_ip)[0] == 200, 30, "/readyz")
        status, metrics = _request(port, "GET", "/metrics", pod_ip)
        assert status == 200 and "mcpgw_config_info" in metrics

        key = {"Authorization": "Bearer " + secret_values()["MCPGW_CI_KEY"]}
        for host in (service, f"{service}.{namespace}.svc.cluster.local", f"{service}:80", "localhost:8080"):
            status, body = _request(port, "POST", "/mcp", host, {**MCP_HEADERS, **key}, INITIALIZE)
            assert status == 200 and '"serverInfo"' in body, (host, status, body)
        assert _request(port, "POST", "/mcp", "evil.example", {**MCP_HEADERS, **key}, INITIALIZE)[0] == 421
        assert _request(port, "POST", "/mcp", service, MCP_HEADERS, INITIALIZE)[0] == 401
        # A session another replica issued is unknown here: why the Service pins clients.
        other = {**MCP_HEADERS, **key, "Mcp-Session-Id": "0" * 32, "Mcp-Protocol-Version": "2025-11-25"}
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        assert _request(port, "POST", "/mcp", service, other, ping)[0] == 404

        # A ConfigMap edit arrives as a ..data swap; the watcher follows it.
        def version() -> int:
            return json.loads(_request(port, "GET", "/health", pod_ip)[1])["config"]["version"]

        before = version()
        edited = proxy_yaml().replace("requests: 100, per: 1m", "requests: 50, per: 1m")
        assert edited != proxy_yaml()
        _swap(volume, edited)
        _wait(lambda: version() > before, 20, "the reload after the ..data swap")
        assert "reload rejected" not in log.read_text()

        # SIGTERM (after preStop): stops well within the grace period.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=seconds(config().gateway.drain_timeout)) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
