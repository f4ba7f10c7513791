"""Evaluate the real Pulumi program (`__main__.py`) in the SDK's mock runtime: no CLI, no engine, no credentials.

Only the cloud APIs are mocked: every resource the program declares is registered exactly as under
`pulumi up`, recorded (type, name, parent, provider, inputs), and answered with realistic outputs so that
later resources see endpoints, ARNs and ids shaped like the real ones.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import json
import os
import runpy
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.sync_await import _sync_await

from modelfleet.catalogue import regions
from modelfleet.loader import stack_config_from_file, stack_file

PROJECT = "modelfleet"
ACCOUNT_ID = "123456789012"
REDACTED = "[secret]"


@dataclass(frozen=True)
class Recorded:
    urn: str
    type: str
    name: str
    parent: str | None  # parent URN; None under the stack
    provider: str | None  # explicit provider's name; None means the engine's default provider
    custom: bool
    inputs: dict
    dependencies: tuple[str, ...] = ()
    ignore_changes: tuple[str, ...] = ()  # property paths the engine leaves alone on updates
    retain_on_delete: bool = False
    custom_timeouts: tuple[tuple[str, str], ...] = ()  # (operation, duration) the engine waits, e.g. ("create", "780s")
    id: str | None = None  # what the mocked provider answered; in the plan's JSON only as a ref for diffs
    outputs: dict = field(default_factory=dict, compare=False)

    @property
    def is_provider(self) -> bool:
        return self.type.startswith("pulumi:providers:")

    def as_dict(self) -> dict:
        return {
            "type": self.type,
            "name": self.name,
            "urn": self.urn,
            "parent": self.parent,
            "provider": self.provider,
            "custom": self.custom,
            "inputs": self.inputs,
            # For `modelfleet diff`: what the engine skips on update, what destroy leaves behind, and the mocked
            # id/ARN other resources' inputs carry, so a replacement can be traced to the inputs it changes.
            "ignore_changes": list(self.ignore_changes),
            "retain_on_delete": self.retain_on_delete,
            "refs": sorted({v for v in (self.id, self.outputs.get("arn")) if isinstance(v, str) and v}),
        }


@dataclass
class Evaluation:
    stack: str
    resources: list[Recorded]
    outputs: dict = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


def _redact(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return REDACTED
    if isinstance(value, pulumi.FileAsset):
        return {"asset": "file", "path": value.path}  # what the engine reads and hashes
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the wire carries every number as a float
    return value


def _engine_urn(urn: str) -> str:
    """The URN the real engine gives: the mock monitor puts the stack's type in front of top-level types."""
    return urn.replace("::pulumi:pulumi:Stack$", "::", 1)


def _is_stack(urn: str) -> bool:
    return urn.split("::")[2].split("$")[-1] == "pulumi:pulumi:Stack"


def _name_of(urn: str | None) -> str | None:
    return urn.split("::")[-1] if urn else None


