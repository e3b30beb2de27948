#!/usr/bin/env python3
"""Static checks of the deployment files that no off-the-shelf linter covers.

scripts/validate-deploy.sh runs this (with PyYAML and kubernetes-validate on
PYTHONPATH) next to hadolint, docker-compose config, promtool and actionlint:

  validate_deploy.py compose   docker-compose.yml (+ deploy/prometheus targets)
  validate_deploy.py otel      deploy/otel/collector.yaml
  validate_deploy.py grafana RULES
                               deploy/grafana: the dashboards (JSON, uids,
                               datasource, variables, layout, annotations), the
                               provisioning files and where compose and k8s mount
                               them; writes every PromQL expression of the
                               dashboards to RULES as recording rules (variables
                               replaced) for `promtool check rules`.
  validate_deploy.py k8s [OUT] k8s/ base and overlays: renders them (the kustomize
                               subset they use, cross-checked against
                               `kubectl kustomize` where kubectl exists), writes the
                               rendered YAML to OUT, validates every document with
                               kubernetes-validate and checks probes, resources,
                               non-root, references and the modelbus settings.

Each check prints every problem it finds and exits 1 if there was any.
"""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.30.0"

# modelbus service -> (port its /readyz is on, the config key that binds it)
SERVICES = {
    "registry": (7070, "MODELBUS_REGISTRY__HTTP_ADDR"),
    "ingest": (7072, "MODELBUS_INGEST__HTTP_ADDR"),
    "features": (7073, "MODELBUS_FEATURES__OPS_ADDR"),
    "trainer": (7074, "MODELBUS_TRAINER__OPS_ADDR"),
    "deployer": (7075, "MODELBUS_DEPLOYER__OPS_ADDR"),
    "serving": (7080, "MODELBUS_SERVING__STAGING_ADDR"),
    "monitor": (7076, "MODELBUS_MONITOR__OPS_ADDR"),
}
# Secrets the cluster operator creates (k8s/README.md), with the keys they hold.
EXTERNAL_SECRETS = {
    "modelbus-automation-key": {"automation.pem", "automation.pem.pub"},
    "modelbus-database": {"url"},
    # Each service's API token (auth.<service>_token), registered by the registry.
    "modelbus-service-tokens": {"ingest", "features", "trainer", "serving", "monitor"},
    # One NATS password per user of deploy/nats/permissions.conf.
    "modelbus-nats": {"registry", "ingest", "features", "trainer", "deployer", "serving", "monitor"},
    # Grafana's admin password.
    "modelbus-grafana": {"admin-password"},
}

problems: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)


def load(path: Path):
    with open(path) as f:
        return yaml.safe_load(f)


def load_all(path: Path) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---------------------------------------------------------------- config keys
def config_keys() -> dict[str, set[str]]:
    """Sections and keys of `Config`, read from crates/core/src/config.rs, so a
    misspelt MODELBUS_<SECTION>__<KEY> (which the services refuse at start) is
    caught here."""
    src = (ROOT / "crates/core/src/config.rs").read_text()

    def fields(struct: str) -> dict[str, str]:
        m = re.search(r"pub struct %s \{(.*?)\n\}" % struct, src, re.S)
        if not m:
            raise SystemExit(f"validate_deploy: struct {struct} not found in config.rs")
        return dict(re.findall(r"^\s*pub (\w+): ([\w:<>]+),", m.group(1), re.M))

    return {section: set(fields(typ)) for section, typ in fields("Config").items()}


KEYS = config_keys()


def check_env_name(where: str, var: str) -> None:
    if var in ("NATS_URL", "DATABASE_URL"):
        return
    m = re.fullmatch(r"MODELBUS_([A-Z0-9_]+?)__([A-Z0-9_]+)", var)
    if not m:
        return  # not a configuration key (the config loader ignores it)
    section, key = m.group(1).lower(), m.group(2).lower()
    if section not in KEYS:
        fail(f"{where}: {var}: no configuration section `{section}`")
    elif key not in KEYS[section]:
        fail(f"{where}: {var}: no key `{key}` in section `{section}`")


def check_listen(where: str, env: dict, service: str) -> None:
    port, var = SERVICES[service]
    want = f"0.0.0.0:{port}"
    if env.get(var) != want:
        fail(f"{where}: {var} must be {want} (got {env.get(var)!r})")


