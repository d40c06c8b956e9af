"""Checks that rendered chart objects agree with the proxy config they mount.

usage: check_rendered.py CONTAINER_TOML TRINO_CATALOG DEFAULT_RENDER [OTHER_RENDER...]

For each render: the Deployment's container ports are the ports of [server] listen and
[admin] listen in the ConfigMap's TOML, the probes are /livez and /readyz on the admin port,
the grace period outlasts drain_delay_ms + shutdown_grace_ms, the pods run locked down as the
Dockerfile's user, TLS files sit on a mounted volume, and the NetworkPolicy opens the Pinot
ports the config uses. The default render's config must hold every key of the image's
config (config/container.toml) with the same value, the Trino catalog must name its Service,
and the Dockerfile must expose its ports. Run by deploy/check.sh; needs PyYAML.
"""

import sys
import tomllib
from urllib.parse import urlsplit

import yaml

CONFIG_PATH = "/etc/pinot-proxy/pinot-proxy.toml"
DRAIN_DELAY_MS = 5000  # the proxy's defaults
SHUTDOWN_GRACE_MS = 30000

errors = []


def check(ok, message):
    if not ok:
        errors.append(message)


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def url_port(url):
    parts = urlsplit(url)
    return parts.port or {"http": 80, "https": 443}[parts.scheme]


def objects(path):
    found = {}
    for doc in yaml.safe_load_all(open(path)):
        if doc:
            found.setdefault(doc["kind"], []).append(doc)
    return found


def check_render(path):
    objs = objects(path)
    (deployment,) = objs["Deployment"]
    (service,) = objs["Service"]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    (configmap,) = objs["ConfigMap"]
    config = tomllib.loads(configmap["data"]["pinot-proxy.toml"])
    server, admin = config["server"], config.get("admin", {})
    where = f"{path}:"

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(ports.get("grpc") == port_of(server["listen"]),
          f"{where} container port grpc {ports.get('grpc')} is not [server] listen {server['listen']}")
    check("listen" in admin, f"{where} config has no [admin] listen")
    if "listen" in admin:
        check(ports.get("admin") == port_of(admin["listen"]),
              f"{where} container port admin {ports.get('admin')} is not [admin] listen {admin['listen']}")

    for probe, want in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == want, f"{where} {probe} path {get.get('path')!r}, want {want}")
        check(get.get("port") in ("admin", ports.get("admin")),
              f"{where} {probe} port {get.get('port')!r}, want the admin port")

    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for name in ("grpc", "admin"):
        check(service_ports.get(name, {}).get("targetPort") in (name, ports.get(name)),
              f"{where} Service port {name} does not target the container's {name} port")

    needed = (server.get("drain_delay_ms", DRAIN_DELAY_MS)
              + server.get("shutdown_grace_ms", SHUTDOWN_GRACE_MS)) / 1000
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(grace > needed, f"{where} terminationGracePeriodSeconds {grace} <= drain + grace {needed}")

    check("checksum/config" in pod["metadata"].get("annotations", {}),
          f"{where} no checksum/config pod annotation")
    args = container.get("args", [])
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    check(args[args.index("--config") + 1] == CONFIG_PATH if "--config" in args else False,
          f"{where} args {args} do not name {CONFIG_PATH}")
    check(CONFIG_PATH in mounts, f"{where} nothing mounted at {CONFIG_PATH}")
    for key in ("cert_file", "key_file", "client_ca_file"):
        file = server.get("tls", {}).get(key)
        if file:
            check(any(file.startswith(m.rstrip("/") + "/") and mounts[m].get("readOnly")
                      and "subPath" not in mounts[m] for m in mounts),
                  f"{where} [server.tls] {key} {file} is not on a read-only directory mount")

    pod_sc, sc = spec.get("securityContext", {}), container.get("securityContext", {})
    check(pod_sc.get("runAsNonRoot") is True, f"{where} runAsNonRoot is not true")
    check(pod_sc.get("runAsUser") == dockerfile_user(), f"{where} runAsUser is not the Dockerfile's USER")
    check(pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where} seccomp is not RuntimeDefault")
    check(sc.get("readOnlyRootFilesystem") is True, f"{where} root filesystem is writable")
    check(sc.get("allowPrivilegeEscalation") is False, f"{where} privilege escalation allowed")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where} capabilities not all dropped")

    for policy in objs.get("NetworkPolicy", []):
        egress = {}
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                component = peer.get("podSelector", {}).get("matchLabels", {}).get("component")
                if component:
                    egress.setdefault(component, set()).update(p["port"] for p in rule.get("ports", []))
        uses = {
            "server": set(config.get("servers", {}).get("ports", [])),
            "controller": {url_port(u) for u in config.get("controller", {}).get("urls", [])},
            "broker": {url_port(u) for u in config.get("broker", {}).get("urls", [])}
            | ({config["broker"]["grpc_port"]} if "grpc_port" in config.get("broker", {}) else set()),
        }
        for component, used in uses.items():
            missing = used - egress.get(component, set())
            check(not missing, f"{where} NetworkPolicy lets the proxy reach no {component} on {sorted(missing)}")
    return service, ports, config


def dockerfile_user():
    for line in open("Dockerfile"):
        if line.startswith("USER "):
            return int(line.split()[1].split(":")[0])
    return None


def check_catalog(path, service, ports, config):
    props = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    endpoint = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{ports['grpc']}"
    tls = "tls" in config["server"]
    want = {
        "connector.name": "pinot",
        "pinot.controller-urls": f"{'https' if tls else 'http'}://{endpoint}",
        "pinot.proxy.enabled": "true",
        "pinot.grpc.proxy-uri": endpoint,
        "pinot.grpc.use-plain-text": "false" if tls else "true",
    }
    for key, value in want.items():
        check(props.get(key) == value, f"{path}: {key}={props.get(key)}, want {value}")
    allowed = config["servers"].get("ports")
    check(allowed is None or int(props.get("pinot.grpc.port", 0)) in allowed,
          f"{path}: pinot.grpc.port={props.get('pinot.grpc.port')} is not in [servers] ports {allowed}")


def check_superset(path, config):
    """Every key of the TOML file at path is in config, with the same value."""
    def walk(want, have, where):
        for key, value in want.items():
            name = f"{where}.{key}" if where else key
            if isinstance(value, dict) and isinstance(have.get(key), dict):
                walk(value, have[key], name)
            else:
                check(have.get(key) == value,
                      f"chart's default config: {name} = {have.get(key)!r}, {path} has {value!r}")
    walk(tomllib.load(open(path, "rb")), config, "")


def check_expose(ports):
    exposed = set()
    for line in open("Dockerfile"):
        if line.startswith("EXPOSE "):
            exposed.update(int(p.split("/")[0]) for p in line.split()[1:])
    check(exposed == set(ports.values()),
          f"Dockerfile EXPOSE {sorted(exposed)} is not the chart's ports {sorted(ports.values())}")


def main():
    container, catalog, default, *others = sys.argv[1:]
    service, ports, config = check_render(default)
    check_superset(container, config)
    check_catalog(catalog, service, ports, config)
    check_expose(ports)
    for path in others:
        check_render(path)
    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print(f"{1 + len(others)} renders: ports, probes, grace period, security context, "
          "NetworkPolicy, container.toml, Trino catalog and Dockerfile agree")


main()
