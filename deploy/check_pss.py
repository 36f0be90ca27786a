"""Checks every pod template of rendered Kubernetes objects against the
restricted Pod Security Standard (the checks of the Kubernetes docs'
"Restricted" profile, plus claimgate's own: read-only root filesystem,
resource requests and limits, no service-account token, probes).

    python3 deploy/check_pss.py rendered.yaml

Prints each violation as `kind/name container: what`, exits 1 on any.
"""
import sys

import yaml

ALLOWED_VOLUMES = {"configMap", "secret", "emptyDir", "projected", "downwardAPI",
                   "persistentVolumeClaim", "csi", "ephemeral"}
problems = []


def pod_specs(obj):
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        yield spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield spec["template"]["spec"]
    elif kind == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]


def check(where, pod):
    psc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{where}: {flag}")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: the service-account token is mounted")
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"{where}: volume {v['name']} of type {sorted(kinds)}")
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        at = f"{where} {c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{at}: privileged")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{at}: capabilities.drop lacks ALL")
        added = (sc.get("capabilities") or {}).get("add") or []
        if [a for a in added if a != "NET_BIND_SERVICE"]:
            problems.append(f"{at}: adds capabilities {added}")
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problems.append(f"{at}: runAsNonRoot is not set")
        if sc.get("runAsUser") == 0 or psc.get("runAsUser") == 0:
            problems.append(f"{at}: runs as uid 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{at}: seccompProfile is {seccomp}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: root filesystem is writable")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(part) or {}):
                problems.append(f"{at}: no cpu/memory {part}")
        image = c.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problems.append(f"{at}: image {image!r} has no fixed tag")


docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
pods = 0
for obj in docs:
    for pod in pod_specs(obj):
        pods += 1
        check(f"{obj['kind']}/{obj['metadata']['name']}", pod)
for p in problems:
    print(p)
print(f"{pods} pod templates checked, {len(problems)} problems")
sys.exit(1 if problems or pods == 0 else 0)