class CloudMocks(pulumi_mocks.Mocks):
    """Answers the cloud APIs with outputs shaped like AWS, GCP and Kubernetes answer them."""

    def __init__(self, stack: str):
        self.stack = stack
        self.provider_regions: dict[str, str] = {}  # provider name -> region
        self.provider_projects: dict[str, str] = {}  # GCP provider name -> project
        self.current = threading.local()
        self.inputs: dict[str, dict] = {}  # urn -> inputs
        self.answers: dict[str, tuple[str, dict]] = {}  # urn -> (id, outputs)
        # Fully qualified stack name -> that stack's outputs, for `pulumi.StackReference` (evaluate() fills it by
        # evaluating the referenced stacks of this project first).
        self.stack_outputs: dict[str, dict] = {}

    def _region(self, provider_ref: str | None) -> str:
        name = _name_of(provider_ref.rsplit("::", 1)[0]) if provider_ref else None
        return self.provider_regions.get(name or "", "us-east-1")

    def _project(self, provider_ref: str | None) -> str:
        name = _name_of(provider_ref.rsplit("::", 1)[0]) if provider_ref else None
        return self.provider_projects.get(name or "", f"modelfleet-{self.stack}")

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
        urn = getattr(self.current, "urn", None)
        if urn:
            self.inputs[urn] = args.inputs
        state = dict(args.inputs)
        digest = hashlib.sha256(f"{args.typ}/{args.name}".encode()).hexdigest()
        if args.typ.startswith("pulumi:providers:"):
            region = args.inputs.get("region")
            if region:
                self.provider_regions[args.name] = region
            if args.inputs.get("project"):
                self.provider_projects[args.name] = args.inputs["project"]
            return f"{args.name}-provider-id", state
        if args.typ == "pulumi:pulumi:StackReference":
            # What the backend answers: the referenced stack's outputs (the SDK reads the resource by its name).
            name = args.inputs["name"]
            if name not in self.stack_outputs:
                raise RuntimeError(f"the offline plan cannot read stack {name}: add its stacks/Pulumi."
                                   f"{name.rsplit('/', 1)[-1]}.yaml to this project")
            return name, {"name": name, "outputs": self.stack_outputs[name], "secretOutputNames": []}
        region = self._region(args.provider)
        state.update(_outputs_for(args.typ, args.name, region, digest, args.inputs, self._project(args.provider)))
        resource_id = state.get("id") or f"{args.name}-{digest[:8]}"
        if urn:
            self.answers[urn] = (resource_id, state)
        return resource_id, state

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list | None]:
        region = self._region(args.provider)
        answer = _invoke_answers(args.token, region, self.stack, args.args)
        if answer is None:
            raise RuntimeError(
                f"the offline plan has no answer for invoke {args.token}; add one to modelfleet/offline.py")
        return answer, []  # the mock monitor iterates the failures list


# EC2 ids look like the real ones (`subnet-0a1b...`), so anything that parses them sees the right shape.
_EC2_ID_PREFIX = {
    "aws:ec2/vpc:Vpc": "vpc", "aws:ec2/subnet:Subnet": "subnet", "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/natGateway:NatGateway": "nat", "aws:ec2/eip:Eip": "eipalloc", "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/securityGroup:SecurityGroup": "sg", "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": "sg",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce", "aws:ec2/flowLog:FlowLog": "fl",
    "aws:ec2/launchTemplate:LaunchTemplate": "lt", "aws:ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc",
}


