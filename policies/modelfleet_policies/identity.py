"""Identity: pod identities (IRSA, GKE workload identity) reach only their model's prefix; nothing gets `*` on `*`."""

from __future__ import annotations

import re

from pulumi_policy import (EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy)

from ._util import as_dict, get, items, json_value, short

_AWS_DOCUMENT_PROPS = {
    "aws:iam/rolePolicy:RolePolicy": ["policy"],
    "aws:iam/policy:Policy": ["policy"],
    "aws:iam/userPolicy:UserPolicy": ["policy"],
    "aws:iam/groupPolicy:GroupPolicy": ["policy"],
}


def _documents(t: str, p) -> list[tuple[str, dict]]:
    """(where, parsed policy document) for every IAM policy document a resource carries."""
    docs = []
    for prop in _AWS_DOCUMENT_PROPS.get(t, []):
        docs.append((prop, json_value(get(p, prop))))
    if t == "aws:iam/role:Role":
        for i, inline in enumerate(items(get(p, "inlinePolicies"))):
            docs.append((f"inlinePolicies[{i}] {get(inline, 'name', default='')}".strip(),
                         json_value(get(inline, "policy"))))
    return [(where, doc) for where, doc in docs if hasattr(doc, "get")]


def _statements(doc) -> list:
    return items(get(doc, "Statement"))


def _strs(value) -> list[str]:
    return [str(v) for v in items(value)]


# ---------------------------------------------------------------- pod identities scoped to the model prefix

_S3_OBJECT = re.compile(r"^arn:aws[a-z-]*:s3:::([^/*]+)/(.+)$")
_S3_BUCKET = re.compile(r"^arn:aws[a-z-]*:s3:::([^/*]+)$")
_BUCKET_ONLY_ACTIONS = {"s3:getbucketlocation"}


def _condition_keys(statement) -> set[str]:
    return {k.lower() for op in as_dict(get(statement, "Condition")).values() for k in as_dict(op)}


