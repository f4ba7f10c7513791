"""Kubernetes workloads: images pinned by digest, requests and limits, nothing privileged, no root, no
capabilities, probes, no API token in Triton pods, and a NetworkPolicy around every Triton workload that does not
admit everyone."""

from __future__ import annotations

import re

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ReportViolation, ResourceValidationArgs,
                           ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy)

from ._util import (LONG_RUNNING, WORLD, as_dict, config, containers, falsy, get, is_triton, items, labels_of,
                    namespace_of, pod_template, selector_matches, short, truthy, workload_name)

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_EXEMPT_NS = {"type": "array", "items": {"type": "string"}, "default": ["kube-system"],
              "description": "Namespaces whose workloads are exempt (cluster add-ons)."}


def _workload(args: ResourceValidationArgs):
    """The pod template of a workload outside the exempt namespaces, or None."""
    template = pod_template(args.resource_type, args.props)
    if template is None or namespace_of(args.props) in config(args, "exempt_namespaces", ["kube-system"]):
        return None
    return template


def _pinned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    template = _workload(args)
    for where, c in containers(template) if template is not None else ():
        image = str(get(c, "image", default=""))
        if not _DIGEST.search(image):
            report(f"{short(args.urn)}: {where} runs image {image!r}, not pinned by digest, so what runs can change "
                   "without a diff. Fix: use '<registry>/<repo>@sha256:<digest>' (keep the tag in a comment or "
                   "label); resolve it with `crane digest <image:tag>`.")


images_pinned = ResourceValidationPolicy(
    name="images-pinned-by-digest",
    description="Every container image is referenced by an immutable sha256 digest.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={"exempt_namespaces": _EXEMPT_NS}),
    validate=_pinned,
)


def _resources(args: ResourceValidationArgs, report: ReportViolation) -> None:
    template = _workload(args)
    need_cpu_limit = truthy(config(args, "require_cpu_limit", False))
    for where, c in containers(template) if template is not None else ():
        requests = as_dict(get(c, "resources", "requests"))
        limits = as_dict(get(c, "resources", "limits"))
        missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in requests]
        missing += [f"limits.{k}" for k in (("cpu", "memory") if need_cpu_limit else ("memory",)) if k not in limits]
        gpu_keys = [k for k in list(requests) + list(limits) if k.endswith("/gpu")]
        missing += [f"limits.{k}" for k in sorted(set(gpu_keys)) if k not in limits]
        if missing:
            report(f"{short(args.urn)}: {where} has no {', '.join(missing)}. Without them the scheduler cannot place "
                   "it safely and a leak can starve its neighbours. Fix: set resources.requests cpu and memory and "
                   "resources.limits memory (and nvidia.com/gpu for GPU containers), from the plan's sizing.")


requests_and_limits = ResourceValidationPolicy(
    name="resources-requests-and-limits",
    description="Every container sets CPU and memory requests and a memory limit (GPU containers a GPU limit).",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "exempt_namespaces": _EXEMPT_NS,
        "require_cpu_limit": {"type": "boolean", "default": False,
                              "description": "Also require a CPU limit (off: CPU limits throttle latency-bound servers)."},
    }),
    validate=_resources,
)

_DANGEROUS_CAPS = {"ALL", "SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE", "NET_RAW"}


def _unprivileged(args: ResourceValidationArgs, report: ReportViolation) -> None:
    template = _workload(args)
    if template is None:
        return
    who = short(args.urn)
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if truthy(get(template, "spec", host)):
            report(f"{who}: the pod sets {host}: true and shares the node's namespaces. Fix: remove {host}.")
    for where, c in containers(template):
        sc = get(c, "securityContext")
        if truthy(get(sc, "privileged")):
            report(f"{who}: {where} runs privileged (root on the node). Fix: remove securityContext.privileged; GPU "
                   "access comes from the nvidia.com/gpu resource limit, not privilege.")
        if truthy(get(sc, "allowPrivilegeEscalation")):
            report(f"{who}: {where} sets allowPrivilegeEscalation: true. Fix: set it to false.")
        added = {str(cap).upper() for cap in items(get(sc, "capabilities", "add"))} & _DANGEROUS_CAPS
        if added:
            report(f"{who}: {where} adds capabilities {', '.join(sorted(added))}. Fix: drop them "
                   "(capabilities: {drop: [ALL]}).")