def _outputs_for(typ: str, name: str, region: str, digest: str, inputs: dict, project: str = "modelfleet") -> dict:
    """Outputs a real provider would return that later resources read."""
    service = typ.split(":")[1].split("/")[0]
    out: dict[str, Any] = {}
    physical = inputs.get("name") or (inputs.get("namePrefix") or f"{name}-") + digest[:7]
    out["name"] = physical
    if typ.startswith("aws:"):
        out["arn"] = f"arn:aws:{service}:{region}:{ACCOUNT_ID}:{service}/{physical}"
    if typ in _EC2_ID_PREFIX:
        out["id"] = f"{_EC2_ID_PREFIX[typ]}-0{digest[:16]}"
    if typ == "aws:ec2/launchTemplate:LaunchTemplate":
        out["latestVersion"] = 1
        out["defaultVersion"] = 1
    if typ == "aws:eks/cluster:Cluster":
        out["endpoint"] = f"https://{digest[:32].upper()}.gr7.{region}.eks.amazonaws.com"
        out["certificateAuthority"] = {"data": base64.b64encode(b"mock-ca-" + digest[:16].encode()).decode()}
        out["identities"] = [{"oidcs": [{"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/{digest[:32].upper()}"}]}]
        out["id"] = physical
        out["arn"] = f"arn:aws:eks:{region}:{ACCOUNT_ID}:cluster/{physical}"
    if typ == "aws:eks/nodeGroup:NodeGroup":
        group = inputs.get("nodeGroupName") or f"{name}-{digest[:7]}"
        out["nodeGroupName"] = group
        out["status"] = "ACTIVE"
        out["arn"] = f"arn:aws:eks:{region}:{ACCOUNT_ID}:nodegroup/{inputs.get('clusterName')}/{group}/{digest[:8]}"
    if typ == "aws:cloudwatch/logGroup:LogGroup":
        out["arn"] = f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{physical}"
    if typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
        out["arn"] = f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{inputs.get('url', '').removeprefix('https://')}"
    if typ == "aws:iam/role:Role":
        out["arn"] = f"arn:aws:iam::{ACCOUNT_ID}:role/{physical}"
        out["id"] = physical
    if typ == "aws:kms/key:Key":
        out["arn"] = f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    if typ == "aws:ecr/repository:Repository":
        out["repositoryUrl"] = f"{ACCOUNT_ID}.dkr.ecr.{region}.amazonaws.com/{physical}"
    if typ == "aws:elasticache/replicationGroup:ReplicationGroup":
        out["primaryEndpointAddress"] = f"master.{name}.{digest[:6]}.{region}.cache.amazonaws.com"
    if typ == "aws:secretsmanager/secret:Secret":
        out["arn"] = f"arn:aws:secretsmanager:{region}:{ACCOUNT_ID}:secret:{physical}-{digest[:6]}"
    if typ == "gcp:redis/instance:Instance":
        # Memorystore answers with a private address of its peered range, a generated AUTH string and its CA.
        out["host"] = f"10.{int(digest[:2], 16)}.{int(digest[2:4], 16)}.4"
        out["port"] = 6378
        out["authString"] = rpc.wrap_rpc_secret(f"mock-auth-{digest[:16]}")
        out["serverCaCerts"] = [{"cert": f"-----BEGIN CERTIFICATE-----\nmock-{digest[:16]}\n-----END CERTIFICATE-----"}]
    if typ == "gcp:artifactregistry/repository:Repository":
        out["repositoryId"] = inputs.get("repositoryId", physical)
    if typ == "gcp:compute/network:Network":
        out["id"] = f"projects/{project}/global/networks/{physical}"
    if typ == "gcp:compute/subnetwork:Subnetwork":
        out["id"] = f"projects/{project}/regions/{region}/subnetworks/{physical}"
    if typ == "gcp:compute/router:Router":
        out["id"] = f"projects/{project}/regions/{region}/routers/{physical}"
    if typ == "gcp:container/cluster:Cluster":
        master = (inputs.get("privateClusterConfig") or {}).get("masterIpv4CidrBlock") or "172.16.0.0/28"
        out["endpoint"] = master.rsplit(".", 1)[0] + "." + str(int(master.rsplit(".", 1)[1].split("/")[0]) + 2)
        out["masterAuth"] = {"clusterCaCertificate": base64.b64encode(b"mock-ca-" + digest[:16].encode()).decode()}
        out["id"] = f"projects/{project}/locations/{inputs.get('location', region)}/clusters/{physical}"
    if typ == "gcp:container/nodePool:NodePool":
        out["id"] = f"{inputs.get('cluster', '')}/nodePools/{physical}"
    if typ == "gcp:kms/keyRing:KeyRing":
        out["id"] = f"projects/{project}/locations/{inputs.get('location', region)}/keyRings/{physical}"
    if typ == "gcp:kms/cryptoKey:CryptoKey":
        out["id"] = f"{inputs.get('keyRing', '')}/cryptoKeys/{physical}"
    if typ == "gcp:serviceaccount/account:Account":
        account = inputs.get("accountId", physical)
        out["email"] = f"{account}@{project}.iam.gserviceaccount.com"
        out["name"] = f"projects/{project}/serviceAccounts/{out['email']}"
        out["member"] = f"serviceAccount:{out['email']}"
        out["id"] = out["name"]
    if typ == "kubernetes:core/v1:Service" and (inputs.get("spec") or {}).get("type") == "LoadBalancer":
        # What the cloud's controller reports once the load balancer exists (pulumi-kubernetes awaits it).
        ingress = ({"ip": f"34.{int(digest[:2], 16)}.{int(digest[2:4], 16)}.{int(digest[4:6], 16)}"}
                   if name.startswith("gcp-") else
                   {"hostname": f"a{digest[:32]}-{digest[32:48]}.elb.{name.split('-global')[0].removeprefix('aws-')}"
                                ".amazonaws.com"})
        out["status"] = {"loadBalancer": {"ingress": [ingress]}}
    if typ == "aws:route53/zone:Zone":
        out["zoneId"] = "Z" + digest[:20].upper()
        out["nameServers"] = [f"ns-{i}.awsdns-{i:02d}.com" for i in range(4)]
    if typ == "aws:route53/healthCheck:HealthCheck":
        out["id"] = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    if typ.startswith("gcp:"):
        out.setdefault("selfLink", f"https://www.googleapis.com/{service}/v1/projects/{project}/{region}/{physical}")
    return out