# ---------------------------------------------------------------- compose
def check_compose() -> None:
    path = ROOT / "docker-compose.yml"
    doc = load(path)
    services = doc.get("services") or {}
    volumes = set((doc.get("volumes") or {}).keys())
    for name in SERVICES:
        if name not in services:
            fail(f"compose: no `{name}` service")
    dependency_of_healthy = set()
    for name, s in services.items():
        where = f"compose: {name}"
        if not (s.get("image") or s.get("build")):
            fail(f"{where}: neither image nor build")
        deps = s.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            if dep not in services:
                fail(f"{where}: depends_on unknown service `{dep}`")
            if (spec or {}).get("condition") == "service_healthy":
                dependency_of_healthy.add(dep)
        for v in s.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith((".", "/")):
                if not (ROOT / src).exists():
                    fail(f"{where}: bind-mounted path {src} does not exist")
            elif src and src not in volumes:
                fail(f"{where}: volume `{src}` is not declared under volumes:")
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        for var in env:
            check_env_name(where, var)
        if name not in SERVICES:
            continue
        # A modelbus service.
        port = SERVICES[name][0]
        if s.get("command") != [name]:
            fail(f'{where}: command must be ["{name}"] (got {s.get("command")!r})')
        test = " ".join(map(str, (s.get("healthcheck") or {}).get("test") or []))
        if not re.search(rf"(modelbus-readyz {port}\b|:{port}/readyz)", test):
            fail(f"{where}: healthcheck must probe /readyz on port {port} (got {test!r})")
        check_listen(where, env, name)
        expect = {
            "NATS_URL": "nats://nats:4222",
            "MODELBUS_REGISTRY__GRPC_URL": "http://registry:7071",
            "MODELBUS_TELEMETRY__OTLP_ENDPOINT": "http://otel-collector:4317",
            "MODELBUS_TELEMETRY__LOG_FORMAT": "json",
            "MODELBUS_ARTIFACTS__LOCATION": "/var/lib/modelbus/artifacts",
        }
        if name in ("registry", "deployer"):
            expect["MODELBUS_GENERAL__STATE_DIR"] = "/var/lib/modelbus"
        for var, value in expect.items():
            if env.get(var) != value:
                fail(f"{where}: {var} must be {value} (got {env.get(var)!r})")
        # Each service reads its own registry token only; the registry all four.
        holders = {"ingest", "features", "trainer", "serving"}
        wanted = holders if name == "registry" else ({name} & holders)
        for t in sorted(holders):
            ref, var = f"MODELBUS_AUTH__{t.upper()}_TOKEN", f"MODELBUS_{t.upper()}_TOKEN"
            has = env.get(ref) == f"env://{var}" and bool(env.get(var))
            if t in wanted and not has:
                fail(f"{where}: needs {ref}=env://{var} and {var}")
            if t not in wanted and (ref in env or var in env):
                fail(f"{where}: must not read the {t} service's token")
        if name == "registry" and not str(env.get("DATABASE_URL", "")).startswith("postgres://"):
            fail(f"{where}: DATABASE_URL must point at the postgres service")
        mounts = [v for v in s.get("volumes") or [] if isinstance(v, str)]
        if not any(m.startswith("artifacts:/var/lib/modelbus/artifacts") for m in mounts):
            fail(f"{where}: the `artifacts` volume must be mounted at /var/lib/modelbus/artifacts")
        if name in ("registry", "deployer") and not any(
            m.startswith("keys:/var/lib/modelbus/keys") for m in mounts
        ):
            fail(f"{where}: the `keys` volume must be mounted at /var/lib/modelbus/keys")
        if name != "registry":
            if (deps.get("registry") or {}).get("condition") != "service_healthy":
                fail(f"{where}: must wait for a healthy registry")
        if (deps.get("nats") or {}).get("condition") != "service_healthy":
            fail(f"{where}: must wait for a healthy nats")
    for dep in dependency_of_healthy:
        if dep in services and not services[dep].get("healthcheck"):
            fail(f"compose: `{dep}` is waited for as service_healthy but has no healthcheck")

    # Prometheus scrapes each service where its ops endpoints are.
    prom = load(ROOT / "deploy/prometheus/prometheus.yml")
    targets = {
        t
        for job in prom.get("scrape_configs", [])
        for sc in job.get("static_configs", [])
        for t in sc.get("targets", [])
    }
    for name, (port, _) in SERVICES.items():
        if f"{name}:{port}" not in targets:
            fail(f"prometheus.yml: no scrape target {name}:{port}")