no_privileged = ResourceValidationPolicy(
    name="no-privileged-containers",
    description="No container runs privileged, escalates privileges, adds dangerous capabilities or shares host "
                "namespaces.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={"exempt_namespaces": _EXEMPT_NS}),
    validate=_unprivileged,
)


# ---------------------------------------------------------------- no root, no capabilities
# Both as the Pod Security Standards' "restricted" profile words them
# (https://kubernetes.io/docs/concepts/security/pod-security-standards/): a container's securityContext
# overrides the pod's for runAsNonRoot/runAsUser; capabilities exist only on containers.


def _effective(template, container, key: str):
    """A container's `key` as the kubelet applies it: its own securityContext first, then the pod's."""
    own = get(container, "securityContext", key)
    return own if own is not None else get(template, "spec", "securityContext", key)


def _non_root(args: ResourceValidationArgs, report: ReportViolation) -> None:
    template = _workload(args)
    if template is None:
        return
    who = short(args.urn)
    for where, c in containers(template):
        user = _effective(template, c, "runAsUser")
        if user is not None and str(user).strip() == "0":
            report(f"{who}: {where} runs as runAsUser: 0 (root). A container escape starts as root on the node. "
                   "Fix: run as the image's own non-root user (Triton: runAsUser 1000, the image's triton-server).")
        elif not truthy(_effective(template, c, "runAsNonRoot")):
            report(f"{who}: {where} does not set runAsNonRoot: true (on itself or the pod), so it runs as root "
                   "whenever the image's USER is root. Fix: securityContext runAsNonRoot: true with a non-zero "
                   "runAsUser the image has.")


non_root = ResourceValidationPolicy(
    name="containers-run-as-non-root",
    description="Every container runs as a non-root user (runAsNonRoot: true, runAsUser not 0), on itself or the "
                "pod.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={"exempt_namespaces": _EXEMPT_NS}),
    validate=_non_root,
)

# The one capability the restricted profile lets a container add back after dropping ALL.
_ALLOWED_ADD = {"NET_BIND_SERVICE"}


def _caps_dropped(args: ResourceValidationArgs, report: ReportViolation) -> None:
    template = _workload(args)
    if template is None:
        return
    who = short(args.urn)
    for where, c in containers(template):
        dropped = {str(cap).upper() for cap in items(get(c, "securityContext", "capabilities", "drop"))}
        # Dangerous additions are no-privileged-containers' to report; this policy reports the rest.
        added = {str(cap).upper() for cap in items(get(c, "securityContext", "capabilities", "add"))} - (
            _ALLOWED_ADD | _DANGEROUS_CAPS)
        if "ALL" not in dropped:
            report(f"{who}: {where} keeps the runtime's default capabilities (capabilities.drop has no ALL"
                   f"{': only ' + ', '.join(sorted(dropped)) if dropped else ''}), among them NET_RAW, CHOWN and "
                   "SETUID. Fix: securityContext capabilities: {drop: [ALL]} (add back only NET_BIND_SERVICE if a "
                   "port below 1024 needs it).")
        if added:
            report(f"{who}: {where} adds capabilities {', '.join(sorted(added))}. Fix: remove them from "
                   "capabilities.add; only NET_BIND_SERVICE may be added back.")


capabilities_dropped = ResourceValidationPolicy(
    name="capabilities-dropped",
    description="Every container drops ALL Linux capabilities (adding back at most NET_BIND_SERVICE).",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={"exempt_namespaces": _EXEMPT_NS}),
    validate=_caps_dropped,
)


