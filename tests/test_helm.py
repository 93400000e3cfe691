"""The Helm chart rendered by real helm (pinned, installed by .ci/install-helm) and checked the way
a cluster would: `helm lint --strict`, every rendered object against the Kubernetes schemas of the
oldest and newest version the chart declares (kubernetes-validate, strict) or, for the
prometheus-operator kinds, against the CRD fields the chart uses; the rendered config through
check-config, the rendered rules through promtool and against grafana/alerts, the rendered
dashboards against grafana/dashboards; bad values and broken templates refused."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from exporter.config import Config
from tests.helpers import REFERENCE, ROOT, printed_secrets, require_binary, run_cli

CHART = ROOT / "helm" / "ci-pipeline-exporter"
# The one value the chart's defaults lack (where the GitHub credentials are).
CREDENTIALS = ("--set", "github.existingSecret=cipe-github")
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
BAD_VALUES = sorted((REFERENCE / "helm-bad-values").glob("*.yaml"))
OPERATOR_SCHEMAS = {
    "ServiceMonitor": REFERENCE / "prometheus-operator" / "servicemonitor-v1.json",
    "PrometheusRule": REFERENCE / "prometheus-operator" / "prometheusrule-v1.json",
}
RELEASE = "cipe"
NAMESPACE = "monitoring"


def declared_kubernetes_versions() -> tuple[str, str]:
    """The oldest and the newest Kubernetes the chart declares (`kubeVersion`) that
    kubernetes-validate has schemas for; the oldest must be the chart's floor itself."""
    declared = str(yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"])
    match = re.fullmatch(
        r">=\s*(\d+)\.(\d+)\.\d+(?:-0)?(?:\s*,?\s*<\s*(\d+)\.(\d+)\.\d+(?:-0)?)?", declared.strip()
    )
    assert match, f"kubeVersion {declared!r}: expected '>=X.Y.Z-0', optionally '<X.Y.Z-0'"
    floor = (int(match[1]), int(match[2]))
    ceiling = (int(match[3]), int(match[4])) if match[3] else None
    known = {
        tuple(int(p) for p in v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()
    }
    within = sorted(v for v in known if v >= floor and (ceiling is None or v < ceiling))
    missing = f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for {declared}"
    assert within, missing
    assert within[0] == floor, missing
    return f"{floor[0]}.{floor[1]}.0", f"{within[-1][0]}.{within[-1][1]}.0"


OLDEST, NEWEST = declared_kubernetes_versions()


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm with its own empty config, cache and data folders (no repositories, no plugins)."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


Helm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def helm(helm_env: dict[str, str]) -> Helm:
    binary = require_binary("helm")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, *args], capture_output=True, text=True, env=helm_env, timeout=120
        )

    return run


@dataclass(frozen=True)
class Rendered:
    objects: list[dict[str, Any]]
    templates: frozenset[str]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        (obj,) = self.of_kind(kind)
        return obj