# ---------------------------------------------------------------- otel
def check_otel() -> None:
    doc = load(ROOT / "deploy/otel/collector.yaml")
    svc = doc.get("service") or {}
    for ext in svc.get("extensions") or []:
        if ext not in (doc.get("extensions") or {}):
            fail(f"collector.yaml: extension `{ext}` is used but not defined")
    pipelines = svc.get("pipelines") or {}
    if "traces" not in pipelines:
        fail("collector.yaml: no traces pipeline")
    for pname, p in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in p.get(kind) or []:
                if comp not in (doc.get(kind) or {}):
                    fail(f"collector.yaml: pipeline {pname}: {kind[:-1]} `{comp}` is not defined")
        if not p.get("receivers") or not p.get("exporters"):
            fail(f"collector.yaml: pipeline {pname} needs a receiver and an exporter")
    grpc = (((doc.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("grpc") or {}
    if not str(grpc.get("endpoint", "")).endswith(":4317"):
        fail("collector.yaml: the OTLP gRPC receiver must listen on 4317 (services export there)")


# ---------------------------------------------------------------- grafana
GRAFANA = ROOT / "deploy/grafana"
# Grafana's own variables, as replaced before promtool parses an expression.
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1d",
                    "__range_s": "86400", "__interval_ms": "60000"}
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")


def promql_for_promtool(expr: str) -> str:
    """A dashboard expression as Prometheus would get it: Grafana's interval
    variables as durations, the dashboard's own variables (used in label
    matchers) as `.*`."""
    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return GRAFANA_BUILTINS.get(name, ".*")
    return VARIABLE.sub(sub, expr)


def panels_of(dash: dict) -> list:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out += p.get("panels", [])  # a collapsed row keeps its panels inside
    return out


def check_grafana(rules_out: Path) -> None:
    providers = load(GRAFANA / "provisioning/dashboards/modelbus.yml").get("providers") or []
    if len(providers) != 1 or providers[0].get("type") != "file":
        fail("grafana: provisioning/dashboards/modelbus.yml must have one file provider")
        return
    dash_path = providers[0]["options"]["path"]
    sources = load(GRAFANA / "provisioning/datasources/prometheus.yml").get("datasources") or []
    uids = {d.get("uid") for d in sources if d.get("type") == "prometheus"}
    if "prometheus" not in uids:
        fail("grafana: provisioning/datasources/prometheus.yml has no prometheus datasource with uid `prometheus`")
    url_vars = {m.group(1) or m.group(2) for d in sources
                for m in [re.search(r"\$\{(\w+)\}|\$(\w+)", str(d.get("url", "")))] if m}

    files = sorted((GRAFANA / "dashboards").glob("*.json"))
    if not files:
        fail("grafana: no dashboards in deploy/grafana/dashboards")
    rules, seen_uids = [], set()
    for f in files:
        where = f"grafana: {f.name}"
        try:
            dash = json.loads(f.read_text())
        except ValueError as e:
            fail(f"{where}: not JSON: {e}")
            continue
        uid = dash.get("uid", "")
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid) or uid in seen_uids:
            fail(f"{where}: uid {uid!r} must be unique, at most 40 of [a-zA-Z0-9_-]")
        seen_uids.add(uid)
        if not dash.get("title") or not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
            fail(f"{where}: needs a title and schemaVersion >= 36 (Grafana 9+)")
        if dash.get("id") is not None:
            fail(f"{where}: id must be null (Grafana assigns it)")
        variables = {v["name"]: v for v in (dash.get("templating") or {}).get("list", [])}
        ds_var = variables.get("datasource") or {}
        if ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
            fail(f"{where}: needs a `datasource` variable of type datasource, query prometheus")

        def check_vars(w: str, text: str) -> None:
            for m in VARIABLE.finditer(text):
                name = m.group(1) or m.group(2) or m.group(3)
                if name not in variables and name not in GRAFANA_BUILTINS:
                    fail(f"{w}: uses ${name}, which the dashboard does not define")

        def check_ds(w: str, ds) -> None:
            if ds != {"type": "prometheus", "uid": "${datasource}"}:
                fail(f"{w}: datasource must be {{type: prometheus, uid: ${{datasource}}}} (got {ds!r})")

        def add_rule(w: str, name: str, expr: str) -> None:
            if not str(expr).strip():
                fail(f"{w}: empty expression")
                return
            check_vars(w, expr)
            rules.append({"record": name, "expr": promql_for_promtool(expr),
                          "labels": {"source": w.replace(":", "")}})

        rid = re.sub(r"\W", "_", uid)
        for name, v in variables.items():
            if v.get("type") == "query":
                check_ds(f"{where}: variable {name}", v.get("datasource"))
                q = v.get("query")
                q = q.get("query", "") if isinstance(q, dict) else q
                m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q or "")
                if not m:
                    fail(f"{where}: variable {name}: query must be label_values(SELECTOR, LABEL) (got {q!r})")
                else:
                    add_rule(f"{where}: variable {name}", f"dashboard:{rid}:var_{name}", m.group(1))
        for i, a in enumerate((dash.get("annotations") or {}).get("list", [])):
            if a.get("builtIn"):
                continue
            w = f"{where}: annotation {a.get('name')!r}"
            check_ds(w, a.get("datasource"))
            add_rule(w, f"dashboard:{rid}:annotation_{i}", a.get("expr", ""))
        ids = set()
        for p in panels_of(dash):
            w = f"{where}: panel {p.get('id')} {p.get('title')!r}"
            if p.get("id") in ids or not isinstance(p.get("id"), int):
                fail(f"{w}: ids must be unique integers")
            ids.add(p.get("id"))
            g = p.get("gridPos") or {}
            if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
                fail(f"{w}: gridPos must be integers within 24 columns (got {g})")
            check_vars(w, p.get("title", ""))
            if p.get("type") == "row":
                continue
            if not p.get("description"):
                fail(f"{w}: no description (say what the panel shows)")
            check_ds(w, p.get("datasource"))
            targets = p.get("targets") or []
            if not targets:
                fail(f"{w}: no targets")
            if len({t.get("refId") for t in targets}) != len(targets):
                fail(f"{w}: refIds must be unique")
            for t in targets:
                check_ds(f"{w} {t.get('refId')}", t.get("datasource"))
                add_rule(f"{w} {t.get('refId')}", f"dashboard:{rid}:panel_{p.get('id')}_{t.get('refId')}",
                         t.get("expr", ""))

    # Every dashboard reaches both deployments, where the provider looks.
    gen = load(GRAFANA / "kustomization.yaml").get("configMapGenerator") or []
    listed = {Path(f).name for g in gen if g.get("name") == "grafana-dashboards" for f in g.get("files", [])}
    for f in files:
        if f.name not in listed:
            fail(f"grafana: kustomization.yaml: {f.name} is not in the grafana-dashboards ConfigMap")
    compose = (load(ROOT / "docker-compose.yml").get("services") or {}).get("grafana") or {}
    mounts = [v for v in compose.get("volumes") or [] if isinstance(v, str)]
    for src, dst in (("./deploy/grafana/provisioning", "/etc/grafana/provisioning"),
                     ("./deploy/grafana/dashboards", dash_path)):
        if not any(m.split(":")[:2] == [src, dst] for m in mounts):
            fail(f"compose: grafana must mount {src} at {dst}")
    env = compose.get("environment") or {}
    for var in url_vars:
        if var not in env:
            fail(f"compose: grafana must set {var} (the datasource URL)")
    base = render(ROOT / "k8s/base")
    dep = next((x for x in base if x["kind"] == "Deployment" and x["metadata"]["name"] == "grafana"), None)
    if dep is None:
        fail("k8s/base: no grafana Deployment")
    else:
        spec = dep["spec"]["template"]["spec"]
        vols = {v["name"]: (v.get("configMap") or {}).get("name") for v in spec.get("volumes", [])}
        c = spec["containers"][0]
        got = {m["mountPath"]: vols.get(m["name"]) for m in c.get("volumeMounts", [])}
        for path, cm in (("/etc/grafana/provisioning/datasources", "grafana-datasources"),
                         ("/etc/grafana/provisioning/dashboards", "grafana-dashboard-providers"),
                         (dash_path, "grafana-dashboards")):
            if got.get(path) != cm:
                fail(f"k8s/base: grafana must mount ConfigMap {cm} at {path}")
        for var in url_vars:
            if var not in {e["name"] for e in c.get("env", [])}:
                fail(f"k8s/base: grafana must set {var} (the datasource URL)")

    rules_out.write_text(yaml.safe_dump({"groups": [{"name": "grafana-dashboards", "rules": rules}]},
                                        sort_keys=False, width=1000))
    print(f"grafana: {len(files)} dashboards, {len(rules)} expressions written to {rules_out}")


