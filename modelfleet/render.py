"""`render(plan, out_dir)`: write what a reviewer reads about a stack's serving, from the plan alone.

    out_dir/models/<model>/config.pbtxt                    the model's config, when it runs on one hardware
                                                           class in this stack (always true today: the class
                                                           is per model; the local stack is all CPU)
    out_dir/models/<model>/<hardware-class>/config.pbtxt   one per class, if a model ever runs on several
    out_dir/kubernetes/<region>/<NN>-<kind>-<name>.yaml    every Kubernetes object of the region's cluster,
                                                           numbered in apply order
    out_dir/kubernetes/<region>/helm-keda.yaml             the KEDA chart, version and values
    out_dir/kubernetes/<region>/gateway/...                the gateway's objects and charts (cloud stacks)
    out_dir/monitoring/...                                 rules, Alertmanager config, dashboards, promtool
                                                           tests (modelfleet.monitoring.render)
    out_dir/gateway/envoy.yaml                             the local stack's Envoy (modelfleet.gateway)

Pure apart from writing under `out_dir`, and deterministic: the same plan gives the same bytes. The cloud
identity annotation of the Triton ServiceAccount is an output of the deployment; it is shown as a placeholder.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from modelfleet import canary, serving, versions
from modelfleet.monitoring.kubernetes import region_monitoring_objects, stack_values
from modelfleet.monitoring.rules import monitoring_plan
from modelfleet.monitoring.render import render_monitoring
from modelfleet.plan import FleetPlan
from modelfleet.spec import ModelSpec
from modelfleet.triton.config import CPU, TunedSettings, render_config
from modelfleet.tuning import capacity


def hardware_classes(plan: FleetPlan, model: ModelSpec) -> tuple[str, ...]:
    """The hardware classes `model` runs on in this stack: CPU on the local stack, else its placements'."""
    if plan.environment == "local" or not plan.regions:
        return (CPU,)
    return tuple(sorted({p.hardware_class for r in plan.regions for p in r.placements if p.model == model.name}))


def model_configs(plan: FleetPlan, tuning: dict[tuple[str, str], TunedSettings] | None = None
                  ) -> dict[tuple[str, str], str]:
    """Every model's validated config.pbtxt in this stack, keyed `(model, hardware_class)`.

    `tuning` maps `(model, hardware_class)` to measured settings; default: the plan's usable tuning records.
    A model with a canary also has its canary's config under `(canary.config_key(model), hardware_class)`: the same
    settings at the canary's version (modelfleet.canary).
    """
    tuning = capacity.tuned_settings(plan) if tuning is None else tuning
    configs = {}
    for model in plan.models:
        for hw in hardware_classes(plan, model):
            configs[(model.name, hw)] = render_config(model, hw, tuning.get((model.name, hw)))
            if model.rollout.canary_version is not None:
                configs[(canary.config_key(model.name), hw)] = render_config(
                    canary.canary_spec(model), hw, tuning.get((model.name, hw)))
    return configs


def cloud_configs(plan: FleetPlan) -> dict[str, str]:
    """Each model's config as its clusters run it (on its spec's hardware class), keyed by model."""
    configs = model_configs(plan)
    out = {}
    for m in plan.models:
        for key in (m.name, canary.config_key(m.name)):
            if (key, m.hardware.gpu_class) in configs:
                out[key] = configs[(key, m.hardware.gpu_class)]
    return out


class OutputError(ValueError):
    """`out_dir` cannot hold the rendered files (it is a file, or a path under it is); `str()` says which."""


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # shared label dicts must print in full, not as &id001
        return True


def to_yaml(obj: dict) -> str:
    return yaml.dump(obj, Dumper=_NoAliases, sort_keys=False, default_flow_style=False, width=120)


def check_output_dir(out_dir: str | Path) -> Path:
    """`out_dir` as a Path, or OutputError if it or a parent is a file. Checked before writing anything, so a
    mistyped --out leaves nothing half-written."""
    out = Path(out_dir)
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputError(f"{blocking} is a file, not a folder; give --out a folder (created if missing)")
    return out


