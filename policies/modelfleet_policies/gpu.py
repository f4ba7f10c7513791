"""GPU pools: tainted so only GPU workloads land there, capped in size, and of a class approved for the stack."""

from __future__ import annotations

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ReportViolation, ResourceValidationArgs,
                           ResourceValidationPolicy)

from ._util import GPU_TAINT_KEY, config, pool_of, short

_NO_SCHEDULE = ("NO_SCHEDULE", "NoSchedule")


def _tainted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    pool = pool_of(args.resource_type, args.props)
    if pool is None or not pool.is_gpu:
        return
    if not any(t["key"] == GPU_TAINT_KEY and t["effect"] in _NO_SCHEDULE for t in pool.taints):
        have = ", ".join(f"{t['key']}={t['value']}:{t['effect']}" for t in pool.taints) or "none"
        report(f"{short(args.urn)}: this {pool.kind} has GPUs ({pool.gpu_class or 'GPU node image'}) but no "
               f"{GPU_TAINT_KEY} NoSchedule taint (taints: {have}), so any pod can take its expensive nodes. Fix: add "
               f"taints=[{{'key': '{GPU_TAINT_KEY}', 'value': 'true', 'effect': 'NO_SCHEDULE'}}] (on GKE value 'present', "
               "the taint GKE sets itself) and give GPU workloads a toleration with operator Exists.")


gpu_pools_tainted = ResourceValidationPolicy(
    name="gpu-pools-tainted",
    description=f"Every GPU node pool (EKS node group, GKE node pool) carries the {GPU_TAINT_KEY}:NoSchedule taint.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_tainted,
)


def _capped(args: ResourceValidationArgs, report: ReportViolation) -> None:
    pool = pool_of(args.resource_type, args.props)
    if pool is None or not pool.is_gpu:
        return
    cap = int(config(args, "max_gpus_per_pool", 16))
    if pool.max_gpus is None:
        if pool.max_nodes is None:
            report(f"{short(args.urn)}: the GPU {pool.kind} has no maximum size, so its GPU count is unbounded. "
                   f"Fix: set {pool.how_max} so that nodes x GPUs per node <= {cap}.")
        return
    if pool.max_gpus > cap:
        report(f"{short(args.urn)}: the {pool.kind} can grow to {pool.max_gpus} GPUs ({pool.how_max} = "
               f"{pool.max_nodes} nodes x {pool.gpus_per_node} {pool.gpu_class}), over this stack's cap of {cap} "
               "GPUs per pool. Fix: lower the models' scaling.max_replicas (the pool's maximum is derived from them), "
               "or raise max_gpus_per_pool for gpu-count-under-cap in policies/config/<stack>.json after review.")


gpu_count_under_cap = ResourceValidationPolicy(
    name="gpu-count-under-cap",
    description="A GPU pool's maximum size (nodes x GPUs per node) stays under the stack's per-pool cap.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "max_gpus_per_pool": {"type": "integer", "minimum": 1, "default": 16,
                              "description": "The most GPUs one node pool may scale to."},
    }),
    validate=_capped,
)

DEFAULT_APPROVED = ["nvidia-t4", "nvidia-l4", "nvidia-a10g"]


def _approved(args: ResourceValidationArgs, report: ReportViolation) -> None:
    pool = pool_of(args.resource_type, args.props)
    if pool is None or not pool.is_gpu:
        return
    approved = [str(c) for c in config(args, "approved_gpu_classes", DEFAULT_APPROVED)]
    if pool.gpu_class is None:
        report(f"{short(args.urn)}: the {pool.kind} runs a GPU node image but its GPU class cannot be told from its "
               "instance type or labels. Fix: name a known GPU instance type, or label the pool "
               "modelfleet.io/hardware-class=<class>.")
    elif pool.gpu_class not in approved:
        report(f"{short(args.urn)}: the {pool.kind} uses {pool.gpu_class}, which is not approved for this stack "
               f"(approved: {', '.join(approved)}). Fix: pick an approved hardware.gpu_class in the model spec, or "
               "add the class to approved_gpu_classes for approved-gpu-classes in policies/config/<stack>.json.")


approved_gpu_classes = ResourceValidationPolicy(
    name="approved-gpu-classes",
    description="GPU pools use only the GPU classes approved for the stack's environment.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "approved_gpu_classes": {"type": "array", "items": {"type": "string"}, "default": DEFAULT_APPROVED,
                                 "description": "modelfleet hardware classes allowed in this stack (nvidia-l4, ...)."},
    }),
    validate=_approved,
)

POLICIES = [gpu_pools_tainted, gpu_count_under_cap, approved_gpu_classes]
