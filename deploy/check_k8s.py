#!/usr/bin/python3
"""Checks fflua's Kubernetes manifests without a cluster.

    /usr/bin/python3 deploy/check_k8s.py [FILE.yaml ...]   (default: deploy/k8s/*.yaml)

Each document is validated against the JSON Schema of its kind in
deploy/schema/ (the subset of Deployment apps/v1, Service v1 and Secret v1
that the manifests use; unknown fields are errors, so typos are caught),
then the documents are checked against each other: selectors and labels,
ports, the Secret and its mounts, the head's address in the workers'
arguments, CPUs and grace periods. This is a structural check, not a run on
a cluster. Debian packages: python3-jsonschema, python3-yaml.

Prints one line per problem, `FILE: Kind/name: what`, and exits 1 when
there is one, 0 (printing `N documents checked`) otherwise.
"""
import glob
import json
import os
import re
import sys

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMAS = {("apps/v1", "Deployment"): "deployment.apps.v1.json",
           ("v1", "Service"): "service.v1.json",
           ("v1", "Secret"): "secret.v1.json"}


def load_schemas():
    store, by_kind = {}, {}
    for name in ["common.json"] + list(SCHEMAS.values()):
        with open(os.path.join(HERE, "schema", name), encoding="utf-8") as f:
            s = json.load(f)
        store[s["$id"]] = s
    for key, name in SCHEMAS.items():
        with open(os.path.join(HERE, "schema", name), encoding="utf-8") as f:
            by_kind[key] = json.load(f)
    return store, by_kind


def where(path):
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "(top)"


def option(args, name):
    """The value after `name` in args (or in `name=value`), else None."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1:]
    return None


def cpus(q):
    """A CPU quantity as a number: 2, "2", "500m"."""
    if isinstance(q, (int, float)):
        return float(q)
    if q.endswith("m"):
        return float(q[:-1]) / 1000
    return float(q)


def ports_of(container):
    return {p.get("name"): p["containerPort"] for p in container.get("ports", [])}


def port_matches(ref, container):
    ports = ports_of(container)
    return ref in ports.values() if isinstance(ref, int) else ref in ports


def cross_check(docs, err):
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    secrets = {s["metadata"]["name"]: s for s in kinds.get("Secret", [])}
    services = {s["metadata"]["name"]: s for s in kinds.get("Service", [])}
    pods = []  # (deployment, pod labels, pod spec)
    for dep in kinds.get("Deployment", []):
        name = "Deployment/" + dep["metadata"]["name"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        for k, v in dep["spec"]["selector"]["matchLabels"].items():
            if labels.get(k) != v:
                err(dep, f"{name}: selector {k}={v} does not match the pod template's labels")
        pods.append((dep, labels, dep["spec"]["template"]["spec"]))

    for svc in services.values():
        name = "Service/" + svc["metadata"]["name"]
        sel = svc["spec"]["selector"]
        chosen = [p for p in pods if all(p[1].get(k) == v for k, v in sel.items())]
        if len(chosen) != 1:
            err(svc, f"{name}: its selector matches {len(chosen)} Deployments' pods, not 1")
            continue
        containers = chosen[0][2]["containers"]
        for sp in svc["spec"]["ports"]:
            target = sp.get("targetPort", sp["port"])
            if not any(port_matches(target, c) for c in containers):
                err(svc, f"{name}: targetPort {target} is no containerPort of "
                         f"Deployment/{chosen[0][0]['metadata']['name']}")

    for dep, _, spec in pods:
        name = "Deployment/" + dep["metadata"]["name"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        inits = spec.get("initContainers", [])
        for c in inits + spec["containers"]:
            cname = f"{name}: container '{c['name']}'"
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    err(dep, f"{cname}: mounts volume '{m['name']}', which the pod does not have")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                tcp = c.get(probe, {}).get("tcpSocket")
                if tcp and not port_matches(tcp["port"], c):
                    err(dep, f"{cname}: {probe} port {tcp['port']} is no containerPort of it")
                cmd = c.get(probe, {}).get("exec", {}).get("command", [])
                if "status" in cmd:
                    check_status_probe(dep, f"{cname}: {probe}", c.get("args", []), cmd, err)
        for v in volumes.values():
            sec = v.get("secret")
            if not sec:
                continue
            s = secrets.get(sec["secretName"])
            if s is None:
                err(dep, f"{name}: volume '{v['name']}' uses Secret '{sec['secretName']}', "
                         "which is not among the manifests")
                continue
            keys = set(s.get("data", {})) | set(s.get("stringData", {}))
            for item in sec.get("items", []):
                if item["key"] not in keys:
                    err(dep, f"{name}: volume '{v['name']}' takes key '{item['key']}' of "
                             f"Secret '{sec['secretName']}', which has {sorted(keys)}")
        for c in spec["containers"]:
            cname = f"{name}: container '{c['name']}'"
            args = c.get("args", [])
            check_token(dep, cname, c, inits, volumes, option(args, "--token-file"), err)
            role = args[0] if args else None
            if role == "head":
                port = int(option(args, "--port") or 6380)
                if port not in ports_of(c).values():
                    err(dep, f"{cname}: the head listens on {port}, which is no containerPort")
            elif role == "worker":
                check_worker(dep, cname, c, spec, services, err)


def check_token(dep, cname, c, inits, volumes, path, err):
    """The --token-file is in a volume the container mounts, and is a key of a
    Secret volume, or written by an init container from one."""
    if path is None:
        err(dep, f"{cname}: no --token-file")
        return
    mount = next((m for m in c.get("volumeMounts", [])
                  if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    if mount is None:
        err(dep, f"{cname}: --token-file {path} is in no volume it mounts")
        return
    vol = volumes.get(mount["name"], {})
    rel = path[len(mount["mountPath"].rstrip("/")) + 1:]
    if "secret" in vol:
        if rel not in [i["path"] for i in vol["secret"].get("items", [])]:
            err(dep, f"{cname}: --token-file {path} is no item of the Secret volume '{mount['name']}'")
        return
    for init in inits:
        cmd = init.get("command", []) + init.get("args", [])
        if path not in cmd:
            continue
        if not any(m["name"] == mount["name"] and path.startswith(m["mountPath"].rstrip("/") + "/")
                   for m in init.get("volumeMounts", [])):
            err(dep, f"{cname}: init container '{init['name']}' writes {path} outside the volume "
                     f"'{mount['name']}' the container reads it from")
        sources = []
        for m in init.get("volumeMounts", []):
            sec = volumes.get(m["name"], {}).get("secret")
            for item in (sec or {}).get("items", []):
                sources.append(m["mountPath"].rstrip("/") + "/" + item["path"])
        if not any(s in cmd for s in sources):
            err(dep, f"{cname}: init container '{init['name']}' copies the token from no Secret item "
                     f"it mounts ({sources})")
        return
    err(dep, f"{cname}: --token-file {path} is in volume '{mount['name']}', which is neither a Secret "
             "nor written by an init container")


def check_status_probe(dep, what, args, cmd, err):
    """A probe running `fflua status` asks this container's head, with its token."""
    port = option(args, "--port") or "6380"
    address = option(cmd, "--address") or ""
    if not re.fullmatch(r"(127\.0\.0\.1|localhost):" + re.escape(port), address):
        err(dep, f"{what}: asks '{address}', not the head of this container (127.0.0.1:{port})")
    if option(cmd, "--token-file") != option(args, "--token-file"):
        err(dep, f"{what}: --token-file {option(cmd, '--token-file')} is not the head's "
                 f"{option(args, '--token-file')}")