def _probes(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in LONG_RUNNING:
        return
    template = _workload(args)
    for where, c in containers(template, init=False) if template is not None else ():
        missing = [probe for probe in ("readinessProbe", "livenessProbe") if get(c, probe) is None]
        if missing:
            report(f"{short(args.urn)}: {where} has no {' or '.join(missing)}, so traffic reaches it before the "
                   "model is loaded or a hung server keeps receiving requests. Fix: for Triton, readinessProbe "
                   "httpGet /v2/health/ready and livenessProbe httpGet /v2/health/live on port 8000 (add a "
                   "startupProbe for slow model loads).")


probes_present = ResourceValidationPolicy(
    name="probes-present",
    description="Every long-running container has readiness and liveness probes.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={"exempt_namespaces": _EXEMPT_NS}),
    validate=_probes,
)

NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"


def _admits_everyone(rule) -> str | None:
    """Why an ingress rule admits every source, or None. NetworkPolicies are additive, so one such rule in any
    policy selecting a pod opens that pod (on the rule's ports) whatever the other policies say."""
    peers = items(get(rule, "from"))
    if not peers:
        return "a rule without `from`, so every source"
    for peer in peers:
        namespaces, pods, block = get(peer, "namespaceSelector"), get(peer, "podSelector"), get(peer, "ipBlock")
        if block is not None and str(get(block, "cidr")) in WORLD and not items(get(block, "except")):
            return f"ipBlock {get(block, 'cidr')} (every address)"
        if namespaces is not None and not as_dict(namespaces) and (pods is None or not as_dict(pods)):
            return "namespaceSelector: {} (every pod in every namespace)"
    return None


def _isolated(args: StackValidationArgs, report: ReportViolation) -> None:
    policies = [r for r in args.resources if r.resource_type == NETWORK_POLICY]
    for w in args.resources:
        if not is_triton(w.resource_type, w.props):
            continue
        template = pod_template(w.resource_type, w.props)
        ns, pod_labels = namespace_of(w.props), labels_of(template)
        covering = [np for np in policies if namespace_of(np.props) == ns
                    and selector_matches(get(np.props, "spec", "podSelector"), pod_labels)
                    and ("Ingress" in [str(x) for x in items(get(np.props, "spec", "policyTypes"))]
                         or get(np.props, "spec", "ingress") is not None)]
        if not covering:
            report(f"{short(w.urn)}: the Triton workload {workload_name(w.props, w.name)} (pod labels "
                   f"{dict(sorted(pod_labels.items()))}) is not selected by any NetworkPolicy with Ingress rules in "
                   f"namespace {ns}, so every pod in the cluster can call it directly, bypassing the gateway's auth "
                   "and rate limits. Fix: add a NetworkPolicy whose podSelector matches these labels and which only "
                   "allows ingress from the gateway (8000/8001) and Prometheus (8002).", w.urn)
        for np in covering:
            for i, rule in enumerate(items(get(np.props, "spec", "ingress"))):
                why = _admits_everyone(rule)
                if why:
                    report(f"{short(np.urn)}: ingress[{i}] admits everyone ({why}), so the Triton workload "
                           f"{workload_name(w.props, w.name)} it selects is open to every pod, bypassing the "
                           "gateway. Fix: list the peers in `from`: the gateway's podSelector on 8000/8001 and "
                           "Prometheus' namespaceSelector + podSelector on 8002.", np.urn)


triton_network_policy = StackValidationPolicy(
    name="triton-network-policy",
    description="Every Triton workload is selected by a NetworkPolicy that restricts its ingress, and by none that "
                "admits everyone.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_isolated,
)


def _token_mounted(args: StackValidationArgs, report: ReportViolation) -> None:
    """The pod's automountServiceAccountToken wins; unset, its ServiceAccount's; unset too, Kubernetes mounts."""
    accounts = {(namespace_of(a.props), get(a.props, "metadata", "name")): a for a in args.resources
                if a.resource_type == SERVICE_ACCOUNT}
    for w in args.resources:
        if not is_triton(w.resource_type, w.props):
            continue
        spec = get(pod_template(w.resource_type, w.props), "spec")
        own = get(spec, "automountServiceAccountToken")
        name = get(spec, "serviceAccountName", default="default")
        account = accounts.get((namespace_of(w.props), name))
        inherited = get(account.props, "automountServiceAccountToken") if account is not None else None
        if truthy(own) or (own is None and not falsy(inherited)):
            source = ("the pod sets automountServiceAccountToken: true" if truthy(own) else
                      f"neither the pod nor its ServiceAccount {name} sets automountServiceAccountToken: false")
            report(f"{short(w.urn)}: {source}, so the Triton workload {workload_name(w.props, w.name)} carries a "
                   "Kubernetes API token that a compromised model backend could use against the cluster. Fix: "
                   "automountServiceAccountToken: false on the pod spec (IRSA's webhook projects its own "
                   "sts.amazonaws.com token; GKE workload identity uses the metadata server).", w.urn)


no_api_token_in_triton = StackValidationPolicy(
    name="no-api-token-in-triton-pods",
    description="Triton pods do not mount a Kubernetes API token (automountServiceAccountToken: false).",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_token_mounted,
)

POLICIES = [images_pinned, requests_and_limits, no_privileged, non_root, capabilities_dropped, probes_present,
            triton_network_policy, no_api_token_in_triton]
