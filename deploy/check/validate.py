#!/usr/bin/env python3
"""Offline checks of the deployment files, run by scripts/check-deploy.sh.

  validate.py manifests [--k8s-version V]... [--expect-kind K]... [--forbid-kind K]... FILE...
      Every object against the Kubernetes OpenAPI schema (kubernetes-validate, strict: unknown
      fields fail); CRD kinds it has no schema for (ServiceMonitor, HTTPRoute) checked
      structurally here; then gripmesh's own rules across the objects (security context,
      probes, drain budget, selectors, ports, HPA behaviour, the publish token, routes).
  validate.py compose FILE      structure of deploy/compose.yaml (no Docker engine needed)
  validate.py dockerfile FILE   the rules deploy/Dockerfile must keep
  validate.py schema SCHEMA VALUES  values.schema.json is a closed draft-07 schema; VALUES conform

Exit status 1 with one line per problem.
"""

import argparse
import re
import sys

import yaml

PART_OF = "gripmesh"
SUBCOMMANDS = {"standalone", "edge", "control", "authz", "demo"}
ADMIN_PORTS = {"edge": 9101, "control": 9102, "authz": 9103}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)
PROM_DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
GW_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, msg):
        self.items.append(f"{where}: {msg}")

    def check(self, cond, where, msg):
        if not cond:
            self.add(where, msg)
        return cond


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# ---------------------------------------------------------------------------- CRD structure


def check_service_monitor(p, where, obj):
    p.check(obj.get("apiVersion") == "monitoring.coreos.com/v1", where, "apiVersion must be monitoring.coreos.com/v1")
    spec = obj.get("spec") or {}
    allowed = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels",
               "sampleLimit", "scrapeProtocols", "attachMetadata"}
    for k in spec:
        p.check(k in allowed, where, f"spec.{k} is not a ServiceMonitor field")
    sel = spec.get("selector")
    p.check(isinstance(sel, dict) and (sel.get("matchLabels") or sel.get("matchExpressions")), where,
            "spec.selector needs matchLabels or matchExpressions")
    eps = spec.get("endpoints")
    if p.check(isinstance(eps, list) and eps, where, "spec.endpoints must be a non-empty list"):
        ep_allowed = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                      "relabelings", "metricRelabelings", "tlsConfig", "bearerTokenSecret", "params"}
        for i, ep in enumerate(eps):
            for k in ep:
                p.check(k in ep_allowed, where, f"spec.endpoints[{i}].{k} is not an Endpoint field")
            p.check(isinstance(ep.get("port"), str) or "targetPort" in ep, where, f"spec.endpoints[{i}] needs a port name")
            for k in ("interval", "scrapeTimeout"):
                if k in ep:
                    p.check(isinstance(ep[k], str) and PROM_DURATION.match(ep[k]), where,
                            f"spec.endpoints[{i}].{k} {ep[k]!r} is not a Prometheus duration")


def check_http_route(p, where, obj):
    p.check(obj.get("apiVersion") == "gateway.networking.k8s.io/v1", where, "apiVersion must be gateway.networking.k8s.io/v1")
    spec = obj.get("spec") or {}
    for k in spec:
        p.check(k in {"parentRefs", "hostnames", "rules"}, where, f"spec.{k} is not an HTTPRoute field")
    refs = spec.get("parentRefs")
    if p.check(isinstance(refs, list) and refs, where, "spec.parentRefs must be a non-empty list"):
        for i, r in enumerate(refs):
            p.check(isinstance(r, dict) and isinstance(r.get("name"), str) and r["name"], where, f"spec.parentRefs[{i}].name missing")
            for k in r:
                p.check(k in {"group", "kind", "namespace", "name", "sectionName", "port"}, where,
                        f"spec.parentRefs[{i}].{k} is not a ParentReference field")
    for h in spec.get("hostnames") or []:
        p.check(isinstance(h, str) and h and ":" not in h, where, f"hostname {h!r} is invalid")
    rules = spec.get("rules")
    if p.check(isinstance(rules, list) and rules, where, "spec.rules must be a non-empty list"):
        for i, rule in enumerate(rules):
            for k in rule:
                p.check(k in {"name", "matches", "filters", "backendRefs", "timeouts", "retry", "sessionPersistence"},
                        where, f"spec.rules[{i}].{k} is not an HTTPRouteRule field")
            for m in rule.get("matches") or []:
                path = m.get("path") or {}
                p.check(path.get("type", "PathPrefix") in {"Exact", "PathPrefix", "RegularExpression"}, where,
                        f"spec.rules[{i}] path type {path.get('type')!r} is invalid")
                p.check(str(path.get("value", "/")).startswith("/"), where, f"spec.rules[{i}] path must start with /")
            for k, v in (rule.get("timeouts") or {}).items():
                p.check(k in {"request", "backendRequest"}, where, f"spec.rules[{i}].timeouts.{k} is not a timeout")
                p.check(isinstance(v, str) and GW_DURATION.match(v), where,
                        f"spec.rules[{i}].timeouts.{k} {v!r} is not a Gateway API duration")
            for j, b in enumerate(rule.get("backendRefs") or []):
                p.check(isinstance(b.get("name"), str) and b["name"], where, f"spec.rules[{i}].backendRefs[{j}].name missing")
                p.check(isinstance(b.get("port"), int) and 1 <= b["port"] <= 65535, where,
                        f"spec.rules[{i}].backendRefs[{j}].port must be a port number")