def template(helm: Helm, chart: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return helm("template", RELEASE, str(chart), "--namespace", NAMESPACE, *args)


def parse(manifest: str) -> Rendered:
    return Rendered(
        objects=[o for o in yaml.safe_load_all(manifest) if o],
        templates=frozenset(re.findall(r"^# Source: [^/]+/(templates/\S+)$", manifest, re.M)),
    )


@pytest.fixture(scope="module")
def render(helm: Helm) -> Callable[[Path, str], Rendered]:
    """`helm template` of the chart with a values file for a Kubernetes version, once each."""
    done: dict[tuple[Path, str], Rendered] = {}

    def run(values: Path, kube_version: str = NEWEST) -> Rendered:
        if (values, kube_version) not in done:
            result = template(helm, CHART, "-f", str(values), "--kube-version", kube_version)
            assert result.returncode == 0, result.stderr
            done[values, kube_version] = parse(result.stdout)
        return done[values, kube_version]

    return run


@cache
def _operator_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(OPERATOR_SCHEMAS[kind].read_text())
    return jsonschema.Draft202012Validator(schema)


def validation_errors(obj: dict[str, Any], kube_version: str) -> list[str]:
    """Why the object would be refused: Kubernetes' own kinds by kubernetes-validate --strict for
    that version, the prometheus-operator kinds by the CRD fields the chart uses."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if str(obj.get("apiVersion", "")).startswith("monitoring.coreos.com/"):
        if obj.get("kind") not in OPERATOR_SCHEMAS:
            return [f"{name}: no schema for this prometheus-operator kind"]
        errors = _operator_validator(obj["kind"]).iter_errors(obj)
        return [f"{name}: {e.json_path}: {e.message}" for e in errors]
    try:
        kubernetes_validate.validate(obj, kube_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        return [f"{name} ({kube_version}): {path}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{name}: {error.message}"]
    return []


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


FULLNAME = f"{RELEASE}-ci-pipeline-exporter"


def service_named(rendered: Rendered, name: str) -> dict[str, Any]:
    (service,) = [s for s in rendered.of_kind("Service") if s["metadata"]["name"] == name]
    return service


def metrics_service(rendered: Rendered) -> dict[str, Any]:
    """The Service the ServiceMonitor scrapes (the chart's full name; others have a suffix)."""
    name = rendered.one("StatefulSet")["metadata"]["name"]
    return service_named(rendered, name)


# --- the chart as shipped ---------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_helm_lint_strict(helm: Helm, values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("kube_version", [OLDEST, NEWEST])
@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_rendered_objects_validate_strictly(
    render: Callable[[Path, str], Rendered], values: Path, kube_version: str
) -> None:
    rendered = render(values, kube_version)
    assert {"StatefulSet", "Service", "ConfigMap"} <= {o["kind"] for o in rendered.objects}
    errors = [e for obj in rendered.objects for e in validation_errors(obj, kube_version)]
    assert errors == [], "\n".join(errors)


def test_the_ci_values_render_every_template(render: Callable[[Path, str], Rendered]) -> None:
    """Between them, the files in ci/ make every template produce an object, so each is checked."""
    rendered = set().union(*(render(values, NEWEST).templates for values in CI_VALUES))
    templates = {f"templates/{p.name}" for p in (CHART / "templates").glob("*.yaml")}
    assert templates - rendered == set()


def test_the_full_values_render_each_optional_object(
    render: Callable[[Path, str], Rendered],
) -> None:
    rendered = render(CHART / "ci" / "full-values.yaml", NEWEST)
    kinds = sorted(o["kind"] for o in rendered.objects)
    dashboards = len(list((ROOT / "grafana" / "dashboards").glob("*.json")))
    assert kinds == sorted(
        [
            "ConfigMap",
            *["ConfigMap"] * dashboards,
            "NetworkPolicy",
            "PrometheusRule",
            *["Service"] * 2,  # metrics and the StatefulSet's headless one
            "ServiceAccount",
            "ServiceMonitor",
            "StatefulSet",
        ]
    )


def test_kubernetes_below_the_declared_floor_is_refused(helm: Helm) -> None:
    major, minor, _ = OLDEST.split(".")
    older = f"{major}.{int(minor) - 1}.0"
    result = template(helm, CHART, "--kube-version", older)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr, result.stderr


def _pod_environment(statefulset: dict[str, Any]) -> dict[str, str]:
    """The exporter container's environment as the pod of the last shard would have it; values
    from Secrets become placeholders."""
    replicas = int(statefulset["spec"]["replicas"])
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "pod-index" in json.dumps(item.get("valueFrom", {})):
            env[item["name"]] = str(replicas - 1)
        else:
            env[item["name"]] = "x" * 40
    return env


@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_rendered_config_passes_check_config(
    render: Callable[[Path, str], Rendered], values: Path, tmp_path: Path
) -> None:
    """The ConfigMap's config.yaml, with the environment the StatefulSet gives the pod (sharding,
    the token, the webhook secret), is a valid exporter config."""
    rendered = render(values, NEWEST)
    (configmap,) = [c for c in rendered.of_kind("ConfigMap") if "config.yaml" in c["data"]]
    config = tmp_path / "config.yaml"
    config.write_text(configmap["data"]["config.yaml"])
    pod_env = _pod_environment(rendered.one("StatefulSet"))
    assert pod_env["CIPE_SHARDING__TOTAL"] == str(rendered.one("StatefulSet")["spec"]["replicas"])
    result = run_cli("check-config", str(config), env=pod_env)
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["sharding"]["total"] == int(pod_env["CIPE_SHARDING__TOTAL"])
    # The webhook secret's variable is one the pod has (a Secret's key).
    secrets = printed_secrets(result.stdout)
    hook_secret = secrets.get("github.webhooks.secret", "")
    assert "(not set)" not in hook_secret, secrets
    hooks = (effective["github"] or {}).get("webhooks")
    if hooks:
        assert hook_secret.startswith("<redacted> from $"), secrets
        # Sharded: the exporter accepts the chart's forward_url template.
        if effective["sharding"]["total"] > 1:
            assert "{index}" in hooks["forward_url"]


@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_the_pod_finds_its_config_state_port_and_key(
    render: Callable[[Path, str], Rendered], values: Path
) -> None:
    """The StatefulSet, ConfigMap and Service agree: the --config path is the mounted ConfigMap's
    key, the state file is on the state volume, the listen port is the container's http port,
    and a GitHub App key file is where the Secret is mounted."""
    rendered = render(values, NEWEST)
    pod = rendered.one("StatefulSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_path = Path(container["args"][container["args"].index("--config") + 1])
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    (configmap,) = [
        c
        for c in rendered.of_kind("ConfigMap")
        if c["metadata"]["name"] == config_volume["configMap"]["name"]
    ]
    assert str(config_path.parent) == mounts["config"]
    assert config_path.name in configmap["data"]
    config = yaml.safe_load(configmap["data"][config_path.name])
    assert config["state"]["path"].startswith(mounts["state"] + "/")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(config.get("listen", "0.0.0.0:9469").rsplit(":", 1)[1]) == ports["http"]
    service = metrics_service(rendered)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    hooks = (config.get("github") or {}).get("webhooks")
    if hooks:
        assert int(hooks["listen"].rsplit(":", 1)[1]) == ports["webhook"]
    app = (config.get("github") or {}).get("app")
    if app:
        assert str(Path(app["private_key_file"]).parent) == mounts["app-key"]


def test_prometheus_rule_is_the_shipped_rules_and_passes_promtool(
    render: Callable[[Path, str], Rendered], tmp_path: Path
) -> None:
    rule = render(CHART / "ci" / "full-values.yaml", NEWEST).one("PrometheusRule")
    groups = rule["spec"]["groups"]
    shipped = yaml.safe_load((ROOT / "grafana" / "alerts" / "ci-pipeline.rules.yml").read_text())
    assert groups == shipped["groups"]
    rules_file = tmp_path / "rendered.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_dashboard_configmaps_are_the_generated_dashboards(
    render: Callable[[Path, str], Rendered],
) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["dashboards"]
    rendered = render(CHART / "ci" / "full-values.yaml", NEWEST)
    found = {}
    for configmap in rendered.of_kind("ConfigMap"):
        if configmap["metadata"]["labels"].get(values["label"]) != values["labelValue"]:
            continue
        ((name, text),) = configmap["data"].items()
        found[name] = json.loads(text)
    generated = {
        p.name: json.loads(p.read_text()) for p in (ROOT / "grafana" / "dashboards").glob("*.json")
    }
    assert sorted(found) == sorted(generated)
    for name, dashboard in generated.items():
        assert found[name] == dashboard, name


# --- webhooks ---------------------------------------------------------------------------------

WEBHOOKS_VALUES = CHART / "ci" / "webhooks-values.yaml"


def webhook_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(WEBHOOKS_VALUES.read_text())["webhooks"]
    return values


def render_webhooks(helm: Helm, *args: str) -> Rendered:
    """The webhook values file with further options (--set ...)."""
    result = template(helm, CHART, "-f", str(WEBHOOKS_VALUES), "--kube-version", NEWEST, *args)
    assert result.returncode == 0, result.stderr
    return parse(result.stdout)


def exporter_config(rendered: Rendered) -> dict[str, Any]:
    (configmap,) = [c for c in rendered.of_kind("ConfigMap") if "config.yaml" in c["data"]]
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["config.yaml"])
    return config


def container(rendered: Rendered) -> dict[str, Any]:
    (only,) = rendered.one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return dict(only)


@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_only_the_webhook_services_expose_the_webhook_port(
    render: Callable[[Path, str], Rendered], values: Path
) -> None:
    """The container's http port is exposed by the metrics Service alone (so the ServiceMonitor's
    `http` endpoint is scraped once); its webhook port, when webhooks are on, by the webhook
    Service and the headless Service only — the metrics Service never exposes it."""
    rendered = render(values, NEWEST)
    metrics = metrics_service(rendered)["metadata"]["name"]
    exposed: dict[str, list[str]] = {}
    for service in rendered.of_kind("Service"):
        for port in service["spec"].get("ports", []):
            exposed.setdefault(port["targetPort"], []).append(service["metadata"]["name"])
    assert exposed.pop("http") == [metrics]
    webhook = sorted(exposed.pop("webhook", []))
    assert exposed == {}
    container_ports = {p["name"] for p in container(rendered)["ports"]}
    if "webhook" in container_ports:
        assert webhook == [f"{metrics}-headless", f"{metrics}-webhook"]
    else:
        assert container_ports == {"http"}
        assert webhook == []


def test_the_webhook_service_and_ingress_reach_the_webhook_listener(
    render: Callable[[Path, str], Rendered],
) -> None:
    """With webhooks on, the config's webhook listener is on the container's `webhook` port and
    the given path; the webhook Service has only that port, and the Ingress sends the path on the
    given host to it."""
    values = webhook_values()
    rendered = render(WEBHOOKS_VALUES, NEWEST)
    hooks = exporter_config(rendered)["github"]["webhooks"]
    assert hooks["listen"] == f"0.0.0.0:{values['port']}"
    assert hooks["path"] == values["path"]
    assert hooks["reconcile_interval"] == values["reconcileInterval"]
    ports = {p["name"]: p["containerPort"] for p in container(rendered)["ports"]}
    assert ports == {"http": 9469, "webhook": values["port"]}
    service = service_named(rendered, f"{FULLNAME}-webhook")
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": values["service"]["port"], "targetPort": "webhook"}
    ]
    assert service["spec"]["type"] == values["service"]["type"]
    pod_labels = rendered.one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ingress = rendered.one("Ingress")
    assert ingress["spec"]["ingressClassName"] == values["ingress"]["className"]
    assert ingress["spec"]["tls"] == values["ingress"]["tls"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == values["ingress"]["host"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == values["path"]
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": "webhook"},
    }


@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_the_statefulset_is_governed_by_a_headless_service(
    render: Callable[[Path, str], Rendered], values: Path
) -> None:
    """serviceName is a headless Service selecting the pods (a stable DNS name per pod), the same
    one whatever replicas and webhooks are (the field is immutable)."""
    rendered = render(values, NEWEST)
    statefulset = rendered.one("StatefulSet")
    name = statefulset["spec"]["serviceName"]
    assert name == f"{statefulset['metadata']['name']}-headless"
    headless = service_named(rendered, name)
    assert headless["spec"]["clusterIP"] == "None"
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= pod_labels.items()


def test_shards_forward_events_to_each_other_through_the_headless_service(
    helm: Helm, render: Callable[[Path, str], Rendered]
) -> None:
    """With replicas > 1 the config's forward_url keeps {index} and, for a shard's number, names
    that shard's pod through the headless Service (published before the pod is ready) on the
    container's webhook port and path; with one replica there is no forward_url."""
    rendered = render(WEBHOOKS_VALUES, NEWEST)
    statefulset = rendered.one("StatefulSet")
    assert statefulset["spec"]["replicas"] == 2
    headless = service_named(rendered, statefulset["spec"]["serviceName"])
    assert headless["spec"]["publishNotReadyAddresses"] is True
    hooks = exporter_config(rendered)["github"]["webhooks"]
    assert "{index}" in hooks["forward_url"]
    url = urlsplit(hooks["forward_url"].format(index=1))
    pod = f"{statefulset['metadata']['name']}-1"
    assert url.hostname == f"{pod}.{headless['metadata']['name']}.{NAMESPACE}.svc"
    ports = {p["name"]: p["containerPort"] for p in container(rendered)["ports"]}
    assert (url.scheme, url.port, url.path) == ("http", ports["webhook"], hooks["path"])
    single = render_webhooks(helm, "--set", "replicas=1")
    assert "forward_url" not in exporter_config(single)["github"]["webhooks"]
    assert single.one("StatefulSet")["spec"]["serviceName"] == headless["metadata"]["name"]


def test_the_network_policy_allows_the_webhook_port(
    helm: Helm, render: Callable[[Path, str], Rendered]
) -> None:
    """The metrics rule stays as it is; the webhook port is open to the listed CIDRs and peers
    plus the exporter's own pods (forwarding between shards), or to any source when none are
    listed; without webhooks there is no webhook rule."""
    values = webhook_values()["networkPolicy"]
    rendered = render(WEBHOOKS_VALUES, NEWEST)
    pod_labels = rendered.one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    rules = rendered.one("NetworkPolicy")["spec"]["ingress"]
    assert [r["ports"] for r in rules] == [[{"port": "http"}], [{"port": "webhook"}]]
    assert rules[0]["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    assert rules[1]["from"] == [
        *({"ipBlock": {"cidr": cidr}} for cidr in values["cidrs"]),
        *values["peers"],
        {"podSelector": {"matchLabels": pod_labels}},
    ]
    assert {p["name"] for p in container(rendered)["ports"]} == {"http", "webhook"}
    anyone = render_webhooks(helm, "--set-json", 'webhooks.networkPolicy={"cidrs":[],"peers":[]}')
    rules = anyone.one("NetworkPolicy")["spec"]["ingress"]
    assert rules[1] == {"ports": [{"port": "webhook"}]}
    without = render(CHART / "ci" / "full-values.yaml", NEWEST).one("NetworkPolicy")
    assert [r["ports"] for r in without["spec"]["ingress"]] == [[{"port": "http"}]]


def test_the_webhook_secret_reaches_the_pod_only_through_a_secret(
    helm: Helm, render: Callable[[Path, str], Rendered]
) -> None:
    """The secret given in values is in the chart's Secret and nowhere else (not the ConfigMap,
    not the StatefulSet); the pod reads it from that Secret as the variable config's secret_env
    names. With existingSecret the chart makes no Secret and the pod reads the user's."""
    secret = webhook_values()["secret"]
    rendered = render(WEBHOOKS_VALUES, NEWEST)
    holders = [
        f"{o['kind']}/{o['metadata']['name']}" for o in rendered.objects if secret in json.dumps(o)
    ]
    assert holders == [f"Secret/{FULLNAME}-webhook"]
    (made,) = [
        s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == f"{FULLNAME}-webhook"
    ]
    assert made["stringData"] == {"GITHUB_WEBHOOK_SECRET": secret}
    variable = exporter_config(rendered)["github"]["webhooks"]["secret_env"]
    env = {e["name"]: e for e in container(rendered)["env"]}
    assert env[variable]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULLNAME}-webhook",
        "key": "GITHUB_WEBHOOK_SECRET",
    }
    existing = render_webhooks(helm, "--set", "webhooks.existingSecret=github-hooks")
    assert not [o for o in existing.objects if secret in json.dumps(o)]
    assert existing.of_kind("Secret") == []
    env = {e["name"]: e for e in container(existing)["env"]}
    assert env[variable]["valueFrom"]["secretKeyRef"]["name"] == "github-hooks"