def check_worker(dep, cname, c, spec, services, err):
    args = c.get("args", [])
    address = option(args, "--address") or ""
    m = re.fullmatch(r"([^:]+):(\d+)", address)
    svc = services.get(m.group(1).split(".")[0]) if m else None
    if svc is None:
        err(dep, f"{cname}: --address '{address}' is not HOST:PORT with HOST a Service of the manifests")
    elif int(m.group(2)) not in [p["port"] for p in svc["spec"]["ports"]]:
        err(dep, f"{cname}: --address '{address}': Service '{m.group(1)}' has no port {m.group(2)}")
    n = option(args, "--num-cpus")
    req = c.get("resources", {}).get("requests", {}).get("cpu")
    if n is None or req is None or float(n) != cpus(req):
        err(dep, f"{cname}: --num-cpus {n} differs from requests.cpu {req}")
    grace = float(option(args, "--grace") or 30)
    period = spec.get("terminationGracePeriodSeconds", 30)
    if period <= grace:
        err(dep, f"{cname}: terminationGracePeriodSeconds {period} leaves no time after --grace {grace:g}")


def main(argv):
    files = argv or sorted(glob.glob(os.path.join(HERE, "k8s", "*.yaml")))
    store, by_kind = load_schemas()
    problems, docs, owner = [], [], {}

    def err(doc, msg):
        problems.append(f"{owner.get(id(doc), '?')}: {msg}")

    for path in files:
        with open(path, encoding="utf-8") as f:
            try:
                loaded = [d for d in yaml.safe_load_all(f) if d is not None]
            except yaml.YAMLError as e:
                problems.append(f"{path}: not YAML: {e}")
                continue
        for i, d in enumerate(loaded):
            if not isinstance(d, dict):
                problems.append(f"{path}: document {i + 1} is not a mapping")
                continue
            owner[id(d)] = path
            schema = by_kind.get((d.get("apiVersion"), d.get("kind")))
            label = f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
            if schema is None:
                problems.append(f"{path}: {label}: apiVersion {d.get('apiVersion')} kind {d.get('kind')} "
                                "has no schema here")
                continue
            resolver = jsonschema.RefResolver.from_schema(schema, store=store)
            validator = jsonschema.Draft202012Validator(schema, resolver=resolver)
            errors = sorted(validator.iter_errors(d), key=lambda e: list(e.absolute_path))
            for e in errors:
                problems.append(f"{path}: {label}: {where(e.absolute_path)}: {e.message}")
            if not errors:
                docs.append(d)
    cross_check(docs, err)
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"{len(docs)} documents checked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