CRD_CHECKS = {"ServiceMonitor": check_service_monitor, "HTTPRoute": check_http_route}

# ---------------------------------------------------------------------------- gripmesh rules


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_spec(dep):
    return dep["spec"]["template"]["spec"]


def all_containers(spec):
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def env_value(container, name):
    for e in container.get("env") or []:
        if e.get("name") == name:
            return e
    return None


def check_container(p, where, c, tier_of_container):
    w = f"{where} container {c.get('name')}"
    sc = c.get("securityContext") or {}
    p.check(sc.get("readOnlyRootFilesystem") is True, w, "readOnlyRootFilesystem must be true")
    p.check(sc.get("allowPrivilegeEscalation") is False, w, "allowPrivilegeEscalation must be false")
    p.check(sc.get("runAsNonRoot") is True, w, "runAsNonRoot must be true")
    p.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), w, "capabilities must drop ALL")
    p.check((sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", w, "seccompProfile must be RuntimeDefault")
    image = c.get("image", "")
    p.check(image and not image.endswith(":latest") and (":" in image.rsplit("/", 1)[-1] or "@" in image), w,
            f"image {image!r} needs a fixed tag or digest")
    p.check(((c.get("resources") or {}).get("requests") or {}), w, "resources.requests must be set")
    args = c.get("args") or []
    p.check(args and args[0] in SUBCOMMANDS, w, f"args must start with a gripmesh subcommand, not {args[:1]}")
    tier = args[0] if args else None
    ports = {pt.get("name"): pt.get("containerPort") for pt in c.get("ports") or []}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = ((c.get(probe) or {}).get("httpGet")) or {}
        if p.check(get.get("path") == path, w, f"{probe} must be GET {path}"):
            port = get.get("port")
            number = ports.get(port, port)
            p.check(number == ADMIN_PORTS.get(tier), w, f"{probe} must use the {tier} admin port {ADMIN_PORTS.get(tier)}, not {port}")
    if tier:
        admin = [a for i, a in enumerate(args) if i > 0 and args[i - 1] == "--admin-listen"]
        p.check(admin and admin[0].endswith(f":{ADMIN_PORTS[tier]}"), w, f"--admin-listen must be :{ADMIN_PORTS[tier]}")
        p.check(env_value(c, "GRIPMESH_NATS") is not None, w, "GRIPMESH_NATS must be set")
        drain = env_value(c, "GRIPMESH_DRAIN_TIMEOUT")
        p.check(drain is not None and str(drain.get("value", "")).isdigit(), w, "GRIPMESH_DRAIN_TIMEOUT must be set")
    if tier == "edge":
        p.check("--routes" not in args, w, "edges must follow control's routes over the bus (no --routes)")
    if tier == "control":
        # Without --routes the table is set with PUT /routes and kept in JetStream.
        p.check("--routes" not in args or args[args.index("--routes") + 1] == "/etc/gripmesh/routes", w,
                "control's --routes must be /etc/gripmesh/routes")
        tok = env_value(c, "GRIPMESH_PUBLISH_TOKEN")
        p.check(tok is not None and ((tok.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name"), w,
                "GRIPMESH_PUBLISH_TOKEN must come from a Secret (the publish API listens on 0.0.0.0)")
        p.check("--publish-insecure" not in args and env_value(c, "GRIPMESH_PUBLISH_INSECURE") is None, w,
                "the publish API must not be insecure")
    tier_of_container[c.get("name")] = tier
    return tier, ports


def check_manifests(p, objs, expect, forbid, expect_objects=(), schema_only=False):
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    for k in expect:
        p.check(k in by_kind, "render", f"expected a {k}")
    for k in forbid:
        p.check(k not in by_kind, "render", f"a {k} must not be rendered here")
    names = {name_of(o) for o in objs}
    for n in expect_objects:
        p.check(n in names, "render", f"expected {n}")
    if schema_only:
        return

    for o in objs:
        if o.get("kind") == "Namespace":
            continue
        md = o.get("metadata") or {}
        labels = md.get("labels") or {}
        w = name_of(o)
        p.check(len(md.get("name", "")) <= 63, w, "name longer than 63 characters")
        for lab in STANDARD_LABELS:
            p.check(lab in labels, w, f"missing label {lab}")
        p.check(labels.get("app.kubernetes.io/part-of") == PART_OF, w, "app.kubernetes.io/part-of must be gripmesh")
        p.check(md.get("namespace"), w, "metadata.namespace must be set")

    deployments = by_kind.get("Deployment", [])
    pods = {}  # deployment name -> (labels, {port name: number})
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind.get("HorizontalPodAutoscaler", [])}
    tiers_seen = set()
    for d in deployments:
        w = name_of(d)
        spec = pod_spec(d)
        tmpl_labels = d["spec"]["template"]["metadata"]["labels"]
        p.check(matches(d["spec"]["selector"]["matchLabels"], tmpl_labels), w, "selector doesn't match the pod labels")
        p.check("app.kubernetes.io/component" in tmpl_labels, w, "pods need app.kubernetes.io/component")
        psc = spec.get("securityContext") or {}
        p.check(psc.get("runAsNonRoot") is True, w, "pod runAsNonRoot must be true")
        p.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", w, "pod seccompProfile must be RuntimeDefault")
        p.check(spec.get("automountServiceAccountToken") is False, w, "no service account token is needed")
        p.check(spec.get("topologySpreadConstraints"), w, "topologySpreadConstraints must be set")
        ports = {}
        tier_of_container = {}
        main_tier = None
        for c in all_containers(spec):
            tier, cports = check_container(p, w, c, tier_of_container)
            ports.update(cports)
            if c in (spec.get("containers") or []) and main_tier is None:
                main_tier = tier
        for c in spec.get("initContainers") or []:
            p.check(c.get("restartPolicy") == "Always", w, f"init container {c.get('name')} must be a native sidecar")
        tiers_seen.add(main_tier)
        # Drain budget: grace >= preStop sleep + drain timeout, and the preStop hook is a sleep.
        grace = spec.get("terminationGracePeriodSeconds")
        main = (spec.get("containers") or [{}])[0]
        # A stock Prometheus (kubernetes-pods job) finds /metrics through pod annotations.
        ann = d["spec"]["template"]["metadata"].get("annotations") or {}
        main_ports = {str(cp.get("containerPort")) for cp in main.get("ports") or [] if cp.get("name") == "admin"}
        p.check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/path") == "/metrics"
                and ann.get("prometheus.io/port") in main_ports, w,
                f"pods need prometheus.io/scrape, /path and /port (the main container's admin port {main_ports}), got {ann}")
        drain = int((env_value(main, "GRIPMESH_DRAIN_TIMEOUT") or {}).get("value", 0) or 0)
        pre = ((((main.get("lifecycle") or {}).get("preStop") or {}).get("sleep")) or {}).get("seconds", 0)
        p.check(isinstance(grace, int) and grace >= pre + drain, w,
                f"terminationGracePeriodSeconds {grace} must cover preStop {pre}s + drain {drain}s")
        if main_tier == "edge":
            p.check(pre > 0, w, "edges need a preStop sleep so endpoints drop before the listener closes")
            args = main.get("args") or []
            authz_sidecar = [c for c in spec.get("initContainers") or [] if (c.get("args") or [None])[0] == "authz"]
            if authz_sidecar:
                p.check("--authz" in args and args[args.index("--authz") + 1] == "http://127.0.0.1:9191", w,
                        "with an authz sidecar the edge must use --authz http://127.0.0.1:9191")
                sargs = authz_sidecar[0].get("args") or []
                p.check("--listen" in sargs and sargs[sargs.index("--listen") + 1].startswith("127.0.0.1:"), w,
                        "the authz sidecar must listen on loopback")
        if main_tier == "control":
            vols = {v["name"]: v for v in spec.get("volumes") or []}
            mounts = {m["mountPath"]: m for m in main.get("volumeMounts") or []}
            m = mounts.get("/etc/gripmesh")
            # Without --routes the table lives in JetStream and there is nothing to mount.
            file_owned = "--routes" in (main.get("args") or [])
            if file_owned and p.check(m and not m.get("subPath"), w, "routes must be a directory mount at /etc/gripmesh (no subPath)"):
                cm = (vols.get(m["name"]) or {}).get("configMap", {}).get("name")
                cms = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
                p.check(cm in cms and "routes" in (cms[cm].get("data") or {}), w, f"ConfigMap {cm} with key routes must be rendered")
            tok = env_value(main, "GRIPMESH_PUBLISH_TOKEN")
            ref = ((tok or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
            if ref.get("name") in secrets:
                p.check(ref.get("key") in (secrets[ref["name"]].get("data") or {}), w,
                        f"Secret {ref.get('name')} lacks key {ref.get('key')}")
        if d["metadata"]["name"] in hpa_targets:
            p.check("replicas" not in d["spec"], w, "replicas must be left to the HPA")
        pods[d["metadata"]["name"]] = (tmpl_labels, ports)
    p.check({"edge", "control"} <= tiers_seen, "render", "edge and control Deployments must be rendered")

    services = {}
    for s in by_kind.get("Service", []):
        w = name_of(s)
        sel = s["spec"].get("selector") or {}
        targets = [ports for labels, ports in pods.values() if matches(sel, labels)]
        p.check(targets, w, "selector matches no Deployment's pods")
        for pt in s["spec"].get("ports") or []:
            tp = pt.get("targetPort", pt.get("port"))
            p.check(all(tp in ports or tp in ports.values() for ports in targets), w,
                    f"targetPort {tp} is not a port of the selected pods")
        services[s["metadata"]["name"]] = s

    for pdb in by_kind.get("PodDisruptionBudget", []):
        sel = pdb["spec"]["selector"]["matchLabels"]
        p.check(any(matches(sel, labels) for labels, _ in pods.values()), name_of(pdb), "selector matches no pods")
        p.check(("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"]), name_of(pdb),
                "exactly one of minAvailable / maxUnavailable")

    for h in by_kind.get("HorizontalPodAutoscaler", []):
        w = name_of(h)
        target = h["spec"]["scaleTargetRef"]["name"]
        p.check(target in pods, w, f"scaleTargetRef {target} is not rendered")
        p.check(h["spec"]["minReplicas"] <= h["spec"]["maxReplicas"], w, "minReplicas > maxReplicas")
        sd = ((h["spec"].get("behavior") or {}).get("scaleDown")) or {}
        p.check(sd.get("stabilizationWindowSeconds", 0) >= 300, w, "scaleDown.stabilizationWindowSeconds must be >= 300")
        for pol in sd.get("policies") or []:
            if pol["type"] == "Percent":
                p.check(pol["value"] <= 25, w, f"scale-down policy {pol} is not conservative")
        for m in h["spec"].get("metrics") or []:
            if m["type"] == "ContainerResource":
                cname = m["containerResource"]["container"]
                spec = next(pod_spec(d) for d in deployments if d["metadata"]["name"] == target)
                p.check(any(c["name"] == cname for c in spec["containers"]), w, f"no container {cname} in {target}")

    def backend_ok(w, svc, port):
        s = services.get(svc)
        if p.check(s is not None, w, f"backend Service {svc} is not rendered"):
            p.check(any(port in (pt.get("name"), pt.get("port")) for pt in s["spec"]["ports"]), w,
                    f"Service {svc} has no port {port}")

    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"].get("rules") or []:
            for path in rule["http"]["paths"]:
                svc = path["backend"]["service"]
                backend_ok(name_of(ing), svc["name"], svc["port"].get("name", svc["port"].get("number")))
    for r in by_kind.get("HTTPRoute", []):
        for rule in r["spec"]["rules"]:
            for b in rule.get("backendRefs") or []:
                backend_ok(name_of(r), b["name"], b["port"])
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"].get("matchLabels") or {}
        chosen = [s for s in services.values() if matches(sel, s["metadata"].get("labels") or {})]
        if p.check(chosen, name_of(sm), "selector matches no Service"):
            names = {pt.get("name") for s in chosen for pt in s["spec"]["ports"]}
            p.check("admin" in names, name_of(sm), "the selected Services have no admin port")


def cmd_manifests(args):
    import kubernetes_validate
    from kubernetes_validate import utils as kv_utils

    p = Problems()
    total = 0
    skipped = set()
    for path in args.files:
        objs = load_docs(path)
        total += len(objs)
        for o in objs:
            w = f"{path}: {name_of(o)}"
            if o.get("kind") in CRD_CHECKS:
                CRD_CHECKS[o["kind"]](p, w, o)
                skipped.add(o["kind"])
                continue
            for v in args.k8s_version:
                try:
                    kubernetes_validate.validate(o, v, strict=True)
                except kv_utils.ValidationError as e:
                    path_s = ".".join(str(x) for x in e.path)
                    p.add(w, f"Kubernetes {v} schema: {path_s}: {e.message}")
                except kv_utils.SchemaNotFoundError as e:
                    p.add(w, e.message)
        check_manifests(p, objs, args.expect_kind, args.forbid_kind, args.expect_object, args.schema_only)
    for line in p.items:
        print(f"  FAIL {line}")
    if p.items:
        return 1
    note = ""
    if skipped:
        note = f"; {', '.join(sorted(skipped))} (CRDs, no bundled schema) checked structurally"
    print(f"  {total} objects valid against Kubernetes {', '.join(args.k8s_version)} (strict){note}")
    return 0


# ---------------------------------------------------------------------------- compose


def cmd_compose(args):
    p = Problems()
    doc = load_docs(args.file)[0]
    services = doc.get("services") or {}
    w = args.file
    need = {"nats", "control", "authz"}
    p.check(need <= set(services), w, f"services {sorted(need - set(services))} missing")
    edges = [n for n, s in services.items() if (s.get("command") or [None])[0] == "edge"]
    p.check(len(edges) >= 2, w, "two edge services expected")
    port_re = re.compile(r"^(?:(?:\d{1,3}\.){3}\d{1,3}:)?\d{1,5}:\d{1,5}(?:/(?:tcp|udp))?$")
    host_ports = []
    for name, s in services.items():
        sw = f"{w}: service {name}"
        p.check("image" in s or "build" in s, sw, "needs image or build")
        for dep in s.get("depends_on") or {}:
            p.check(dep in services, sw, f"depends_on unknown service {dep}")
        for port in s.get("ports") or []:
            if p.check(isinstance(port, str) and port_re.match(port), sw, f"port {port!r} must be a quoted HOST:CONTAINER string"):
                host_ports.append(port.rsplit(":", 1)[0])
        if name == "nats":
            ncmd = [str(a) for a in (s.get("command") or [])]
            p.check("-js" in ncmd or "--jetstream" in ncmd, sw, "NATS needs JetStream (-js): the cluster state lives in it")
            p.check("--user" in ncmd or "--auth" in ncmd, sw, "NATS authorisation must be on (--user/--pass or --auth)")
            continue
        cmd = s.get("command")
        if not p.check(isinstance(cmd, list) and cmd and cmd[0] in SUBCOMMANDS, sw, "command must be a list starting with a subcommand"):
            continue
        env = s.get("environment") or {}
        p.check(isinstance(env, dict), sw, "environment must be a mapping")
        for k in env:
            p.check(k.startswith("GRIPMESH_"), sw, f"unexpected environment variable {k}")
        p.check(s.get("read_only") is True, sw, "read_only must be true")
        p.check("ALL" in (s.get("cap_drop") or []), sw, "cap_drop must include ALL")
        p.check(str(s.get("user", "")).split(":")[0] not in ("", "0", "root"), sw, "must run as a non-root user")
        if cmd[0] in ("edge", "control", "authz"):
            p.check("nats" in (s.get("depends_on") or {}), sw, "must depend on nats")
        if cmd[0] in ("edge", "control"):
            p.check(re.match(r"^nats://[^@/]+@nats:", str(env.get("GRIPMESH_NATS", ""))) is not None, sw,
                    "GRIPMESH_NATS must point at the nats service, with credentials")
        if cmd[0] == "edge":
            p.check("--authz" in cmd and cmd[cmd.index("--authz") + 1] == "http://authz:9191", sw, "edges use --authz http://authz:9191")
            p.check("--routes" not in cmd, sw, "edges follow control's routes")
        if cmd[0] == "control":
            p.check("GRIPMESH_PUBLISH_TOKEN" in env, sw, "control needs GRIPMESH_PUBLISH_TOKEN")
            p.check("--routes" in cmd, sw, "control needs --routes")
        if cmd[0] == "authz":
            p.check("--gateway" in cmd and "--listen" in cmd and "0.0.0.0:9191" in cmd and "--admin-listen" in cmd, sw,
                    "authz needs --gateway URL --listen 0.0.0.0:9191 --admin-listen 0.0.0.0:9103")
    p.check(len(host_ports) == len(set(host_ports)), w, "host ports must be unique")
    for line in p.items:
        print(f"  FAIL {line}")
    if not p.items:
        print(f"  {w}: services {', '.join(services)}")
    return 1 if p.items else 0


# ---------------------------------------------------------------------------- Dockerfile


def cmd_dockerfile(args):
    p = Problems()
    w = args.file
    lines = []
    for raw in open(args.file).read().replace("\\\n", " ").splitlines():
        s = raw.strip()
        if s and not s.startswith("#"):
            lines.append(s)
    arg_defaults = dict(l.split(None, 1)[1].split("=", 1) for l in lines if l.upper().startswith("ARG ") and "=" in l)
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    p.check(len(froms) >= 2, w, "must be multi-stage")
    p.check(any("cargo build --release --locked -p gripmesh" in l for l in lines), w, "must build with cargo build --release --locked -p gripmesh")
    last = max(i for i, l in enumerate(lines) if l.upper().startswith("FROM "))
    runtime = lines[last:]
    users = [l.split()[1] for l in runtime if l.upper().startswith("USER ")]
    p.check(users and users[-1].split(":")[0] not in ("0", "root"), w, "runtime stage must set a non-root USER")
    p.check(any(l.upper().startswith("ENTRYPOINT") and "gripmesh" in l for l in runtime), w, "ENTRYPOINT must be gripmesh")
    exposed = {int(x.split("/")[0]) for l in runtime if l.upper().startswith("EXPOSE ") for x in l.split()[1:]}
    for port in (7999, 5561, 5562, 9101, 9102, 9103, 9191):
        p.check(port in exposed, w, f"EXPOSE {port} missing")
    for line in p.items:
        print(f"  FAIL {line}")
    if not p.items:
        runtime_image = re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults.get(m.group(1), m.group(0)), froms[-1].split()[1])
        print(f"  {w}: {len(froms)} stages, runtime {runtime_image}, user {users[-1]}")
    return 1 if p.items else 0


# ---------------------------------------------------------------------------- values schema


def cmd_schema(args):
    import json

    import jsonschema

    schema = json.load(open(args.file))
    jsonschema.Draft7Validator.check_schema(schema)
    p = Problems()

    def walk(node, where):
        if not isinstance(node, dict):
            return
        if node.get("type") == "object" and "properties" in node:
            p.check(node.get("additionalProperties") is False, args.file,
                    f"{where or '(root)'}: unknown keys must be rejected (additionalProperties: false)")
        for k, v in (node.get("properties") or {}).items():
            walk(v, f"{where}.{k}" if where else k)
        for k, v in (node.get("definitions") or {}).items():
            walk(v, f"#/definitions/{k}")

    walk(schema, "")
    defaults = load_docs(args.defaults)[0]
    for err in jsonschema.Draft7Validator(schema).iter_errors(defaults):
        p.add(args.defaults, f"{'.'.join(str(x) for x in err.path)}: {err.message}")
    for line in p.items:
        print(f"  FAIL {line}")
    if not p.items:
        print(f"  {args.file}: valid draft-07 schema, closed objects, defaults conform")
    return 1 if p.items else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifests")
    m.add_argument("--k8s-version", action="append", required=True)
    m.add_argument("--expect-kind", action="append", default=[])
    m.add_argument("--forbid-kind", action="append", default=[])
    m.add_argument("--expect-object", action="append", default=[], help="KIND/NAME that must be rendered")
    m.add_argument("--schema-only", action="store_true", help="skip gripmesh's own rules (e.g. for k8s/nats-dev.yaml)")
    m.add_argument("files", nargs="+")
    c = sub.add_parser("compose")
    c.add_argument("file")
    d = sub.add_parser("dockerfile")
    d.add_argument("file")
    sc = sub.add_parser("schema")
    sc.add_argument("file")
    sc.add_argument("defaults", help="the chart's values.yaml")
    args = ap.parse_args()
    return {"manifests": cmd_manifests, "compose": cmd_compose, "dockerfile": cmd_dockerfile,
            "schema": cmd_schema}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
