"""Triton can load its models with the grants modelfleet gives it, and read nothing else.

The expectation is independent of `modelfleet.access`: the calls Triton's storage clients make (read from
triton-inference-server/core src/filesystem/implementations/s3.h and gcs.h), mapped to the IAM action or
permission each needs and the request context AWS and GCP evaluate them with, then judged by a small evaluator of
the policy language that the declared grants use. An old grant that denied HeadBucket fails here.
"""

from __future__ import annotations

import fnmatch
import json
import re

import pytest

from modelfleet import access
from modelfleet.plan import BucketGrant, IdentityPlan

# What Triton does to load `s3://bucket/fraud-detector` (explicit model control, repository `s3://bucket`):
# IsDirectory(repo) -> HeadBucket; FileExists(model dir) -> HeadBucket + ListObjectsV2(prefix "fraud-detector/");
# LocalizePath -> ListObjectsV2 on each folder, HeadObject + GetObject on each file.
S3_CALLS = [
    ("HeadBucket", None),
    ("ListObjectsV2", "fraud-detector/"),
    ("ListObjectsV2", "fraud-detector/1/"),
    ("HeadObject", "fraud-detector/config.pbtxt"),
    ("GetObject", "fraud-detector/config.pbtxt"),
    ("GetObject", "fraud-detector/1/model.py"),
]
# AWS's authorisation of each S3 API call (S3 User Guide, "Actions, resources and condition keys for S3"):
# HeadBucket and ListObjectsV2 are s3:ListBucket on the bucket (s3:prefix only when a prefix is sent);
# HeadObject and GetObject are s3:GetObject on the object.
S3_AUTH = {"HeadBucket": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket", "HeadObject": "s3:GetObject",
           "GetObject": "s3:GetObject"}

GCS_CALLS = [
    ("GetBucketMetadata", None),
    ("ListObjects", "fraud-detector/"),
    ("GetObjectMetadata", "fraud-detector/config.pbtxt"),
    ("ReadObject", "fraud-detector/1/model.py"),
]
GCS_AUTH = {"GetBucketMetadata": "storage.buckets.get", "ListObjects": "storage.objects.list",
            "GetObjectMetadata": "storage.objects.get", "ReadObject": "storage.objects.get"}
# Permissions of the predefined role, from Google's IAM roles reference (not from modelfleet).
PREDEFINED = {"roles/storage.objectViewer": {"storage.objects.get", "storage.objects.list"}}

BUCKET = "models-bucket"
GRANTS = (BucketGrant("fraud-detector", BUCKET, "fraud-detector"), BucketGrant("sentiment", BUCKET, "sentiment"))
IDENTITY = IdentityPlan("ns", "triton", GRANTS, "acct", "", "", bucket_metadata_role_id="custom")


def _s3_request(call: str, arg: str | None) -> tuple[str, str, dict]:
    action = S3_AUTH[call]
    if action == "s3:ListBucket":
        return action, f"arn:aws:s3:::{BUCKET}", ({"s3:prefix": arg} if arg is not None else {})
    return action, f"arn:aws:s3:::{BUCKET}/{arg}", {}


def _condition_holds(condition: dict, context: dict) -> bool:
    for operator, keys in condition.items():
        for key, patterns in keys.items():
            patterns = patterns if isinstance(patterns, list) else [patterns]
            if key not in context:
                if operator.endswith("IfExists"):
                    continue
                return False
            if operator.removesuffix("IfExists") != "StringLike":
                raise AssertionError(f"the evaluator does not know {operator}")
            if not any(fnmatch.fnmatchcase(context[key], p) for p in patterns):
                return False
    return True


def s3_allows(policy: dict, action: str, resource: str, context: dict) -> bool:
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow", "no Deny statements in Triton's policy"
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if (action in actions and any(fnmatch.fnmatchcase(resource, r) for r in resources)
                and _condition_holds(st.get("Condition", {}), context)):
            return True
    return False


def test_triton_s3_client_loads_a_model_with_the_grant():
    policy = access.s3_read_policy(IDENTITY)
    for call, arg in S3_CALLS:
        assert s3_allows(policy, *_s3_request(call, arg)), f"Triton's {call}({arg}) is denied"


@pytest.mark.parametrize("call,arg", [
    ("GetObject", "other-team/secret.bin"),
    ("HeadObject", "fraud-detector-old/config.pbtxt"),
    ("ListObjectsV2", "other-team/"),
])
def test_s3_grant_reads_and_lists_nothing_outside_the_model_prefixes(call, arg):
    assert not s3_allows(access.s3_read_policy(IDENTITY), *_s3_request(call, arg))


