"""What a change does: two plan JSONs (what `modelfleet plan --format json` writes) compared, pure.

Resources are matched by URN (what the engine matches them by). For each resource in both, the changed input
paths are listed and checked against the provider's replace-on-change properties (`data/replace_on_changes.json`,
transcribed from the providers' own sources, since the installed SDKs ship no schema). A replaced resource gets a
new id and ARN, so the inputs of others that carry them change too: replacements are followed to a fixed point,
which is how one CIDR edit replaces a VPC, its subnets and the node groups in them. Cost and policy verdicts are
compared from the same JSON. Every renderer formats one `PlanDiff`, so text, JSON and markdown never disagree.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

REDACTED = "[secret]"  # what modelfleet.offline writes for a Pulumi secret
DATA = Path(__file__).parent / "data" / "replace_on_changes.json"

# Keys whose values are credentials wherever they appear: the provider schemas mark these properties secret
# (e.g. the Kubernetes provider's `kubeconfig`), so a diff never prints them even when a plan holds them in clear.
SECRET_KEYS = ("password", "secret", "token", "privatekey", "kubeconfig", "credentials", "stringdata")

# What a replacement of these types takes with it; the reason is printed beside the warning.
DISRUPTIVE = {
    "aws:ec2/vpc:Vpc": "the VPC: every subnet, NAT gateway, endpoint and cluster inside it is rebuilt",
    "aws:ec2/subnet:Subnet": "a subnet: node groups and endpoints placed in it are rebuilt",
    "aws:eks/cluster:Cluster": "the EKS cluster: control plane, every workload and its endpoint are rebuilt",
    "aws:eks/nodeGroup:NodeGroup": "a node group: its nodes are drained and recreated, serving capacity drops",
    "aws:kms/key:Key": "a KMS key: data encrypted with the old key cannot be read with the new one",
    "aws:s3/bucket:Bucket": "a bucket: its objects are not carried over",
    "aws:s3/bucketV2:BucketV2": "a bucket: its objects are not carried over",
    "gcp:compute/network:Network": "the VPC network: every subnet, router, NAT and cluster in it is rebuilt",
    "gcp:compute/subnetwork:Subnetwork": "a subnetwork: the cluster and node pools placed in it are rebuilt",
    "gcp:container/cluster:Cluster": "the GKE cluster: control plane, every workload and its endpoint are rebuilt",
    "gcp:container/nodePool:NodePool": "a node pool: its nodes are drained and recreated, serving capacity drops",
    "gcp:kms/cryptoKey:CryptoKey": "a KMS key: data encrypted with the old key cannot be read with the new one",
    "gcp:kms/keyRing:KeyRing": "a key ring: GCP never deletes key rings, the old one stays behind",
    "gcp:storage/bucket:Bucket": "a bucket: its objects are not carried over",
}


@dataclass(frozen=True)
class Change:
    path: str
    old: Any
    new: Any
    secret: bool = False
    via: str | None = None  # the replaced resource whose new id/ARN makes this input change

    def to_json(self) -> dict:
        if self.secret:
            return {"path": self.path, "secret": True}
        out = {"path": self.path, "old": self.old, "new": self.new}
        if self.via:
            out["via"] = self.via
        return out

    def describe(self) -> str:
        if self.via:
            return f"{self.path}: known after {self.via} is replaced"
        if self.secret:
            return f"{self.path}: (secret changed, value redacted)"
        return f"{self.path}: {_short(self.old)} → {_short(self.new)}"


@dataclass
class ResourceDiff:
    urn: str
    type: str
    name: str
    action: str  # create | delete | update | replace
    changes: list[Change] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why it is replaced, property by property
    uncertain: list[str] = field(default_factory=list)  # changed paths whose replace behaviour is not vendored
    retain_on_delete: bool = False
    custom: bool = True  # a component resource (custom false) has no provider: it is never replaced in place

    @property
    def warning(self) -> str | None:
        if self.action == "replace" and self.type in DISRUPTIVE:
            return f"REPLACES {DISRUPTIVE[self.type]}"
        if self.action == "delete" and self.type in DISRUPTIVE:
            left = " (retain_on_delete: left behind in the cloud)" if self.retain_on_delete else ""
            return f"DELETES {DISRUPTIVE[self.type]}{left}"
        return None

    def to_json(self) -> dict:
        out: dict[str, Any] = {"urn": self.urn, "type": self.type, "name": self.name, "action": self.action}
        if self.changes:
            out["changes"] = [c.to_json() for c in self.changes]
        if self.reasons:
            out["replace_reasons"] = self.reasons
        if self.uncertain:
            out["may_replace"] = self.uncertain
        if self.warning:
            out["warning"] = self.warning
        return out


@dataclass
class PlanDiff:
    old_label: str
    new_label: str
    stack: str
    resources: list[ResourceDiff]
    cost: dict
    policies: dict
    warnings: dict

    def _count(self, action: str) -> int:
        return sum(r.action == action for r in self.resources)

    @property
    def empty(self) -> bool:
        return (not self.resources and not self.cost["delta_monthly_usd"] and not self.policies["appeared"]
                and not self.policies["disappeared"] and not self.warnings["appeared"]
                and not self.warnings["disappeared"])

    def summary_line(self) -> str:
        replaced = self._count("replace")
        delta = self.cost["delta_monthly_usd"]
        sign = "-" if delta < 0 else "+"
        return (f"+{self._count('create')} ~{self._count('update')} -{self._count('delete')}, "
                f"{replaced} replacement{'' if replaced == 1 else 's'}, {sign}${abs(delta):,.0f}/month")

    def to_json(self) -> dict:
        return {
            "stack": self.stack,
            "old": self.old_label,
            "new": self.new_label,
            "summary": self.summary_line(),
            "counts": {a: self._count(a) for a in ("create", "update", "replace", "delete")},
            "resources": [r.to_json() for r in self.resources],
            "warnings": [f"{r.type} {r.name}: {r.warning}" for r in self.resources if r.warning],
            "cost": self.cost,
            "policies": self.policies,
            "plan_warnings": self.warnings,
        }


# ---------------------------------------------------------------------------------------------------------------
# Replace-on-change rules


@cache
def _rules() -> dict:
    return json.loads(DATA.read_text())


def _normalise(path: str) -> str:
    """`instanceTypes[0]` and `instanceTypes` name the same schema property."""
    out, depth = [], 0
    for ch in path:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def _kubernetes_rule(resource_type: str) -> dict | None:
    rules = _rules()["kubernetes"]
    if resource_type in rules["not_covered"]:
        return None
    kind = resource_type.split(":", 1)[1]
    return {"source": rules["source"], "force_new": rules["every_kind"] + rules["kinds"].get(kind, [])}


def rule_for(resource_type: str) -> dict | None:
    """The vendored replace-on-change rule of a resource type, or None where none was transcribed."""
    if resource_type.startswith("kubernetes:"):
        return _kubernetes_rule(resource_type)
    return _rules()["types"].get(resource_type)


def _condition(name: str, old: Any, new: Any, old_inputs: dict) -> bool:
    if name == "cidr_not_expanded":  # terraform-provider-google IsShrinkageIpCidr: only a superset updates in place
        try:
            before, after = ipaddress.ip_network(old), ipaddress.ip_network(new)
        except (TypeError, ValueError):
            return True
        return not (before.version == after.version and before.subnet_of(after))
    if name == "removed":  # terraform-provider-aws eks cluster: encryption cannot be switched off in place
        return bool(old) and not new
    if name == "changed_from_set":
        return bool(old) and old != new
    if name == "previously_assign_ipv6_on_creation":
        return bool(old_inputs.get("assignIpv6AddressOnCreation"))
    raise ValueError(f"unknown replace condition {name!r} in {DATA.name}")


def _value_at(inputs: Any, path: str) -> Any:
    node = inputs
    for part in _normalise(path).split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _cite(rule: dict) -> str:
    """`terraform-provider-aws vpc_subnet.go@00cda125`: enough to find the line; the full path is in the data."""
    repo, path, _, commit = rule["source"].split(" ")
    return f"{repo.split('/')[-1]} {path.rsplit('/', 1)[-1]}@{commit[:8]}"


def classify(resource_type: str, path: str, old_inputs: dict, new_inputs: dict) -> tuple[str, str]:
    """('replace', why) | ('update', '') | ('unknown', why) for one changed input path."""
    rule = rule_for(resource_type)
    if rule is None:
        return "unknown", f"no vendored replace-on-change data for {resource_type}"
    plain = _normalise(path)
    for prop in rule.get("force_new", []):
        if _under(plain, prop) or _under(prop, plain):
            return "replace", f"forces replacement ({_cite(rule)}: {prop})"
    for prop, condition in rule.get("force_new_if", {}).items():
        if _under(plain, prop):
            if _condition(condition, _value_at(old_inputs, prop), _value_at(new_inputs, prop), old_inputs):
                return "replace", f"forces replacement when {condition.replace('_', ' ')} ({_cite(rule)}: {prop})"
            return "update", ""
    for prop in rule.get("unread", []):
        if _under(plain, prop):
            return "unknown", f"{prop} not transcribed from {_cite(rule)}"
    return "update", ""


# ---------------------------------------------------------------------------------------------------------------
# Input changes


def _is_secret(resource_type: str, path: str, old: Any, new: Any) -> bool:
    if REDACTED in (old, new):
        return True
    if resource_type == "kubernetes:core/v1:Secret" and (_under(path, "data") or _under(path, "stringData")):
        return True
    leaf = _normalise(path).rsplit(".", 1)[-1].lower()
    return any(key in leaf for key in SECRET_KEYS)


def _changes(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(old.keys() | new.keys()):
            out += _changes(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += _changes(a, b, f"{path}[{i}]")
        return out
    return [] if old == new else [(path, old, new)]


def _ignored(path: str, ignore_changes: list[str]) -> bool:
    plain = _normalise(path)
    return any(_under(plain, _normalise(p)) for p in ignore_changes)


def _contains(value: Any, needle: str) -> bool:
    if isinstance(value, str):
        return needle in value
    if isinstance(value, dict):
        return any(_contains(v, needle) for v in value.values())
    if isinstance(value, list):
        return any(_contains(v, needle) for v in value)
    return False


def _paths_containing(value: Any, needle: str, path: str = "") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in sorted(value.items()) for p in _paths_containing(v, needle, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths_containing(v, needle, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and needle in value else []


def _judge(diff: ResourceDiff, old_inputs: dict, new_inputs: dict) -> None:
    """Sets the action of a resource present on both sides from its changes."""
    diff.reasons, diff.uncertain = [], []
    for change in diff.changes:
        if not diff.custom:
            continue
        if change.path == "(provider)":
            diff.uncertain.append("(provider): another provider instance; Pulumi replaces when their configs differ")
            continue
        verdict, why = classify(diff.type, change.path, old_inputs, new_inputs)
        plain = _normalise(change.path)
        if verdict == "replace" and not any(r.startswith(plain + " ") for r in diff.reasons):
            diff.reasons.append(f"{plain} {why}" + (f", once {change.via} is replaced" if change.via else ""))
        elif verdict == "unknown" and not any(u.startswith(plain + ":") for u in diff.uncertain):
            diff.uncertain.append(f"{plain}: {why}")
    diff.action = "replace" if diff.reasons else "update"


def _resource_diffs(old: dict, new: dict) -> list[ResourceDiff]:
    before = {r["urn"]: r for r in old.get("resources", [])}
    after = {r["urn"]: r for r in new.get("resources", [])}
    out: dict[str, ResourceDiff] = {}
    for urn in sorted(after.keys() - before.keys()):
        r = after[urn]
        out[urn] = ResourceDiff(urn, r["type"], r["name"], "create")
    for urn in sorted(before.keys() - after.keys()):
        r = before[urn]
        out[urn] = ResourceDiff(urn, r["type"], r["name"], "delete", retain_on_delete=bool(r.get("retain_on_delete")))
    for urn in sorted(before.keys() & after.keys()):
        a, b = before[urn], after[urn]
        ignore = b.get("ignore_changes") or []
        changes = [Change(p, o, n, _is_secret(b["type"], p, o, n))
                   for p, o, n in _changes(a.get("inputs", {}), b.get("inputs", {})) if not _ignored(p, ignore)]
        if a.get("provider") != b.get("provider"):
            changes.append(Change("(provider)", a.get("provider"), b.get("provider")))
        if changes:
            diff = ResourceDiff(urn, b["type"], b["name"], "update", changes, custom=bool(b.get("custom", True)))
            _judge(diff, a.get("inputs", {}), b.get("inputs", {}))
            out[urn] = diff

    # A replaced resource comes back with a new id and ARN: inputs that carry them are unknown until then, and
    # replace their holders where the property forces it. Iterate to a fixed point (VPC → subnet → node group).
    done: set[str] = set()
    while True:
        fresh = [d for d in out.values() if d.action == "replace" and d.urn not in done]
        if not fresh:
            break
        for replaced in fresh:
            done.add(replaced.urn)
            refs = [ref for ref in before[replaced.urn].get("refs", []) if len(ref) >= 8]
            for urn in sorted(before.keys() & after.keys()):
                if urn == replaced.urn:
                    continue
                holder = after[urn]
                paths = sorted({p for ref in refs for p in _paths_containing(holder.get("inputs", {}), ref)})
                paths = [p for p in paths if not _ignored(p, holder.get("ignore_changes") or [])]
                if not paths:
                    continue
                diff = out.get(urn) or ResourceDiff(urn, holder["type"], holder["name"], "update",
                                                    custom=bool(holder.get("custom", True)))
                known = {c.path for c in diff.changes}
                value = {p: _value_at(holder.get("inputs", {}), p) for p in paths}
                diff.changes += [Change(p, value[p], value[p], via=f"{replaced.type} {replaced.name}")
                                 for p in paths if p not in known]
                _judge(diff, before[urn].get("inputs", {}), holder.get("inputs", {}))
                out[urn] = diff
    return sorted(out.values(), key=lambda d: ({"replace": 0, "delete": 1, "create": 2, "update": 3}[d.action], d.urn))


# ---------------------------------------------------------------------------------------------------------------
# Cost, policies, plan warnings


def _money_delta(old: float | None, new: float | None) -> dict:
    return {"old": round(old or 0.0, 2), "new": round(new or 0.0, 2), "delta": round((new or 0.0) - (old or 0.0), 2)}


def _cost(old: dict, new: dict) -> dict:
    oc, nc = old.get("cost", {}), new.get("cost", {})
    regions = sorted(oc.get("regions", {}).keys() | nc.get("regions", {}).keys())
    by_region = {r: _money_delta(oc.get("regions", {}).get(r, {}).get("monthly_usd"),
                                 nc.get("regions", {}).get(r, {}).get("monthly_usd")) for r in regions}
    om, nm = old.get("capacity", {}).get("models", {}), new.get("capacity", {}).get("models", {})
    by_model = {}
    for model in sorted(om.keys() | nm.keys()):
        a, b = om.get(model, {}).get("regions", {}), nm.get(model, {}).get("regions", {})
        by_model[model] = {r: _money_delta(a.get(r, {}).get("monthly_usd"), b.get(r, {}).get("monthly_usd"))
                           for r in sorted(a.keys() | b.keys())}
    total = _money_delta(oc.get("monthly_usd_total"), nc.get("monthly_usd_total"))
    budget = nc.get("budget_monthly_usd")
    return {
        "by_region": {r: v for r, v in by_region.items() if v["delta"] or v["old"] != v["new"]},
        "by_model": {m: {r: v for r, v in regions_.items() if v["delta"]}
                     for m, regions_ in by_model.items() if any(v["delta"] for v in regions_.values())},
        "monthly_usd_old": total["old"],
        "monthly_usd_new": total["new"],
        "delta_monthly_usd": total["delta"],
        "budget_monthly_usd": budget,
        "budget_monthly_usd_old": oc.get("budget_monthly_usd"),
        "within_budget": None if budget is None else total["new"] <= budget,
        "budget_left_usd": None if budget is None else round(budget - total["new"], 2),
    }


def _policies(old: dict, new: dict) -> dict:
    def verdicts(plan: dict) -> dict[tuple, dict]:
        return {(v["policy"], v["urn"], v["level"]): v for v in (plan.get("policies") or {}).get("violations", [])}

    a, b = verdicts(old), verdicts(new)
    return {
        "appeared": [b[k] for k in sorted(b.keys() - a.keys())],
        "disappeared": [a[k] for k in sorted(a.keys() - b.keys())],
        "evaluated": bool(old.get("policies")) and bool(new.get("policies")),
    }


def _plan_warnings(old: dict, new: dict) -> dict:
    a, b = set(old.get("warnings", [])), set(new.get("warnings", []))
    return {"appeared": sorted(b - a), "disappeared": sorted(a - b)}


def diff_plans(old: dict, new: dict, old_label: str = "old", new_label: str = "new") -> PlanDiff:
    return PlanDiff(old_label, new_label, new.get("stack") or old.get("stack") or "?",
                    _resource_diffs(old, new), _cost(old, new), _policies(old, new), _plan_warnings(old, new))


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _signed(value: float) -> str:
    return f"{'-' if value < 0 else '+'}${abs(value):,.0f}"


SYMBOL = {"create": "+", "delete": "-", "update": "~", "replace": "+-"}


def render_json(diff: PlanDiff) -> str:
    return json.dumps(diff.to_json(), indent=2, sort_keys=True) + "\n"


def _budget_line(cost: dict) -> str:
    if cost["budget_monthly_usd"] is None:
        return f"Estimated ${cost['monthly_usd_new']:,.0f}/month after the change (no budget in the plan)."
    verdict = "within" if cost["within_budget"] else "OVER"
    return (f"${cost['monthly_usd_old']:,.0f} → ${cost['monthly_usd_new']:,.0f}/month "
            f"({_signed(cost['delta_monthly_usd'])}) against a budget of ${cost['budget_monthly_usd']:,.0f}: "
            f"{verdict} budget, ${cost['budget_left_usd']:,.0f} left.")


def render_text(diff: PlanDiff) -> str:
    lines = [f"modelfleet diff — stack {diff.stack}: {diff.old_label} → {diff.new_label}", diff.summary_line()]
    if diff.empty:
        return "\n".join(lines + ["No changes."]) + "\n"
    warned = [r for r in diff.resources if r.warning]
    if warned:
        lines.append("")
        lines += [f"WARNING {r.type} {r.name}: {r.warning}" for r in warned]
    if diff.resources:
        lines.append("")
    for r in diff.resources:
        lines.append(f"{SYMBOL[r.action]:>2} {r.type} {r.name}" + (" (replace)" if r.action == "replace" else ""))
        lines += [f"      {c.describe()}" for c in r.changes]
        lines += [f"      replaced: {why}" for why in r.reasons]
        lines += [f"      may replace: {why}" for why in r.uncertain]
    lines += ["", "Cost: " + _budget_line(diff.cost)]
    for region, v in diff.cost["by_region"].items():
        lines.append(f"  {region}: ${v['old']:,.0f} → ${v['new']:,.0f} ({_signed(v['delta'])})")
    for model, regions in diff.cost["by_model"].items():
        for region, v in regions.items():
            lines.append(f"  {model} in {region}: ${v['old']:,.0f} → ${v['new']:,.0f} ({_signed(v['delta'])})")
    lines += _policy_lines(diff, markdown=False)
    return "\n".join(lines) + "\n"


def _policy_lines(diff: PlanDiff, markdown: bool) -> list[str]:
    out = []
    for label, items in (("new", diff.policies["appeared"]), ("resolved", diff.policies["disappeared"])):
        for v in items:
            where = v["urn"].split("::", 2)[-1]
            message = v["message"].replace("|", "\\|").replace("\n", " ") if markdown else v["message"]
            out.append(f"| {label} | {v['level']} | `{v['policy']}` | `{where}` | {message} |" if markdown
                       else f"  {label} {v['level']} {v['policy']} {where}: {message}")
    for label, items in (("new", diff.warnings["appeared"]), ("resolved", diff.warnings["disappeared"])):
        out += [f"| {label} | plan warning | | | {w} |" if markdown else f"  {label} plan warning: {w}" for w in items]
    if not out:
        return []
    if markdown:
        return ["", "### Policy verdicts and warnings that change", "",
                "| | level | policy | resource | message |", "|---|---|---|---|---|", *out]
    return ["", "Policy verdicts and warnings that change:", *out]


def render_markdown(diff: PlanDiff) -> str:
    lines = [f"**`{diff.stack}`: {diff.summary_line()}**", ""]
    if diff.empty:
        return "\n".join(lines + [f"No changes between {diff.old_label} and {diff.new_label}."]) + "\n"
    lines.append(f"Comparing {diff.old_label} → {diff.new_label}. " + _budget_line(diff.cost))
    warned = [r for r in diff.resources if r.warning]
    if warned:
        lines += ["", "> [!WARNING]", "> Stateful or disruptive changes:"]
        lines += [f"> - `{r.type}` **{r.name}**: {r.warning}" for r in warned]
    replaced = [r for r in diff.resources if r.action == "replace"]
    if replaced:
        lines += ["", "### Replacements", "", "| resource | type | why |", "|---|---|---|"]
        lines += [f"| **{r.name}** | `{r.type}` | {'<br>'.join(w.replace('|', chr(92) + '|') for w in r.reasons)} |"
                  for r in replaced]
    if diff.cost["by_region"] or diff.cost["by_model"]:
        lines += ["", "### Cost", "", "| where | before | after | change |", "|---|---:|---:|---:|"]
        lines += [f"| {region} | ${v['old']:,.0f} | ${v['new']:,.0f} | {_signed(v['delta'])} |"
                  for region, v in diff.cost["by_region"].items()]
        lines += [f"| {model} in {region} | ${v['old']:,.0f} | ${v['new']:,.0f} | {_signed(v['delta'])} |"
                  for model, regions in diff.cost["by_model"].items() for region, v in regions.items()]
    lines += _policy_lines(diff, markdown=True)
    if diff.resources:
        lines += ["", f"<details><summary>{len(diff.resources)} resource change(s)</summary>", "", "```diff"]
        for r in diff.resources:
            mark = {"create": "+", "delete": "-", "update": "!", "replace": "!"}[r.action]
            lines.append(f"{mark} {r.action} {r.type} {r.name}")
            lines += [f"#     {c.describe()}" for c in r.changes]
            lines += [f"#     may replace: {why}" for why in r.uncertain]
        lines += ["```", "", "</details>"]
    return "\n".join(lines) + "\n"