def render(plan: FleetPlan, out_dir: str | Path) -> list[Path]:
    """Write the stack's Triton configs and Kubernetes objects under `out_dir`; return the files written, sorted.

    Validates as it goes: every config by Triton's schema and rules (`ModelConfigError`), every Kubernetes
    object for its cluster's version (`serving.ManifestError`). Files modelfleet did not write are left alone.
    """
    out = check_output_dir(out_dir)
    written: list[Path] = []

    def write(path: Path, text: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror}") from None
        written.append(path)

    configs = model_configs(plan)
    for model in plan.models:
        classes = hardware_classes(plan, model)
        for hw in classes:
            folder = out / "models" / model.name / (hw if len(classes) > 1 else "")
            write(folder / "config.pbtxt", configs[(model.name, hw)])
            if (canary.config_key(model.name), hw) in configs:
                write(folder / canary.CONFIG_KEY, configs[(canary.config_key(model.name), hw)])

    if plan.environment == "local" and plan.gateway is not None:
        from modelfleet.gateway import native_auth
        from modelfleet.gateway.envoy_config import AUDIT_LOG, AUTH_DIR, default_ports, envoy_bootstrap

        write(out / "gateway" / "envoy.yaml", to_yaml(envoy_bootstrap(plan.gateway, default_ports(plan.gateway),
                                                                      AUDIT_LOG)))
        # The key check's table without keys (the running gateway writes it from its key file): the rendered config
        # is complete and refuses every key. Its module is compiled on this machine (native_auth.module_path).
        for name, doc in native_auth.documents({}).items():
            write(out / "gateway" / AUTH_DIR / name, to_yaml(doc))

    cloud = cloud_configs(plan)
    for region in plan.regions:
        serving.check_keda_supports(region.kubernetes_version)
        folder = out / "kubernetes" / region.key
        objects = serving.region_objects(plan, region, serving.placeholder_identity(region.cloud), cloud)
        objects += region_monitoring_objects(plan, region)
        for index, obj in enumerate(objects, start=1):
            serving.validate_manifest(obj, region.kubernetes_version)
            name = f"{index:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
            write(folder / name, to_yaml(obj))
        write(folder / "helm-kube-prometheus-stack.yaml", to_yaml({
            "chart": versions.KUBE_PROMETHEUS_STACK.chart, "repository": versions.KUBE_PROMETHEUS_STACK.repository,
            "version": versions.KUBE_PROMETHEUS_STACK.version, "namespace": versions.KUBE_PROMETHEUS_STACK.namespace,
            "values": stack_values(plan, monitoring_plan(plan)),
        }))
        write(folder / "helm-keda.yaml", to_yaml({
            "chart": serving.KEDA_CHART,
            "repository": serving.KEDA_CHART_REPOSITORY,
            "version": serving.KEDA_CHART_VERSION,
            "namespace": serving.KEDA_NAMESPACE,
            "values": serving.keda_release_values(),
        }))
        if plan.gateway is not None:
            _render_gateway(plan, region, out / "kubernetes" / region.key / "gateway", write)
    written += render_monitoring(plan, out)
    return sorted(written)


def _render_gateway(plan: FleetPlan, region, folder: Path, write) -> None:
    """The region's gateway objects (deploy-time values as placeholders, identity included) and its charts."""
    from modelfleet import versions
    from modelfleet.gateway import manifests
    from modelfleet.routing import peering

    cloud = manifests.placeholder_cloud(plan, region)
    identity = {serving.IDENTITY_ANNOTATION[region.cloud]: f"<{region.cloud} identity of the gateway secret reader, set at deploy>"}
    for index, obj in enumerate(manifests.region_objects(plan, region, cloud, identity), start=1):
        serving.validate_manifest(obj, region.kubernetes_version)
        write(folder / f"{index:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml", to_yaml(obj))
    gateway_values = peering.with_backend_api(plan, manifests.envoy_gateway_values(cloud))
    for chart, values in ((versions.ENVOY_GATEWAY, gateway_values),
                          (versions.EXTERNAL_SECRETS, {"installCRDs": True})):
        write(folder / f"helm-{chart.chart}.yaml", to_yaml({
            "chart": chart.chart, "repository": chart.repository, "version": chart.version,
            "namespace": chart.namespace, "values": values}))