def _scoped(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p, who = args.resource_type, args.props, short(args.urn)
    fix = ("Fix: grant the model's own prefix only, e.g. Resource 'arn:aws:s3:::<bucket>/<model>/*' for Get/List "
           "object actions, and the bucket ARN with Condition StringLike {'s3:prefix': ['<model>/*']} for "
           "s3:ListBucket.")
    for where, doc in _documents(t, p):
        for i, st in enumerate(_statements(doc)):
            if get(st, "Effect") != "Allow":
                continue
            actions = [a.lower() for a in _strs(get(st, "Action"))]
            if not any(a.startswith("s3:") for a in actions):
                continue
            for res in _strs(get(st, "Resource")):
                obj, bucket = _S3_OBJECT.match(res), _S3_BUCKET.match(res)
                if res == "*" or res.startswith("arn:aws:s3:::*"):
                    report(f"{who}: {where} Statement[{i}] grants {', '.join(actions)} on {res!r}, every bucket in "
                           f"the account. {fix}")
                elif obj and obj.group(2).lstrip("/") in ("*", ""):
                    report(f"{who}: {where} Statement[{i}] grants {', '.join(actions)} on the whole bucket "
                           f"{obj.group(1)!r} ({res}), not one model's prefix. {fix}")
                elif bucket and not set(actions) <= _BUCKET_ONLY_ACTIONS and "s3:prefix" not in _condition_keys(st):
                    report(f"{who}: {where} Statement[{i}] grants {', '.join(actions)} on bucket {res!r} without an "
                           f"s3:prefix condition, so it lists every model's objects. {fix}")
    if t == "aws:iam/role:Role":
        trust = json_value(get(p, "assumeRolePolicy"))
        for i, st in enumerate(_statements(trust) if hasattr(trust, "get") else []):
            actions = _strs(get(st, "Action"))
            if "sts:AssumeRoleWithWebIdentity" not in actions or get(st, "Effect") != "Allow":
                continue
            conditions = as_dict(get(st, "Condition"))
            subs = [str(v) for op, body in conditions.items() for k, vals in as_dict(body).items()
                    if k.endswith(":sub") for v in (_strs(vals))]
            exact = [str(v) for k, vals in as_dict(conditions.get("StringEquals")).items() if k.endswith(":sub")
                     for v in _strs(vals)]
            if not exact or any("*" in s or "?" in s for s in subs):
                report(f"{who}: assumeRolePolicy Statement[{i}] lets "
                       f"{'any service account' if not subs else ', '.join(subs)} assume this IRSA role. Fix: "
                       "Condition StringEquals {'<oidc-issuer>:sub': 'system:serviceaccount:<namespace>:<model>', "
                       "'<oidc-issuer>:aud': 'sts.amazonaws.com'} naming the model's own service account.")
    if t == "gcp:storage/bucketIAMMember:BucketIAMMember":
        role, member = str(get(p, "role", default="")), str(get(p, "member", default=""))
        expression = str(get(p, "condition", "expression", default=""))
        if role.startswith("roles/storage.") and member.startswith("serviceAccount:") and \
                "resource.name.startsWith(" not in expression:
            report(f"{who}: {member} gets {role} on the whole bucket. Fix: add condition={{'title': 'model prefix', "
                   "'expression': 'resource.name.startsWith(\"projects/_/buckets/<bucket>/objects/<model>/\")'}} "
                   "(uniform bucket-level access must be on).")
    if t in ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding"):
        role = str(get(p, "role", default=""))
        members = _strs(get(p, "members")) + ([str(get(p, "member"))] if get(p, "member") else [])
        if role.startswith("roles/storage.") and any(m.startswith("serviceAccount:") for m in members):
            report(f"{who}: {role} is granted project-wide to {', '.join(members)}, i.e. every bucket of the "
                   "project. Fix: grant it on the model repository bucket with a gcp.storage.BucketIAMMember "
                   "conditioned on the model's prefix.")
    if t in ("gcp:serviceaccount/iAMMember:IAMMember", "gcp:serviceaccount/iAMBinding:IAMBinding"):
        role = str(get(p, "role", default=""))
        members = _strs(get(p, "members")) + ([str(get(p, "member"))] if get(p, "member") else [])
        if role == "roles/iam.workloadIdentityUser":
            loose = [m for m in members if ".svc.id.goog[" in m and ("*" in m or m.endswith("/]"))]
            if loose:
                report(f"{who}: workload identity is granted to {', '.join(loose)}, not one Kubernetes service "
                       "account. Fix: member 'serviceAccount:<project>.svc.id.goog[<namespace>/<model>]'.")


pod_identity_scoped = ResourceValidationPolicy(
    name="pod-identity-scoped-to-model",
    description="IRSA roles and GKE workload identities trust one service account and reach only their model's "
                "storage prefix.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_scoped,
)

# ---------------------------------------------------------------- no * on *

# `*`, `*:*` and `<service>:*` (any case: IAM action names are case-insensitive). `s3:Get*` is narrower and
# left to review.
_SERVICE_WILDCARD = re.compile(r"^(\*|(\*|[a-z0-9-]+):\*)$", re.IGNORECASE)
_ADMIN_POLICIES = ("arn:aws:iam::aws:policy/AdministratorAccess", "arn:aws:iam::aws:policy/PowerUserAccess")
_PRIMITIVE_ROLES = ("roles/owner", "roles/editor")


def _no_wildcard(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p, who = args.resource_type, args.props, short(args.urn)
    for where, doc in _documents(t, p):
        for i, st in enumerate(_statements(doc)):
            if get(st, "Effect") != "Allow":
                continue
            actions, resources = _strs(get(st, "Action")), _strs(get(st, "Resource"))
            if "*" not in resources:
                continue
            if get(st, "NotAction") is not None:
                report(f"{who}: {where} Statement[{i}] allows every action except {', '.join(_strs(get(st, 'NotAction')))}"
                       " on every resource (NotAction with Resource '*'). Fix: an Allow with the listed Action the "
                       "workload calls, on the ARNs it touches.")
            wild = [a for a in actions if _SERVICE_WILDCARD.match(a)]
            if wild:
                what = "every action" if any(a in ("*", "*:*") for a in wild) else \
                    f"every action of {', '.join(sorted({a.split(':')[0] for a in wild}))}"
                report(f"{who}: {where} Statement[{i}] allows {what} on every resource (Action "
                       f"{', '.join(repr(a) for a in wild)}, Resource '*'). Fix: list the actions the workload calls "
                       "and the ARNs it touches.")
    if t in ("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "aws:iam/userPolicyAttachment:UserPolicyAttachment",
             "aws:iam/groupPolicyAttachment:GroupPolicyAttachment", "aws:iam/policyAttachment:PolicyAttachment"):
        arn = str(get(p, "policyArn", default=""))
        if arn in _ADMIN_POLICIES:
            report(f"{who}: attaches {arn}, which allows '*' on '*'. Fix: attach a policy scoped to what the "
                   "principal needs.")
    if t in ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding"):
        role = str(get(p, "role", default=""))
        if role in _PRIMITIVE_ROLES:
            report(f"{who}: grants the primitive role {role} (every permission on every resource of the project). "
                   "Fix: grant predefined roles scoped to the task.")


no_wildcard_iam = ResourceValidationPolicy(
    name="no-wildcard-iam",
    description="No IAM grant allows every action, or every action of a service, on every resource (AWS '*' or "
                "'<service>:*' or NotAction on '*', admin managed policies, GCP owner/editor).",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_no_wildcard,
)

POLICIES = [pod_identity_scoped, no_wildcard_iam]