def _invoke_answers(token: str, region: str, stack: str, args: dict | None = None) -> dict | None:
    args = args or {}
    if token == "aws:index/getCallerIdentity:getCallerIdentity":
        return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/ci", "userId": "AIDAMOCK"}
    if token == "aws:iam/getSessionContext:getSessionContext":
        # For a user (the mock caller) the issuer is the user itself; for an assumed role, the role's ARN.
        arn = args.get("arn", "")
        return {"arn": arn, "issuerArn": arn, "issuerId": "AIDAMOCK", "issuerName": arn.rsplit("/", 1)[-1],
                "sessionName": "", "id": arn}
    if token == "aws:index/getPartition:getPartition":
        return {"partition": "aws", "dnsSuffix": "amazonaws.com", "reverseDnsSuffix": "com.amazonaws"}
    if token == "aws:index/getRegion:getRegion":
        return {"name": region, "region": region, "endpoint": f"ec2.{region}.amazonaws.com"}
    if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
        zones = list(regions()["aws"].get(region, regions()["aws"]["us-east-1"]).zones)
        return {"names": zones, "zoneIds": [z.replace(region, "use1-az") for z in zones], "id": region}
    if token == "aws:eks/getAddonVersion:getAddonVersion":
        # The shape EKS answers with (`v<version>-eksbuild.<n>`); the real default depends on the add-on.
        minor = args.get("kubernetesVersion", "")
        return {"addonName": args.get("addonName"), "kubernetesVersion": minor, "mostRecent": args.get("mostRecent"),
                "version": f"v{minor}.0-eksbuild.1", "id": args.get("addonName"), "region": region}
    if token == "aws:lb/getHostedZoneId:getHostedZoneId":
        # Elastic Load Balancing's canonical hosted zones (docs.aws.amazon.com/general/latest/gr/elb.html).
        nlb = {"us-east-1": "Z26RNL4JYFTOTI", "us-east-2": "ZLMOA37VPKANP", "us-west-2": "Z18D5FSROUN65G",
               "eu-west-1": "Z2IFOLAFXWLO4F", "eu-central-1": "Z3F0SRJ5LGBH90", "eu-west-2": "ZD4D7Y8KGAS4G",
               "eu-north-1": "Z1UDT6IFJ4EJM", "ap-northeast-1": "Z31USIVHYNEOWT", "ap-southeast-1": "ZKVM4W9LS7TM",
               "ap-south-1": "ZVDDRBQ08TROA"}
        where = args.get("region") or region
        return {"id": nlb.get(where, "Z26RNL4JYFTOTI"), "region": where,
                "loadBalancerType": args.get("loadBalancerType")}
    if token == "aws:route53/getZone:getZone":
        name = args.get("name", "example.com")
        return {"zoneId": "Z0EXISTING" + hashlib.sha256(name.encode()).hexdigest()[:10].upper(), "name": name,
                "privateZone": False, "id": "existing", "arn": f"arn:aws:route53:::hostedzone/{name}"}
    if token == "gcp:organizations/getClientConfig:getClientConfig":
        return {"project": f"modelfleet-{stack}", "region": region, "zone": f"{region}-a", "accessToken": "mock"}
    if token == "gcp:organizations/getProject:getProject":
        project = args.get("projectId") or f"modelfleet-{stack}"
        return {"projectId": project, "number": "123456789012", "name": project, "id": f"projects/{project}"}
    if token == "gcp:compute/getZones:getZones":
        return {"names": list(regions()["gcp"].get(region, regions()["gcp"]["us-central1"]).zones)}
    return None


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, also recording who parents whom and which provider each resource uses."""

    def __init__(self, mocks: CloudMocks):
        super().__init__(mocks)
        self.cloud_mocks = mocks
        self.records: dict[str, dict] = {}
        self.lock = threading.Lock()

    def RegisterResource(self, request):  # noqa: N802 — gRPC method name
        urn = self.make_urn(request.parent, request.type, request.name)
        self.cloud_mocks.current.urn = urn
        try:
            response = super().RegisterResource(request)
        finally:
            self.cloud_mocks.current.urn = None
        if request.type != "pulumi:pulumi:Stack":
            provider_urn = request.provider.rsplit("::", 1)[0] if request.provider else None
            with self.lock:
                self.records[urn] = {
                    "type": request.type,
                    "name": request.name,
                    "parent": _engine_urn(request.parent) if request.parent and not _is_stack(request.parent) else None,
                    "provider": _name_of(provider_urn),
                    "custom": bool(request.custom),
                    "dependencies": tuple(sorted(_engine_urn(d) for d in request.dependencies)),
                    "ignore_changes": tuple(request.ignoreChanges),
                    "retain_on_delete": bool(request.retainOnDelete),
                    "custom_timeouts": tuple((op, getattr(request.customTimeouts, op))
                                             for op in ("create", "update", "delete")
                                             if request.HasField("customTimeouts")
                                             and getattr(request.customTimeouts, op)),
                }
        return response


def _set_stack_config(root: Path, stack: str) -> None:
    path = stack_file(root, stack)
    values, _ = stack_config_from_file(path, str(path.relative_to(root)))
    config = {f"{PROJECT}:{key}": value if isinstance(value, str) else json.dumps(value) for key, value in values.items()}
    pulumi.runtime.set_all_config(config)


@contextlib.contextmanager
def offline_runtime():
    """Two SDK costs that buy nothing offline, switched off for the length of an evaluation:
    - the capture of the user's stack at each registration: source positions only feed the engine's diagnostics,
      no engine runs here, and capturing them stats every source file of every frame, for every resource;
    - Python's cyclic garbage collector: every resource keeps many live objects, so full collections grow with
      the fleet and made large evaluations superlinear (2,250 resources: 7.6 s with it, 4.0 s without). Garbage
      left behind goes at the next ordinary collection after the evaluation."""
    from pulumi.runtime import resource as runtime_resource
    from pulumi.runtime.proto import source_pb2

    original = runtime_resource._get_stack_trace
    runtime_resource._get_stack_trace = source_pb2.StackTrace
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        runtime_resource._get_stack_trace = original
        if collecting:
            gc.enable()


def evaluate(root: Path, stack: str, program: Path | None = None) -> Evaluation:
    """Run `__main__.py` of the project at `root` for `stack` under mocks and return what it declared."""
    root = root.resolve()
    program = program or root / "__main__.py"
    # A global stack reads its regional stacks' outputs (modelfleet:region_stacks): evaluate those first, from
    # this project's own stack files, so the StackReferences get what those programs export.
    references = {ref: evaluate(root, ref.rsplit("/", 1)[-1]).outputs for ref in _region_stacks(root, stack)
                  if stack_file(root, ref.rsplit("/", 1)[-1]).exists()}
    mocks = CloudMocks(stack)
    mocks.stack_outputs = references
    monitor = RecordingMonitor(mocks)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    settings.set_root_resource(None)  # a fresh stack per evaluation, also when called twice in one process
    _set_stack_config(root, stack)
    pulumi_mocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    cwd = os.getcwd()
    os.chdir(root)  # the program reads models/ relative to the project, as under `pulumi up`
    try:
        with offline_runtime():
            _sync_await(pulumi.runtime.stack.run_pulumi_func(lambda: runpy.run_path(str(program), run_name="__main__")))
        # The program's `pulumi.export`s, on the root Stack (the engine would register them as its outputs).
        root_stack = settings.get_root_resource()
        exported = {name: _sync_await(pulumi.Output.from_input(value).future())
                    for name, value in (getattr(root_stack, "outputs", None) or {}).items()}
    finally:
        os.chdir(cwd)
    resources = [
        Recorded(urn=_engine_urn(urn), inputs=_redact(mocks.inputs.get(urn, {})), **record,
                 id=mocks.answers.get(urn, (None, {}))[0], outputs=_redact(mocks.answers.get(urn, (None, {}))[1]))
        for urn, record in monitor.records.items()
    ]
    resources.sort(key=lambda r: r.urn)
    return Evaluation(stack=stack, resources=resources, outputs=exported)


def _region_stacks(root: Path, stack: str) -> list[str]:
    path = stack_file(root, stack)
    if not path.exists():
        return []
    values, _ = stack_config_from_file(path, str(path.relative_to(root)))
    stacks = values.get("region_stacks")
    return sorted(set(stacks.values())) if isinstance(stacks, dict) else []