def test_a_changed_webhook_secret_rolls_the_pods(helm: Helm) -> None:
    """The pods' checksum/secret annotation covers the webhook Secret: another secret value
    changes it (the pods restart with it) and leaves the config's checksum alone."""
    before = render_webhooks(helm).one("StatefulSet")["spec"]["template"]["metadata"]
    after = render_webhooks(helm, "--set", "webhooks.secret=another-webhook-secret")
    annotations = after.one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/secret"] != before["annotations"]["checksum/secret"]
    assert annotations["checksum/config"] == before["annotations"]["checksum/config"]


WEBHOOK_REFUSALS = {
    # The exporter would not start without it.
    "no-secret": (
        ["--set", "webhooks.secret="],
        "webhooks.enabled: set webhooks.existingSecret (a Secret with the key "
        "GITHUB_WEBHOOK_SECRET) or webhooks.secret",
    ),
    "metrics-port": (
        ["--set", "webhooks.port=9469"],
        "webhooks.port: 9469 is the metrics port (config.listen)",
    ),
    # The chart's own keys in config.github.webhooks would silently disagree with the Service,
    # the Ingress or the secret's variable: refused, naming the value to set instead.
    "listen-in-config": (
        ["--set", "config.github.webhooks.listen=0.0.0.0:9999"],
        "config.github.webhooks.listen: set by the chart from webhooks.port",
    ),
    "path-in-config": (
        ["--set", "config.github.webhooks.path=/hooks"],
        "config.github.webhooks.path: set by the chart from webhooks.path",
    ),
    "secret-file-in-config": (
        ["--set", "config.github.webhooks.secret_file=/secrets/hook"],
        "config.github.webhooks.secret_file: set by the chart from webhooks.secret or "
        "webhooks.existingSecret",
    ),
    "forward-url-in-config": (
        ["--set-string", "config.github.webhooks.forward_url=http://elsewhere/{index}"],
        "config.github.webhooks.forward_url: set by the chart from replicas",
    ),
    "webhooks-not-a-mapping": (
        ["--set", "config.github.webhooks=on"],
        "config.github.webhooks: a mapping of extra keys",
    ),
}