def test_s3_grant_reads_no_other_bucket():
    policy = access.s3_read_policy(IDENTITY)
    assert not s3_allows(policy, "s3:GetObject", "arn:aws:s3:::another-bucket/fraud-detector/1/model.py", {})
    assert not s3_allows(policy, "s3:ListBucket", "arn:aws:s3:::another-bucket", {})
    assert not s3_allows(policy, "s3:PutObject", f"arn:aws:s3:::{BUCKET}/fraud-detector/config.pbtxt", {})


def test_the_old_prefix_conditioned_listing_denied_head_bucket():
    """The grant before this fix: ListBucket only under StringLike s3:prefix, which HeadBucket never carries."""
    old = json.loads(json.dumps(access.s3_read_policy(IDENTITY)).replace("StringLikeIfExists", "StringLike"))
    assert not s3_allows(old, *_s3_request("HeadBucket", None))


def _cel(expression: str, resource_name: str, list_prefix: str) -> bool:
    """The three CEL forms the grants use: `==`, `.startsWith()` and `||`, on resource.name and the list prefix."""
    python = (expression.replace('api.getAttribute("storage.googleapis.com/objectListPrefix", "")', "list_prefix")
              .replace("resource.name", "resource_name").replace(".startsWith(", ".startswith(").replace("||", " or "))
    assert re.fullmatch(r'[\w\s."/=()\-]*', python), python
    return bool(eval(python, {}, {"resource_name": resource_name, "list_prefix": list_prefix}))  # noqa: S307


def _gcs_bindings() -> list[tuple[set[str], str]]:
    """(permissions, condition) for each binding modelfleet declares on the bucket for Triton."""
    bindings = []
    for grant in GRANTS:
        bindings.append((set(access.GCS_BUCKET_METADATA_PERMISSIONS), access.gcs_bucket_metadata_condition(grant)[1]))
        bindings.append((PREDEFINED[access.GCS_READ_ROLE], access.gcs_read_condition(grant)[1]))
    return bindings


def gcs_allows(call: str, arg: str | None, bindings) -> bool:
    permission = GCS_AUTH[call]
    if call == "GetBucketMetadata":
        name, prefix = f"projects/_/buckets/{BUCKET}", ""
    elif call == "ListObjects":
        name, prefix = f"projects/_/buckets/{BUCKET}", arg
    else:
        name, prefix = f"projects/_/buckets/{BUCKET}/objects/{arg}", ""
    return any(permission in perms and _cel(cond, name, prefix) for perms, cond in bindings)


def test_triton_gcs_client_loads_a_model_with_the_grants():
    bindings = _gcs_bindings()
    for call, arg in GCS_CALLS:
        assert gcs_allows(call, arg, bindings), f"Triton's {call}({arg}) is denied"


def test_without_the_bucket_metadata_role_gcs_loading_fails():
    """objectViewer alone (the grant before this fix) has no storage.buckets.get: GetBucketMetadata is denied."""
    only_viewer = [b for b in _gcs_bindings() if b[0] == PREDEFINED[access.GCS_READ_ROLE]]
    assert not gcs_allows("GetBucketMetadata", None, only_viewer)


@pytest.mark.parametrize("call,arg", [("ReadObject", "other-team/secret.bin"), ("ListObjects", "other-team/"),
                                      ("GetObjectMetadata", "fraud-detector-old/config.pbtxt")])
def test_gcs_grants_read_nothing_outside_the_model_prefixes(call, arg):
    assert not gcs_allows(call, arg, _gcs_bindings())


def test_statement_ids_are_what_iam_accepts_for_any_model_name():
    """IAM: a Sid holds only ASCII letters and digits, unique within the policy. Model names may hold '_' and '.',
    and `a-b` / `ab` / `a_b` would spell the same words."""
    names = ("text_embed.v2", "a-b", "ab", "a_b", "_lead")
    identity = IdentityPlan("ns", "triton", tuple(BucketGrant(n, BUCKET, n) for n in names), "acct", "", "",
                            bucket_metadata_role_id="custom")
    sids = [st["Sid"] for st in access.s3_read_policy(identity)["Statement"]]
    assert len(sids) == 2 * len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids), sids
    assert len(set(sids)) == len(sids), sids