# ---------------------------------------------------------------- k8s
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "replicas", "patches",
                      "configMapGenerator", "generatorOptions"}


def smp(base, patch):
    """Strategic merge, the part the overlays use: maps merge, lists of named
    maps (containers, env, volumes) merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = smp(base[k], v) if k in base else v
        return out
    named = lambda xs: all(isinstance(x, dict) and "name" in x for x in xs)  # noqa: E731
    if isinstance(base, list) and isinstance(patch, list) and named(base) and named(patch):
        out = list(base)
        for item in patch:
            i = next((i for i, x in enumerate(out) if x["name"] == item["name"]), None)
            if i is None:
                out.append(item)
            else:
                out[i] = smp(out[i], item)
        return out
    return patch


def pod_spec(doc: dict):
    if doc.get("kind") in ("Deployment", "StatefulSet"):
        return doc["spec"]["template"]["spec"]
    return None


def render(d: Path) -> list:
    """Renders a kustomization directory (resources, namespace, images, replicas,
    strategic-merge patches by path). Anything else is refused rather than ignored."""
    k = load(d / "kustomization.yaml")
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise SystemExit(f"{d}/kustomization.yaml: this renderer does not implement {sorted(unknown)}")
    docs: list = []
    for r in k.get("resources", []):
        p = d / r
        docs += render(p) if p.is_dir() else load_all(p)
    docs += generate_configmaps(d, k)
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise SystemExit(f"{d}: only `patches: - path: FILE` is implemented")
        pdoc = load(d / patch["path"])
        hits = [i for i, x in enumerate(docs)
                if x["kind"] == pdoc["kind"] and x["metadata"]["name"] == pdoc["metadata"]["name"]]
        if len(hits) != 1:
            raise SystemExit(f"{d}/{patch['path']}: patch target {pdoc['kind']}/{pdoc['metadata']['name']} not found")
        docs[hits[0]] = smp(docs[hits[0]], pdoc)
    for img in k.get("images", []):
        for doc in docs:
            spec = pod_spec(doc)
            for c in (spec or {}).get("containers", []) + (spec or {}).get("initContainers", []):
                name, _, tag = c["image"].rpartition(":") if ":" in c["image"].rsplit("/", 1)[-1] else (c["image"], "", "")
                if name == img["name"]:
                    c["image"] = f'{img.get("newName", name)}:{img.get("newTag", tag)}'
    for rep in k.get("replicas", []):
        hits = [x for x in docs if x["kind"] in ("Deployment", "StatefulSet") and x["metadata"]["name"] == rep["name"]]
        if not hits:
            raise SystemExit(f"{d}: replicas: no workload named {rep['name']}")
        for x in hits:
            x["spec"]["replicas"] = rep["count"]
    if "namespace" in k:
        for doc in docs:
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = k["namespace"]
    return docs


def generate_configmaps(d: Path, k: dict) -> list:
    """configMapGenerator with `files` (key = the file's name), as kustomize
    renders it with generatorOptions.disableNameSuffixHash (the hash suffix is
    not implemented: refused rather than rendered differently)."""
    gens = k.get("configMapGenerator", [])
    opts = k.get("generatorOptions", {})
    if not gens:
        return []
    if set(opts) - {"disableNameSuffixHash", "labels", "annotations"} or opts.get("disableNameSuffixHash") is not True:
        raise SystemExit(f"{d}/kustomization.yaml: only generatorOptions "
                         "{disableNameSuffixHash: true, labels, annotations} is implemented")
    out = []
    for g in gens:
        if set(g) - {"name", "files"}:
            raise SystemExit(f"{d}/kustomization.yaml: configMapGenerator {g.get('name')}: only `name` and `files` are implemented")
        data = {}
        for f in g.get("files", []):
            name, _, path = f.rpartition("=") if "=" in f else (Path(f).name, "", f)
            src = (d / path).resolve()
            if d.resolve() not in src.parents:
                fail(f"{d}: configMapGenerator {g['name']}: {path} is outside the kustomization directory (kustomize refuses it)")
                continue
            data[name] = src.read_text()
        meta = {"name": g["name"]}
        if opts.get("labels"):
            meta["labels"] = dict(opts["labels"])
        if opts.get("annotations"):
            meta["annotations"] = dict(opts["annotations"])
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return out


def key(doc: dict) -> tuple:
    return (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])


def check_rendered(where: str, docs: list) -> None:
    import kubernetes_validate  # from .tools (validate-deploy.sh sets PYTHONPATH)

    by_kind: dict[str, dict] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            fail(f"{where}: {doc['kind']}/{doc['metadata']['name']}: {path}: {e.message}")
        except Exception as e:  # schema not found and the like
            fail(f"{where}: {doc['kind']}/{doc['metadata']['name']}: {getattr(e, 'message', e)}")

    configmaps = by_kind.get("ConfigMap", {})
    pvcs = set(by_kind.get("PersistentVolumeClaim", {}))
    for var in (configmaps.get("modelbus-env") or {}).get("data", {}):
        check_env_name(f"{where}: ConfigMap modelbus-env", var)
    toml_text = ((configmaps.get("modelbus-config") or {}).get("data") or {}).get("modelbus.toml")
    trusted_files = []
    if toml_text is None:
        fail(f"{where}: ConfigMap modelbus-config has no modelbus.toml")
    else:
        conf = tomllib.loads(toml_text)
        for section, table in conf.items():
            for k in table:
                if k not in KEYS.get(section, set()):
                    fail(f"{where}: modelbus.toml: unknown key {section}.{k}")
        for tk in conf.get("deployer", {}).get("trusted_keys", []):
            if set(tk) - {"id", "public_key_file", "environments", "role"} or not {"id", "public_key_file"} <= set(tk):
                fail(f"{where}: modelbus.toml: trusted key {tk} needs id and public_key_file (environments and role optional)")
            trusted_files.append(tk.get("public_key_file", ""))

    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        name = doc["metadata"]["name"]
        w = f"{where}: {doc['kind']}/{name}"
        # The namespace enforces the `restricted` Pod Security Standard.
        psc = spec.get("securityContext") or {}
        if not psc.get("runAsNonRoot"):
            fail(f"{w}: pod securityContext.runAsNonRoot must be true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            fail(f"{w}: pod securityContext.seccompProfile.type must be RuntimeDefault")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for t in doc["spec"].get("volumeClaimTemplates", []):
            volumes[t["metadata"]["name"]] = {"name": t["metadata"]["name"]}
        for v in volumes.values():
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                fail(f"{w}: volume {v['name']}: no ConfigMap {v['configMap']['name']}")
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in pvcs:
                fail(f"{w}: volume {v['name']}: no PersistentVolumeClaim {v['persistentVolumeClaim']['claimName']}")
            if "secret" in v:
                sname = v["secret"]["secretName"]
                items = {i["key"] for i in v["secret"].get("items", [])}
                if sname not in EXTERNAL_SECRETS or not items <= EXTERNAL_SECRETS[sname]:
                    fail(f"{w}: volume {v['name']}: Secret {sname} {sorted(items)} is not one k8s/README.md documents")
        for c in spec["containers"]:
            cw = f"{w}: container {c['name']}"
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    fail(f"{cw}: no {probe}")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        fail(f"{cw}: no resources.{part}.{r}")
            csc = c.get("securityContext") or {}
            if csc.get("allowPrivilegeEscalation") is not False:
                fail(f"{cw}: securityContext.allowPrivilegeEscalation must be false")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                fail(f"{cw}: securityContext.capabilities.drop must include ALL")
            for ref in c.get("envFrom", []):
                cm = (ref.get("configMapRef") or {}).get("name")
                if cm and cm not in configmaps:
                    fail(f"{cw}: envFrom: no ConfigMap {cm}")
            for e in c.get("env", []):
                check_env_name(cw, e["name"])
                sk = (e.get("valueFrom") or {}).get("secretKeyRef")
                if sk and sk["key"] not in EXTERNAL_SECRETS.get(sk["name"], set()):
                    fail(f"{cw}: env {e['name']}: Secret {sk['name']} key {sk['key']} is not one k8s/README.md documents")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    fail(f"{cw}: volumeMount {m['name']}: no such volume")
            if doc["kind"] != "Deployment" or name not in SERVICES:
                continue
            # A modelbus service.
            port = SERVICES[name][0]
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            if (c.get("args") or [None])[0] != name:
                fail(f"{cw}: args must start with `{name}`")
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                get = (c.get(probe) or {}).get("httpGet") or {}
                p = ports.get(get.get("port"), get.get("port"))
                if get.get("path") != path or p != port:
                    fail(f"{cw}: {probe} must GET {path} on port {port}")
            env = dict((configmaps.get("modelbus-env") or {}).get("data", {}))
            env.update({e["name"]: e.get("value") for e in c.get("env", [])})
            check_listen(cw, env, name)
            mounted = {m["mountPath"]: m for m in c.get("volumeMounts", [])}

            def secret_file(path: str) -> bool:
                d, _, f = path.rpartition("/")
                v = volumes.get((mounted.get(d) or {}).get("name"), {})
                return f in {i["path"] for i in (v.get("secret") or {}).get("items", [])}

            args = c.get("args") or []
            if "--config" not in args or not args[args.index("--config") + 1] in mounted:
                fail(f"{cw}: --config must name a mounted file")
            if name == "registry":
                ref = env.get("MODELBUS_REGISTRY__AUTOMATION_KEY") or ""
                if not (ref.startswith("file://") and secret_file(ref[len("file://"):])):
                    fail(f"{cw}: MODELBUS_REGISTRY__AUTOMATION_KEY must be a file:// reference to the mounted Secret")
                if "DATABASE_URL" not in env:
                    fail(f"{cw}: no DATABASE_URL")
            # Each service reads its own token only; the registry reads all five.
            holders = {"ingest", "features", "trainer", "serving", "monitor"}
            wanted = holders if name == "registry" else ({name} & holders)
            for t in sorted(holders):
                var = f"MODELBUS_{t.upper()}_TOKEN"
                sk = next((((e.get("valueFrom") or {}).get("secretKeyRef") or {}) for e in c.get("env", [])
                           if e["name"] == var), {})
                has = env.get(f"MODELBUS_AUTH__{t.upper()}_TOKEN") == f"env://{var}" and \
                    sk.get("name") == "modelbus-service-tokens" and sk.get("key") == t
                if t in wanted and not has:
                    fail(f"{cw}: needs MODELBUS_AUTH__{t.upper()}_TOKEN=env://{var} from key {t} of Secret modelbus-service-tokens")
                if t not in wanted and (sk or f"MODELBUS_AUTH__{t.upper()}_TOKEN" in env):
                    fail(f"{cw}: must not read the {t} service's token")
            if name == "deployer":
                if not trusted_files:
                    fail(f"{cw}: modelbus.toml names no deployer.trusted_keys")
                for f in trusted_files:
                    if not secret_file(f):
                        fail(f"{cw}: trusted key file {f} is not mounted from the Secret")

    for svc in by_kind.get("Service", {}).values():
        sel = svc["spec"].get("selector") or {}
        pods = [pod_spec(d) for d in docs if pod_spec(d) is not None
                and sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        if not pods:
            fail(f"{where}: Service/{svc['metadata']['name']}: selector matches no pod template")
            continue
        names = {p.get("name") for s in pods for c in s["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                fail(f"{where}: Service/{svc['metadata']['name']}: targetPort {p['targetPort']} is no container port")


def check_k8s(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    kubectl = shutil.which("kubectl")
    dirs = [ROOT / "k8s/base"] + sorted(p for p in (ROOT / "k8s/overlays").iterdir() if p.is_dir())
    for d in dirs:
        where = str(d.relative_to(ROOT))
        docs = render(d)
        (out / f"{d.name}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        if kubectl:
            # The real kustomize (built into kubectl) must agree with this renderer.
            r = subprocess.run([kubectl, "kustomize", str(d)], capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"{where}: kubectl kustomize failed: {r.stderr.strip()}")
            else:
                theirs = {key(x): x for x in yaml.safe_load_all(r.stdout) if x}
                ours = {key(x): x for x in docs}
                for k in sorted(set(theirs) | set(ours)):
                    if theirs.get(k) != ours.get(k):
                        fail(f"{where}: {'/'.join(k)} renders differently with kubectl kustomize")
        check_rendered(where, docs)
        print(f"k8s: {where}: {len(docs)} documents rendered"
              + (", same as kubectl kustomize" if kubectl else " (kubectl not found: not cross-checked)"))


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "compose":
        check_compose()
    elif what == "otel":
        check_otel()
    elif what == "grafana" and len(sys.argv) > 2:
        check_grafana(Path(sys.argv[2]))
    elif what == "k8s":
        check_k8s(Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "target/k8s-rendered")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