@pytest.mark.parametrize("case", sorted(WEBHOOK_REFUSALS))
def test_inconsistent_webhook_settings_are_refused_naming_the_value(helm: Helm, case: str) -> None:
    """What the schema cannot see is refused by the templates with a one-line message naming
    the value, when rendering (`helm template`, install, upgrade). `helm lint` only logs a
    template's `fail`, so it is not asserted here."""
    args, expected = WEBHOOK_REFUSALS[case]
    rendered = template(helm, CHART, "-f", str(WEBHOOKS_VALUES), *args)
    assert rendered.returncode != 0
    assert expected in rendered.stderr, rendered.stderr
    assert len([line for line in rendered.stderr.splitlines() if expected in line]) == 1
    assert webhook_values()["secret"] not in rendered.stderr


def test_no_github_credentials_are_refused_naming_the_values(helm: Helm) -> None:
    """The chart's defaults name no token, Secret or App: rendering them fails with one line
    naming the values to set (a pod without credentials would only crash-loop)."""
    rendered = template(helm, CHART)
    assert rendered.returncode != 0
    assert "github: set github.existingSecret" in rendered.stderr, rendered.stderr
    assert template(helm, CHART, "--set", "github.token=ghp_x").returncode == 0


def test_every_config_key_is_accepted_by_the_schema() -> None:
    """`config` is the exporter's config file as it is: the schema lets through each of its
    top-level keys except `sharding`, which the chart sets (step histograms were refused)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    accepted = set(schema["properties"]["config"]["properties"])
    assert accepted == set(Config.model_fields) - {"sharding"}


def test_other_webhook_keys_of_the_config_are_kept(render: Callable[[Path, str], Rendered]) -> None:
    """config.github.webhooks keys the chart does not set (max_body_bytes) are merged in."""
    config = yaml.safe_load(WEBHOOKS_VALUES.read_text())["config"]["github"]["webhooks"]
    hooks = exporter_config(render(WEBHOOKS_VALUES, NEWEST))["github"]["webhooks"]
    assert hooks["max_body_bytes"] == config["max_body_bytes"]


# --- what must be refused ---------------------------------------------------------------------


def _refusal(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# refused: "), f"{path.name}: first line names the refusal"
    return first.removeprefix("# refused: ")


@pytest.mark.parametrize("bad", BAD_VALUES, ids=ids(BAD_VALUES))
def test_bad_values_are_refused_naming_the_value(helm: Helm, bad: Path) -> None:
    """Wrong types, values out of range and unknown keys: values.schema.json refuses them in
    `helm lint --strict` and in `helm template`, with a message naming the value."""
    expected = _refusal(bad)
    lint = helm("lint", "--strict", str(CHART), "-f", str(bad))
    assert lint.returncode != 0
    assert expected in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    rendered = template(helm, CHART, "-f", str(bad))
    assert rendered.returncode != 0
    assert expected in rendered.stderr, rendered.stderr


def test_there_are_bad_values_for_each_kind_of_mistake() -> None:
    refusals = [_refusal(p) for p in BAD_VALUES]
    assert any("want integer" in r for r in refusals)
    assert any("want boolean" in r for r in refusals)
    assert any("must be one of" in r for r in refusals)
    assert any("maximum" in r for r in refusals)
    assert sum("not allowed" in r for r in refusals) >= 4


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    copy_ = tmp_path / "ci-pipeline-exporter"
    shutil.copytree(CHART, copy_)
    return copy_


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer has {old!r}; update the test"
    path.write_text(text.replace(old, new, 1))


TEMPLATE_TYPOS = {
    # A Go template action left open: the template does not parse.
    "unclosed-action": ("service.yaml", "{{ .Values.service.port }}", "{{ .Values.service.port }"),
    # A misspelt helper name: rendering fails.
    "misspelt-helper": (
        "statefulset.yaml",
        'include "cipe.serviceAccountName"',
        'include "cipe.serviceAcountName"',
    ),
    # A missing colon: the rendered manifest is not YAML.
    "yaml-syntax": ("service.yaml", "  ports:\n", "  ports\n"),
}


@pytest.mark.parametrize("typo", sorted(TEMPLATE_TYPOS))
def test_a_template_typo_fails_lint_and_template(helm: Helm, chart_copy: Path, typo: str) -> None:
    name, old, new = TEMPLATE_TYPOS[typo]
    _edit(chart_copy / "templates" / name, old, new)
    lint = helm("lint", "--strict", str(chart_copy), *CREDENTIALS)
    assert lint.returncode != 0, lint.stdout + lint.stderr
    assert name in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    rendered = template(helm, chart_copy, *CREDENTIALS)
    assert rendered.returncode != 0, rendered.stderr
    assert name in rendered.stderr, rendered.stderr


def test_a_typo_that_stays_valid_yaml_is_caught_by_the_schemas(
    helm: Helm, chart_copy: Path
) -> None:
    """An indentation slip that helm renders happily (the config's keys land beside
    config.yaml in the ConfigMap's data) is refused by the Kubernetes schema."""
    _edit(
        chart_copy / "templates" / "configmap.yaml",
        'include "cipe.config" . | nindent 4',
        'include "cipe.config" . | nindent 2',
    )
    result = template(helm, chart_copy, "--kube-version", OLDEST, *CREDENTIALS)
    assert result.returncode == 0, result.stderr
    (configmap,) = [o for o in yaml.safe_load_all(result.stdout) if o and o["kind"] == "ConfigMap"]
    errors = validation_errors(configmap, OLDEST)
    assert errors, errors
    assert "data" in errors[0], errors


def test_a_wrong_typed_default_value_fails(helm: Helm, chart_copy: Path) -> None:
    _edit(chart_copy / "values.yaml", "\nreplicas: 1\n", '\nreplicas: "1"\n')
    lint = helm("lint", "--strict", str(chart_copy))
    assert lint.returncode != 0
    assert "at '/replicas': got string, want integer" in lint.stdout, lint.stdout
    rendered = template(helm, chart_copy)
    assert rendered.returncode != 0, rendered.stderr
    assert "/replicas" in rendered.stderr, rendered.stderr


def test_the_validators_refuse_unknown_and_mistyped_fields(
    render: Callable[[Path, str], Rendered],
) -> None:
    """The checks above would pass vacuously if the validators accepted anything: a misspelt
    field or a wrong type in each kind of object is refused, for both Kubernetes versions."""
    rendered = render(CHART / "ci" / "full-values.yaml", NEWEST)
    broken = []
    statefulset = copy.deepcopy(rendered.one("StatefulSet"))
    statefulset["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    broken.append(statefulset)
    service = copy.deepcopy(metrics_service(rendered))
    service["spec"]["ports"][0]["port"] = "9469"
    broken.append(service)
    monitor = copy.deepcopy(rendered.one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    broken.append(monitor)
    monitor = copy.deepcopy(rendered.one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    broken.append(monitor)
    rule = copy.deepcopy(rendered.one("PrometheusRule"))
    rule["spec"]["groups"][1]["rules"][0]["expression"] = "up"
    broken.append(rule)
    rule = copy.deepcopy(rendered.one("PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["alert"] = "Both"
    broken.append(rule)
    for kube_version in (OLDEST, NEWEST):
        for obj in broken:
            assert validation_errors(obj, kube_version), obj["kind"]
