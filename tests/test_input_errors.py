"""Input that must get a clear error (issue 9 §3) where a one-line corpus case cannot say it: generated files,
the engine's config path, the policy config, `render --out`, and names checked against each cloud's limits.
Every refusal is exit 2 with the file and the field, never a traceback."""

from __future__ import annotations

import json
import re
import shutil
import typing
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfleet.cli import app
from modelfleet.loader import SpecError, load_fleet
from modelfleet.spec import ModelSpec, StackSpec

PROJECT = Path(__file__).resolve().parent.parent


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _refused(result, *expected: str) -> str:
    """The report of a command that must exit 2 with `expected` in its words and no traceback."""
    assert result.exit_code == 2, f"exit {result.exit_code}:\n{result.output}"
    assert "Traceback" not in result.output and not (result.exception and not isinstance(result.exception, SystemExit))
    for text in expected:
        assert text in result.stderr, result.stderr
    return result.stderr


# ---------------------------------------------------------------- files a corpus line cannot hold


def test_500_deep_nesting_is_refused_not_a_recursion_error(project_copy: Path):
    path = project_copy / "models" / "sentiment.yaml"
    path.write_text("name: sentiment\nowner: " + "[" * 500 + "]" * 500 + "\n")
    _refused(_cli("validate", "--root", str(project_copy)),
             "models/sentiment.yaml:2: invalid YAML: nested deeper than 32 levels")


def test_an_alias_bomb_is_refused_before_it_expands(project_copy: Path):
    lines = ["name: sentiment", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]  # 9**10 strings expanded
    (project_copy / "models" / "sentiment.yaml").write_text("\n".join(lines) + "\n")
    _refused(_cli("validate", "--root", str(project_copy)), "models/sentiment.yaml:3: invalid YAML: aliases")


def test_an_owner_over_its_annotation_limit_is_refused(project_copy: Path):
    path = project_copy / "models" / "sentiment.yaml"
    path.write_text(path.read_text().replace("owner: support-ml@example.com", "owner: " + "x" * 300_000))
    report = _refused(_cli("validate", "--root", str(project_copy)),
                      "models/sentiment.yaml:3 owner: must be at most 254 characters, got 'xxxx")
    assert len(report) < 400  # the value is not echoed in full


def test_the_longest_owner_fits_kubernetes_annotation_limit(project_copy: Path):
    """254 characters (an e-mail address's limit) must render: every annotation of the object stays within
    Kubernetes' 256 KiB total (apimachinery ValidateAnnotationsSize: keys plus values)."""
    from modelfleet.render import render

    owner = "a" * 242 + "@example.com"
    path = project_copy / "models" / "sentiment.yaml"
    path.write_text(path.read_text().replace("owner: support-ml@example.com", f"owner: {owner}"))
    from modelfleet.plan import build_plan

    written = render(build_plan(load_fleet(project_copy, "dev")), project_copy / "out")
    deployments = [p for p in written if "-deployment-triton-sentiment" in p.name]
    assert len(deployments) == 1
    obj = yaml.safe_load(deployments[0].read_text())
    annotations = obj["metadata"]["annotations"]
    assert owner in annotations.values()
    assert sum(len(k) + len(v) for k, v in annotations.items()) <= 256 * 1024


# ---------------------------------------------------------------- the engine's config path


def _set_key(project: Path, stack: str, key: str, raw_yaml: str) -> None:
    """Write the stack file with `modelfleet:<key>` spelled exactly `raw_yaml` and the other keys as they were."""
    path = project / "stacks" / f"Pulumi.{stack}.yaml"
    config = yaml.safe_load(path.read_text())["config"]
    config.pop(f"modelfleet:{key}", None)
    body = yaml.safe_dump({"config": config}, sort_keys=False)
    path.write_text(body + f"  modelfleet:{key}: {raw_yaml}\n")


def _engine_config(project: Path, stack: str) -> dict[str, str]:
    """What the Pulumi engine passes a program for this stack file: every value as a string; text as it is,
    everything else as JSON (pulumi/sdk/go/common/resource/config: object values are JSON-encoded)."""
    config = yaml.safe_load((project / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


# Each typed stack key in the forms a person writes it, quoted and not. (stack, key, YAML as written).
FORMS = [
    ("dev", "environment", "dev"), ("dev", "environment", "'dev'"),
    ("dev", "regions", "[aws:us-east-1]"), ("dev", "regions", "'[aws:us-east-1]'"),
    ("dev", "regions", "[{region: aws:us-east-1, cidr: 10.40.0.0/16}]"),
    ("dev", "models", "[fraud-detector, sentiment]"), ("dev", "models", "'[fraud-detector, sentiment]'"),
    ("dev", "budget_monthly_usd", "6000"), ("dev", "budget_monthly_usd", "'6000'"),
    ("dev", "budget_monthly_usd", "6000.5"), ("dev", "budget_monthly_usd", "6.0e+3"),
    ("dev", "dns_domain", "dev.inference.example.com"), ("dev", "dns_domain", "'dev.inference.example.com'"),
    ("dev", "required_tags", "{team: ml-platform, cost-center: cc-4410}"),
    ("dev", "required_tags", "'{team: ml-platform}'"), ("dev", "required_tags", "{team: 7}"),
    ("dev", "nat_gateways", "single"), ("dev", "nat_gateways", "'per-zone'"),
    ("dev", "cluster_endpoint", "{public_access_cidrs: [198.51.100.0/24]}"),
    ("dev", "cluster_endpoint", "'{public_access_cidrs: []}'"),
    ("staging", "gcp_project", "modelfleet-staging"), ("staging", "gcp_project", "'modelfleet-staging'"),
    ("dev", "kubernetes_version", "'1.33'"), ("dev", "kubernetes_version", "1.33"),
    ("dev", "kubernetes_version", "'1.35'"), ("dev", "kubernetes_version", "1.35"),
    ("dev", "kubernetes_version", "'1.30'"),
    ("dev", "capacity_headroom", "1.5"), ("dev", "capacity_headroom", "'1.5'"), ("dev", "capacity_headroom", "2"),
    ("dev", "gateway", "{load_balancer: external}"), ("dev", "gateway", "'{load_balancer: internal, http_port: 443}'"),
    ("dev", "gateway", "{jwt: {issuer: 'https://auth.example.com/', audiences: [inference]}}"),
    ("dev", "gateway", "{tls: false}"),
    ("dev", "routing", "{enabled: false}"), ("dev", "routing", "'{enabled: false}'"),
    ("staging", "routing", "{ttl_s: 30, health_check: {request_interval_s: 10, failure_threshold: 2}}"),
    ("staging", "routing", "{existing_zone: example.com}"), ("staging", "routing", "{provider_region: mars-1}"),
    ("stg-use1", "role", "regional"), ("stg-use1", "role", "'regional'"), ("staging", "role", "regional"),
    ("stg-use1", "role_region", "aws:us-east-1"), ("stg-use1", "role_region", "'gcp:europe-west4'"),
    ("stg-global", "region_stacks", "{aws:us-east-1: o/modelfleet/stg-use1, gcp:europe-west4: o/modelfleet/stg-euw4}"),
    ("stg-global", "region_stacks", "'{aws:us-east-1: o/p/stg-use1}'"),
]


def test_every_typed_stack_key_has_its_forms():
    assert {key for _, key, _ in FORMS} == set(StackSpec.model_fields)


@pytest.mark.parametrize("stack, key, raw", FORMS, ids=[f"{k}={r}" for _, k, r in FORMS])
def test_the_engine_reads_what_validate_accepted(project_copy: Path, stack: str, key: str, raw: str):
    """validate reads the stack file; `pulumi up` (and plan/check, through modelfleet.offline) read the engine's
    strings. Whatever validate accepts, the program must accept as the same spec; whatever it refuses is exit 2."""
    import pulumi

    from modelfleet.offline import evaluate

    _set_key(project_copy, stack, key, raw)
    try:
        from_file = load_fleet(project_copy, stack)
    except SpecError as exc:
        assert all(p.file == f"stacks/Pulumi.{stack}.yaml" for p in exc.problems), exc
        _refused(_cli("plan", "--stack", stack, "--root", str(project_copy)), f"modelfleet:{key}")
        return
    assert load_fleet(project_copy, stack, _engine_config(project_copy, stack)).stack == from_file.stack
    try:
        evaluation = evaluate(project_copy, stack)
    except pulumi.RunError as exc:
        pytest.fail(f"validate accepted {key}: {raw}, the program refused it:\n{exc}")
    # A global stack (the scale path) declares the DNS records only; every other stack its clusters.
    declared = ("aws:route53/record:Record",) if from_file.stack.role == "global" else (
        "aws:eks/cluster:Cluster", "gcp:container/cluster:Cluster")
    assert any(r.type in declared for r in evaluation.resources)


def test_quoted_kubernetes_version_reaches_the_clusters(project_copy: Path):
    """The form of issue 9: '1.33' in the file was accepted by validate and refused by the program."""
    from modelfleet.offline import evaluate

    _set_key(project_copy, "dev", "kubernetes_version", "'1.35'")
    clusters = [r for r in evaluate(project_copy, "dev").resources if r.type == "aws:eks/cluster:Cluster"]
    assert len(clusters) == 1 and clusters[0].inputs["version"] == "1.35"


def test_the_program_refuses_a_stack_name_that_makes_invalid_cloud_names(project_copy: Path):
    """Under `pulumi up` the stack's name comes from the engine (pulumi.get_stack()), not from a file name."""
    import pulumi

    from modelfleet.offline import evaluate

    shutil.copy(project_copy / "stacks" / "Pulumi.staging.yaml", project_copy / "stacks" / "Pulumi.Staging_EU.yaml")
    with pytest.raises(pulumi.RunError, match="stack name 'Staging_EU' must be lowercase letters"):
        evaluate(project_copy, "Staging_EU")
    _refused(_cli("validate", "--root", str(project_copy), str(project_copy / "stacks" / "Pulumi.Staging_EU.yaml")),
             "stacks/Pulumi.Staging_EU.yaml: stack name 'Staging_EU'")


# ---------------------------------------------------------------- messages in words


def _patterns(node) -> set[str]:
    """Every `pattern` in a JSON schema, nested definitions, dict keys (propertyNames) and unions included."""
    if isinstance(node, dict):
        own = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
        return own.union(*(_patterns(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_patterns(v) for v in node))
    return set()


def test_every_pattern_of_the_spec_is_said_in_words():
    from modelfleet.loader import _PATTERN_MEANING

    patterns = _patterns(ModelSpec.model_json_schema()) | _patterns(StackSpec.model_json_schema())
    assert len(patterns) >= 8  # names, tensors, tags, URIs, DNS, project, Kubernetes version
    assert patterns <= set(_PATTERN_MEANING), patterns - set(_PATTERN_MEANING)
    assert not any(re.search(r"[\\^$\[\]{}]", words) for words in _PATTERN_MEANING.values())


# ---------------------------------------------------------------- tags

def test_tags_modelfleet_sets_itself_cannot_be_overridden(project_copy: Path):
    """Every key the plan adds to the stack's required_tags is modelfleet's own; setting one is refused."""
    from modelfleet.plan import build_plan

    fleet = load_fleet(project_copy, "dev")
    own = sorted(dict(build_plan(fleet).tags).keys() - fleet.stack.required_tags.keys())
    assert own == ["managed-by", "stack"]
    for key in own:
        path = project_copy / "stacks" / "Pulumi.dev.yaml"
        original = path.read_text()
        path.write_text(original.replace("    team: ml-platform\n", f"    team: ml-platform\n    {key}: mine\n"))
        _refused(_cli("validate", "--stack", "dev", "--root", str(project_copy)),
                 f"modelfleet:required_tags: modelfleet sets {key} itself")
        path.write_text(original)


def test_validate_and_the_required_tags_policy_agree_on_an_empty_value(project_copy: Path):
    from modelfleet.review import load_pack

    governance = __import__("modelfleet_policies.governance", fromlist=["_missing"]) if load_pack() else None
    assert governance._missing({"team": "", "cost-center": "cc"}, ["team", "cost-center"]) == ["team"]
    path = project_copy / "stacks" / "Pulumi.dev.yaml"
    path.write_text(path.read_text().replace("team: ml-platform", "team: ''"))
    _refused(_cli("validate", "--stack", "dev", "--root", str(project_copy)), "modelfleet:required_tags.team")


# ---------------------------------------------------------------- render --out


def test_render_onto_a_file_is_refused(project_copy: Path):
    target = project_copy / "out.txt"
    target.write_text("keep me\n")
    _refused(_cli("render", "--stack", "dev", "--root", str(project_copy), "--out", str(target)),
             f"render --out: {target} is a file, not a folder; give --out a folder")
    assert target.read_text() == "keep me\n"
    inside = project_copy / "out.txt" / "sub"
    _refused(_cli("render", "--stack", "dev", "--root", str(project_copy), "--out", str(inside)), "is a file")


# ---------------------------------------------------------------- policy configs


@pytest.fixture
def policy_config(tmp_path: Path, monkeypatch):
    """The policy config `check --stack dev` reads, redirected to a file the test writes."""
    import modelfleet.review as review_module

    path = tmp_path / "dev.json"
    monkeypatch.setattr(review_module, "config_path", lambda stack, pack_dir=None: path)
    return path


@pytest.mark.parametrize("content, expected", [
    (b'["required-tags"]', "expected a JSON object mapping policy names"),
    (b'{"gpu-count-under-cap": {"max_gpus_per_pool": "64"}}',
     'gpu-count-under-cap.max_gpus_per_pool: must be a whole number, got a string "64"'),
    (b'{"gpu-count-under-cap": {"max_gpus_per_pool": true}}',
     "gpu-count-under-cap.max_gpus_per_pool: must be a whole number, got a boolean true"),
    (b'{"gpu-count-under-cap": {"max_gpus_per_pool": 0}}', "gpu-count-under-cap.max_gpus_per_pool: 0 is less than"),
    (b'{"required-tags": {"required_tags": ["team", 7]}}', "required-tags.required_tags[1]: must be a string"),
    (b'{"cost-within-budget": {"budget_monthly_usd": "lots"}}', "cost-within-budget.budget_monthly_usd: must be a number"),
    (b'{"required-tags": "mandatory", "required-tags": "advisory"}', "key 'required-tags' appears twice"),
    (b'{"all": "advisory"} \xe9', "line 1: not UTF-8 text (byte 0xe9 at column 21)"),
])
def test_a_bad_policy_config_is_refused_by_check(project_copy: Path, policy_config: Path, content: bytes,
                                                 expected: str):
    policy_config.write_bytes(content)
    _refused(_cli("check", "--stack", "dev", "--root", str(project_copy)), "policies/config/dev.json: ", expected)


def test_the_committed_policy_configs_fit_their_schemas():
    from modelfleet.review import _settings, load_pack, read_policy_config

    policies = load_pack()
    configs = sorted((PROJECT / "policies" / "config").glob("*.json"))
    assert len(configs) == 6  # dev, staging, prod and the split staging example (stg-use1, stg-euw4, stg-global)
    for path in configs:
        _settings(policies, read_policy_config(path), str(path))


# ---------------------------------------------------------------- names the stack's name makes


def _check_name(kind: str, name: str) -> str | None:
    """Each cloud's own rule for a name, written from its documentation (not from modelfleet's code)."""
    rules = {
        # cloud.google.com/kubernetes-engine/docs/reference/rest/v1/projects.locations.clusters (name)
        "gke-cluster": (r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?", "GKE cluster name"),
        # docs.aws.amazon.com/eks/latest/APIReference/API_CreateCluster.html (name: 1-100, [0-9A-Za-z][A-Za-z0-9-_]*)
        "eks-cluster": (r"[0-9A-Za-z][A-Za-z0-9\-_]{0,99}", "EKS cluster name"),
        # cloud.google.com/iam/docs/service-accounts-create (account id: 6-30, lowercase, digits, dashes)
        "gcp-service-account": (r"[a-z]([-a-z0-9]{4,28}[a-z0-9])", "GCP service account id"),
        # cloud.google.com/compute/docs/labeling-resources (values: at most 63 lowercase, digits, _ and -)
        "gcp-label-value": (r"[-_a-z0-9]{0,63}", "GCP label value"),
        # docs.aws.amazon.com/IAM/latest/APIReference/API_CreateRole.html: name <= 64; Pulumi's name_prefix
        # appends 26 characters, so a prefix is at most 38
        "iam-role-prefix": (r"[\w+=,.@-]{1,38}", "IAM role name prefix"),
        "iam-role": (r"[\w+=,.@-]{1,64}", "IAM role name"),
        # cloud.google.com/compute/docs/naming-resources (RFC 1035: at most 63, lowercase, digits, dashes)
        "gcp-resource": (r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", "GCP resource name"),
    }
    pattern, what = rules[kind]
    return None if re.fullmatch(pattern, name) else f"{what} {name!r}"


# Pulumi names a resource without an explicit name `<logical name>-<7 random hex characters>`.
AUTONAME_SUFFIX = "-0a1b2c3"
GCP_AUTONAMED = {"gcp:compute/network:Network", "gcp:compute/subnetwork:Subnetwork", "gcp:compute/router:Router",
                 "gcp:compute/routerNat:RouterNat", "gcp:compute/firewall:Firewall", "gcp:kms/keyRing:KeyRing",
                 "gcp:kms/cryptoKey:CryptoKey", "gcp:container/nodePool:NodePool"}


def test_every_name_derived_from_the_longest_stack_name_fits_its_cloud(project_copy: Path):
    """The longest stack name validate allows with the longest GCP and AWS region names: every cloud name the
    program declares is valid for its cloud."""
    from modelfleet.offline import evaluate

    long_gcp, long_aws = "asia-southeast1", "ap-northeast-1"
    stack = "s" * (40 - len(f"-gcp-{long_gcp}"))
    text = (project_copy / "stacks" / "Pulumi.staging.yaml").read_text()
    text = text.replace("aws:us-east-1", f"aws:{long_aws}").replace("gcp:europe-west4", f"gcp:{long_gcp}")
    (project_copy / "stacks" / f"Pulumi.{stack}.yaml").write_text(text)
    model = project_copy / "models" / "fraud-detector.yaml"
    model.write_text(model.read_text().replace("aws:us-east-1: 1200", f"aws:{long_aws}: 1200"))
    for name in ("fraud-detector", "sentiment"):  # each AWS region reads a bucket of its own region
        spec = project_copy / "models" / f"{name}.yaml"
        spec.write_text(spec.read_text().replace("us-east-1: s3://modelfleet-models-us-east-1",
                                                 f"{long_aws}: s3://modelfleet-models-{long_aws}"))
    # These regions are outside the EU, where the example keeps sentiment's data (routing.residency).
    sentiment = project_copy / "models" / "sentiment.yaml"
    sentiment.write_text(re.sub(r"routing:\n(  .*\n)+", "", sentiment.read_text()))
    too_long = project_copy / "stacks" / f"Pulumi.{stack}x.yaml"
    too_long.write_text(text)
    _refused(_cli("validate", "--stack", too_long.name[7:-5], "--root", str(project_copy)),
             f"gcp allows at most 40: use a stack name of at most {len(stack)} characters")
    too_long.unlink()

    resources = evaluate(project_copy, stack).resources
    checked: dict[str, int] = {}
    bad = []
    for r in resources:
        names = []
        if r.type == "gcp:container/cluster:Cluster":
            names = [("gke-cluster", r.inputs["name"])]
        elif r.type == "aws:eks/cluster:Cluster":
            names = [("eks-cluster", r.inputs["name"])]
        elif r.type == "gcp:serviceaccount/account:Account":
            names = [("gcp-service-account", r.inputs["accountId"])]
        elif r.type == "pulumi:providers:gcp":
            labels = r.inputs["defaultLabels"]  # a provider's object inputs travel as JSON text
            names = [("gcp-label-value", v) for v in (json.loads(labels) if isinstance(labels, str) else labels).values()]
        elif r.type == "aws:iam/role:Role":
            names = [("iam-role-prefix", r.inputs["namePrefix"])] if "namePrefix" in r.inputs else \
                [("iam-role", r.inputs.get("name") or r.name + AUTONAME_SUFFIX)]
        elif r.type in GCP_AUTONAMED:
            names = [("gcp-resource", r.inputs.get("name") or r.name + AUTONAME_SUFFIX)]
        for kind, name in names:
            checked[kind] = checked.get(kind, 0) + 1
            bad.append(_check_name(kind, name))
    assert checked.keys() == {"gke-cluster", "eks-cluster", "gcp-service-account", "gcp-label-value",
                              "iam-role-prefix", "iam-role", "gcp-resource"}, checked
    assert checked["gke-cluster"] == 1 and checked["eks-cluster"] == 1
    assert [b for b in bad if b] == []


def test_every_dtype_has_its_element_size():
    """The tensor-size bound multiplies by these; a dtype added without one would crash validation."""
    from modelfleet.spec import ELEMENT_BYTES, DataType

    assert set(ELEMENT_BYTES) == set(typing.get_args(DataType))
    assert ELEMENT_BYTES["FP32"] == 4 and ELEMENT_BYTES["FP64"] == 8 and ELEMENT_BYTES["BF16"] == 2
