"""The CrossGuard pack in policies/: every policy through its real validate function, the pack's shape for the
Pulumi CLI, and the offline review of the example stacks, clean and mutated."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from pulumi_policy import (PolicyCustomTimeouts, PolicyProviderResource, PolicyResource, PolicyResourceOptions,
                           ResourceValidationArgs, ResourceValidationPolicy, StackValidationArgs)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from modelfleet.offline import Evaluation, Recorded
from modelfleet.review import PolicyConfigError, load_pack, review

PROJECT = Path(__file__).resolve().parent.parent
PACK = PROJECT / "policies"
POLICIES = {p.name: p for p in load_pack()}
DIGEST = "sha256:" + "ab" * 32
STACK = "urn:pulumi:test::modelfleet::"


def urn(t: str, name: str) -> str:
    return f"{STACK}{t}::{name}"


def _opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


def _config(policy, config: dict | None) -> dict:
    out = {k: s["default"] for k, s in (policy.config_schema.properties if policy.config_schema else {}).items()
           if "default" in s}
    return {**out, **(config or {})}


def run(name: str, t: str, props: dict, config: dict | None = None, provider: dict | None = None) -> list[str]:
    """The messages a resource policy reports for one resource, called as the analyzer calls it."""
    policy = POLICIES[name]
    assert isinstance(policy, ResourceValidationPolicy)
    messages: list[str] = []
    prov = None
    if provider is not None:
        prov = PolicyProviderResource(provider["type"], unknown_checking_proxy(provider["props"]),
                                      urn(provider["type"], "p"), "p")
    args = ResourceValidationArgs(t, unknown_checking_proxy(props), urn(t, "r"), "r", _opts(), prov,
                                  _config(policy, config), {})
    policy.validate(args, lambda message, _urn=None: messages.append(message))
    return messages


def run_stack(name: str, resources: list[tuple], config: dict | None = None) -> list[tuple[str, str | None]]:
    """(message, urn) for a stack policy over (type, name, props[, dependency names]) tuples."""
    policy = POLICIES[name]
    built = {}
    for entry in resources:
        t, n, props = entry[:3]
        built[n] = PolicyResource(t, unknown_checking_proxy(props), urn(t, n), n, _opts(), None, None, [], {})
    for entry in resources:
        for dep in entry[3] if len(entry) > 3 else ():
            built[entry[1]].dependencies.append(built[dep])
    out: list[tuple[str, str | None]] = []
    policy.validate(StackValidationArgs(list(built.values()), _config(policy, config), {}),
                    lambda message, u=None: out.append((message, u)))
    return out


# ---------------------------------------------------------------- wire-form fixtures

def deployment(image=f"nvcr.io/nvidia/tritonserver@{DIGEST}", *, labels=None, annotations=None, resources=None,
               probes=True, security=None, ns="modelfleet-prod", host_network=False, pod_security=None,
               **pod_fields) -> dict:
    labels = {"app.kubernetes.io/name": "triton", "modelfleet.io/model": "fraud-detector"} if labels is None else labels
    container = {"name": "triton", "image": image,
                 "resources": {"requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
                               "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"}} if resources is None else resources}
    if probes:
        container["readinessProbe"] = {"httpGet": {"path": "/v2/health/ready", "port": 8000}}
        container["livenessProbe"] = {"httpGet": {"path": "/v2/health/live", "port": 8000}}
    if security:
        container["securityContext"] = security
    annotations = {"modelfleet.io/owner": "payments-ml@example.com", "modelfleet.io/slo-p99-ms": "50",
                   "modelfleet.io/slo-availability": "0.999"} if annotations is None else annotations
    spec = {"containers": [container], **pod_fields}
    if host_network:
        spec["hostNetwork"] = True
    if pod_security:
        spec["securityContext"] = pod_security
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "fraud-detector", "namespace": ns, "labels": labels, "annotations": annotations},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


def eks_gpu_group(taints=True, max_size=12, instance="g6.2xlarge", launch_template=True) -> dict:
    props = {"instanceTypes": [instance], "amiType": "AL2023_x86_64_NVIDIA",
             "labels": {"modelfleet.io/hardware-class": "nvidia-l4", "nvidia.com/gpu.present": "true"},
             "scalingConfig": {"minSize": 1, "maxSize": max_size, "desiredSize": 1},
             "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}] if taints else []}
    if launch_template:
        props["launchTemplate"] = {"id": "lt-1", "version": "1"}
    return props


def gke_gpu_pool(taints=True, total_max=12, accelerator="nvidia-l4") -> dict:
    return {"nodeConfig": {"machineType": "g2-standard-8", "guestAccelerators": [{"type": accelerator, "count": 1}],
                           "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}] if taints else []},
            "autoscaling": {"totalMinNodeCount": 0, "totalMaxNodeCount": total_max}}


def policy_doc(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


NP = ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "triton-ingress",
      {"metadata": {"namespace": "modelfleet-prod"},
       "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "triton"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "gateway"}}}]}]}})
DEP = ("kubernetes:apps/v1:Deployment", "fraud-detector", deployment())
SVC = ("kubernetes:core/v1:Service", "fraud-detector-svc",
       {"metadata": {"namespace": "modelfleet-prod", "labels": {"app.kubernetes.io/name": "triton"}},
        "spec": {"selector": {"app.kubernetes.io/name": "triton"}, "ports": [{"name": "metrics", "port": 8002}]}})
MONITOR = ("kubernetes:monitoring.coreos.com/v1:ServiceMonitor", "triton",
           {"metadata": {"namespace": "modelfleet-prod"},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "triton"}},
                     "endpoints": [{"port": "metrics"}]}})
def slo_rule(model: str, slos=("availability", "latency")) -> tuple:
    return ("kubernetes:monitoring.coreos.com/v1:PrometheusRule", f"modelfleet-{model}",
            {"metadata": {"namespace": "monitoring", "labels": {"model": model}},
             "spec": {"groups": [{"name": model, "rules": [
                 {"alert": f"Model{slo.capitalize()}BudgetBurn", "expr": f'x{{model="{model}"}} > 0.0144',
                  "labels": {"model": model, "slo": slo, "severity": "page"}} for slo in slos]}]}})


RULE = slo_rule("fraud-detector")
# Alerts that name the model but are no SLO alert of it: not enough.
NOT_SLO = ("kubernetes:monitoring.coreos.com/v1:PrometheusRule", "triton-misc",
           {"metadata": {"namespace": "modelfleet-prod"},
            "spec": {"groups": [{"name": "misc", "rules": [
                {"alert": "TritonQueueTimeHigh", "expr": 'q{model="fraud-detector"} > 1',
                 "labels": {"model": "fraud-detector", "severity": "warning"}},
                {"alert": "FleetAvailability", "expr": 'e{model=~"fraud-detector|sentiment"} > 0.01',
                 "labels": {"slo": "availability", "severity": "page"}}]}]}})
TRITON_SA = ("kubernetes:core/v1:ServiceAccount", "triton",
             {"metadata": {"name": "triton", "namespace": "modelfleet-prod"}, "automountServiceAccountToken": False})
# A VPC with a public subnet (default route to the internet gateway) and a private one (default route to NAT).
PUBLIC_NET = [
    ("aws:ec2/internetGateway:InternetGateway", "igw", {}),
    ("aws:ec2/natGateway:NatGateway", "nat", {}),
    ("aws:ec2/routeTable:RouteTable", "to-igw", {"routes": [{"cidrBlock": "0.0.0.0/0", "gatewayId": "igw-1"}]}, ["igw"]),
    ("aws:ec2/routeTable:RouteTable", "to-nat", {"routes": [{"cidrBlock": "0.0.0.0/0", "natGatewayId": "nat-1"}]},
     ["nat"]),
    ("aws:ec2/subnet:Subnet", "public", {"mapPublicIpOnLaunch": False}),
    ("aws:ec2/subnet:Subnet", "private", {"mapPublicIpOnLaunch": False}),
    ("aws:ec2/routeTableAssociation:RouteTableAssociation", "public-rt", {}, ["public", "to-igw"]),
    ("aws:ec2/routeTableAssociation:RouteTableAssociation", "private-rt", {}, ["private", "to-nat"]),
]


def cost(monthly: float, budget: float = 10_000) -> tuple:
    return ("modelfleet:fleet:Cost", "cost", {"currency": "USD", "monthlyUsd": monthly, "budgetMonthlyUsd": budget,
                                               "lines": [{"region": "aws-us-east-1", "item": "pool gpu-l4 (g6.2xlarge)",
                                                          "quantity": 4, "hourlyUsdEach": 0.9776,
                                                          "monthlyUsd": monthly}]})


AWS_PROVIDER = {"type": "pulumi:providers:aws",
                "props": {"region": "us-east-1", "defaultTags": json.dumps({"tags": {
                    "team": "ml", "cost-center": "cc-1", "environment": "prod", "managed-by": "modelfleet"}})}}
LT = "aws:ec2/launchTemplate:LaunchTemplate"
ENCRYPTED_ROOT = [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true", "volumeSize": 100}}]

# (policy, resource type, violating props, compliant props, words the message must contain, extra kwargs)
RESOURCE_CASES = [
    ("no-public-ip-on-nodes", LT, {"networkInterfaces": [{"associatePublicIpAddress": "true"}]},
     {"networkInterfaces": [{"associatePublicIpAddress": "false"}]}, ["associatePublicIpAddress", "private subnets"]),
    ("no-public-ip-on-nodes", "aws:ec2/subnet:Subnet", {"mapPublicIpOnLaunch": True}, {"mapPublicIpOnLaunch": False},
     ["mapPublicIpOnLaunch", "map_public_ip_on_launch=False"]),
    ("no-public-ip-on-nodes", "aws:ec2/instance:Instance", {"associatePublicIpAddress": True}, {},
     ["associatePublicIpAddress"]),
    ("no-public-ip-on-nodes", "gcp:container/cluster:Cluster", {"privateClusterConfig": {"enablePrivateNodes": False}},
     {"privateClusterConfig": {"enablePrivateNodes": True}}, ["enablePrivateNodes", "Cloud NAT"]),
    ("no-public-ip-on-nodes", "gcp:container/nodePool:NodePool", {"networkConfig": {"enablePrivateNodes": False}},
     {"networkConfig": {}}, ["enablePrivateNodes"]),
    ("no-public-ip-on-nodes", "gcp:compute/instanceTemplate:InstanceTemplate",
     {"networkInterfaces": [{"accessConfigs": [{}]}]}, {"networkInterfaces": [{"network": "n"}]}, ["external IP"]),
    ("no-world-ingress-except-listeners", "aws:ec2/securityGroup:SecurityGroup",
     {"ingress": [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}]},
     {"ingress": [{"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]},
                  {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["10.0.0.0/16"]}]},
     ["0.0.0.0/0", "port 22", "public_listener_ports"]),
    ("no-world-ingress-except-listeners", "aws:ec2/securityGroupRule:SecurityGroupRule",
     {"type": "ingress", "protocol": "-1", "fromPort": 0, "toPort": 0, "ipv6CidrBlocks": ["::/0"]},
     {"type": "egress", "protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}, ["::/0", "all ports"]),
    ("no-world-ingress-except-listeners", "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
     {"ipProtocol": "tcp", "fromPort": 8000, "toPort": 8002, "cidrIpv4": "0.0.0.0/0"},
     {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidrIpv4": "0.0.0.0/0"}, ["ports 8000-8002"]),
    ("no-world-ingress-except-listeners", "gcp:compute/firewall:Firewall",
     {"sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["443", "8000-8002"]}]},
     {"sourceRanges": ["0.0.0.0/0"], "denies": [{"protocol": "all"}]}, ["allows[0]", "ports 8000-8002"]),
    ("private-cluster-endpoint", "aws:eks/cluster:Cluster", {"vpcConfig": {"subnetIds": ["s"]}},
     {"vpcConfig": {"endpointPublicAccess": False, "endpointPrivateAccess": True}},
     ["endpointPrivateAccess", "0.0.0.0/0", "public_access_cidrs"]),
    ("private-cluster-endpoint", "gcp:container/cluster:Cluster",
     {"privateClusterConfig": {"enablePrivateNodes": True}},
     {"privateClusterConfig": {"enablePrivateNodes": True},
      "masterAuthorizedNetworksConfig": {"cidrBlocks": [{"cidrBlock": "10.32.0.0/16"}]}},
     ["public endpoint", "master_authorized_networks_config"]),
    ("secrets-encrypted-with-customer-key", "aws:eks/cluster:Cluster", {"vpcConfig": {}},
     {"encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": UNKNOWN_STRING_VALUE}}},
     ["encryptionConfig", "aws.kms.Key"]),
    ("secrets-encrypted-with-customer-key", "gcp:container/cluster:Cluster",
     {"databaseEncryption": {"state": "DECRYPTED"}},
     {"databaseEncryption": {"state": "ENCRYPTED", "keyName": "projects/p/locations/l/keyRings/r/cryptoKeys/k"}},
     ["databaseEncryption", "ENCRYPTED"]),
    ("encrypted-node-disks", LT, {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeSize": 100}}]},
     {"blockDeviceMappings": ENCRYPTED_ROOT}, ["/dev/xvda", "encrypted='true'"]),
    ("encrypted-node-disks", LT, {}, {"blockDeviceMappings": ENCRYPTED_ROOT}, ["no blockDeviceMappings"]),
    ("encrypted-node-disks", "aws:eks/nodeGroup:NodeGroup", eks_gpu_group(launch_template=False), eks_gpu_group(),
     ["no launch template", "account_ebs_encryption_by_default"]),
    ("encrypted-node-disks", "aws:ebs/volume:Volume", {"size": 10}, {"size": 10, "encrypted": True}, ["not encrypted"]),
    ("pod-identity-scoped-to-model", "aws:iam/rolePolicy:RolePolicy",
     {"policy": policy_doc({"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::models/*"})},
     {"policy": policy_doc({"Effect": "Allow", "Action": ["s3:GetObject"],
                            "Resource": ["arn:aws:s3:::models/fraud-detector/*"]},
                           {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::models",
                            "Condition": {"StringLike": {"s3:prefix": ["fraud-detector/*"]}}})},
     ["whole bucket 'models'", "<model>/*"]),
    ("pod-identity-scoped-to-model", "aws:iam/rolePolicy:RolePolicy",
     {"policy": policy_doc({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::models"})},
     {"policy": policy_doc({"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "*"})},
     ["without an s3:prefix condition"]),
    ("pod-identity-scoped-to-model", "aws:iam/role:Role",
     {"assumeRolePolicy": policy_doc({"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
                                      "Condition": {"StringLike": {"oidc/id/X:sub": "system:serviceaccount:*:*"}}})},
     {"assumeRolePolicy": policy_doc({"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
                                      "Condition": {"StringEquals": {
                                          "oidc/id/X:sub": "system:serviceaccount:modelfleet-prod:triton",
                                          "oidc/id/X:aud": "sts.amazonaws.com"}}})},
     ["system:serviceaccount:*:*", "StringEquals"]),
    ("pod-identity-scoped-to-model", "gcp:storage/bucketIAMMember:BucketIAMMember",
     {"role": "roles/storage.objectViewer", "member": "serviceAccount:triton@p.iam.gserviceaccount.com", "bucket": "m"},
     {"role": "roles/storage.objectViewer", "member": "serviceAccount:triton@p.iam.gserviceaccount.com", "bucket": "m",
      "condition": {"title": "t", "expression": 'resource.name.startsWith("projects/_/buckets/m/objects/fraud/")'}},
     ["whole bucket", "resource.name.startsWith"]),
    ("pod-identity-scoped-to-model", "gcp:projects/iAMMember:IAMMember",
     {"role": "roles/storage.objectViewer", "member": "serviceAccount:triton@p.iam.gserviceaccount.com"},
     {"role": "roles/logging.logWriter", "member": "serviceAccount:nodes@p.iam.gserviceaccount.com"},
     ["project-wide"]),
    ("pod-identity-scoped-to-model", "gcp:serviceaccount/iAMMember:IAMMember",
     {"role": "roles/iam.workloadIdentityUser", "member": "serviceAccount:p.svc.id.goog[*/triton]"},
     {"role": "roles/iam.workloadIdentityUser", "member": "serviceAccount:p.svc.id.goog[modelfleet-prod/triton]"},
     ["not one Kubernetes service account"]),
    ("no-wildcard-iam", "aws:iam/policy:Policy",
     {"policy": policy_doc({"Effect": "Allow", "Action": "*", "Resource": "*"})},
     {"policy": policy_doc({"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"})},
     ["every action on every resource"]),
    ("no-wildcard-iam", "aws:iam/role:Role",
     {"inlinePolicies": [{"name": "admin", "policy": policy_doc({"Effect": "Allow", "Action": ["*"],
                                                                  "Resource": ["*"]})}]},
     {"inlinePolicies": [{"name": "deny", "policy": policy_doc({"Effect": "Deny", "Action": "*", "Resource": "*"})}]},
     ["inlinePolicies[0] admin"]),
    ("no-wildcard-iam", "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
     {"policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
     {"policyArn": "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy"}, ["AdministratorAccess"]),
    ("no-wildcard-iam", "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
     {"policyArn": "arn:aws:iam::aws:policy/PowerUserAccess"},
     {"policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}, ["PowerUserAccess"]),
    ("no-wildcard-iam", "aws:iam/rolePolicy:RolePolicy",
     {"policy": policy_doc({"Effect": "Allow", "Action": ["logs:PutLogEvents", "S3:*"], "Resource": ["*"]})},
     {"policy": policy_doc({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::models/fraud-detector/*"},
                           {"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"})},
     ["every action of S3 on every resource", "'S3:*'"]),
    ("no-wildcard-iam", "aws:iam/policy:Policy",
     {"policy": policy_doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})},
     {"policy": policy_doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:s3:::models/*"})},
     ["every action except iam:*", "NotAction"]),
    ("no-wildcard-iam", "gcp:projects/iAMMember:IAMMember", {"role": "roles/editor", "member": "user:a@b.c"},
     {"role": "roles/container.developer", "member": "user:a@b.c"}, ["primitive role roles/editor"]),
    ("gpu-pools-tainted", "aws:eks/nodeGroup:NodeGroup", eks_gpu_group(taints=False), eks_gpu_group(),
     ["nvidia-l4", "nvidia.com/gpu NoSchedule", "toleration"]),
    ("gpu-pools-tainted", "gcp:container/nodePool:NodePool", gke_gpu_pool(taints=False), gke_gpu_pool(),
     ["GKE node pool", "taints: none"]),
    ("gpu-count-under-cap", "aws:eks/nodeGroup:NodeGroup", eks_gpu_group(max_size=3, instance="p5.48xlarge"),
     eks_gpu_group(max_size=12), ["24 GPUs", "3 nodes x 8 nvidia-h100", "cap of 16"]),
    ("gpu-count-under-cap", "gcp:container/nodePool:NodePool", gke_gpu_pool(total_max=20), gke_gpu_pool(total_max=16),
     ["20 GPUs", "autoscaling.totalMaxNodeCount"]),
    ("approved-gpu-classes", "aws:eks/nodeGroup:NodeGroup", eks_gpu_group(instance="p5.48xlarge"), eks_gpu_group(),
     ["nvidia-h100", "not approved", "approved_gpu_classes"]),
    ("approved-gpu-classes", "gcp:container/nodePool:NodePool", gke_gpu_pool(accelerator="nvidia-h100-80gb"),
     gke_gpu_pool(accelerator="nvidia-tesla-t4"), ["nvidia-h100"]),
    ("images-pinned-by-digest", "kubernetes:apps/v1:Deployment", deployment(image="nvcr.io/nvidia/tritonserver:25.01-py3"),
     deployment(), ["tritonserver:25.01-py3", "not pinned by digest", "@sha256:"]),
    ("resources-requests-and-limits", "kubernetes:apps/v1:Deployment",
     deployment(resources={"requests": {"nvidia.com/gpu": "1"}}), deployment(),
     ["requests.cpu", "requests.memory", "limits.memory", "limits.nvidia.com/gpu"]),
    ("no-privileged-containers", "kubernetes:apps/v1:Deployment",
     deployment(security={"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}, host_network=True),
     deployment(security={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}),
     ["runs privileged", "SYS_ADMIN", "hostNetwork"]),
    ("no-privileged-containers", "kubernetes:apps/v1:Deployment", deployment(hostPID=True), deployment(hostPID=False),
     ["hostPID: true", "Fix: remove hostPID"]),
    ("no-privileged-containers", "kubernetes:apps/v1:Deployment", deployment(hostIPC=True), deployment(),
     ["hostIPC: true", "Fix: remove hostIPC"]),
    ("containers-run-as-non-root", "kubernetes:apps/v1:Deployment",
     deployment(pod_security={"runAsNonRoot": True}, security={"runAsUser": 0}),
     deployment(pod_security={"runAsNonRoot": True, "runAsUser": 1000}), ["runAsUser: 0 (root)", "runAsUser 1000"]),
    ("containers-run-as-non-root", "kubernetes:apps/v1:Deployment", deployment(),
     deployment(security={"runAsNonRoot": True}), ["does not set runAsNonRoot: true"]),
    # The container's own setting beats the pod's, both ways.
    ("containers-run-as-non-root", "kubernetes:apps/v1:Deployment",
     deployment(pod_security={"runAsNonRoot": True}, security={"runAsNonRoot": False}),
     deployment(pod_security={"runAsNonRoot": False, "runAsUser": 0}, security={"runAsNonRoot": True, "runAsUser": 1000}),
     ["containers[0] triton does not set runAsNonRoot"]),
    ("capabilities-dropped", "kubernetes:apps/v1:Deployment",
     deployment(security={"capabilities": {"drop": ["NET_RAW"]}}),
     deployment(security={"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}),
     ["capabilities.drop has no ALL: only NET_RAW", "drop: [ALL]"]),
    ("capabilities-dropped", "kubernetes:apps/v1:Deployment",
     deployment(security={"capabilities": {"drop": ["all"], "add": ["CHOWN"]}}),
     deployment(security={"capabilities": {"drop": ["all"]}}), ["adds capabilities CHOWN"]),
    ("probes-present", "kubernetes:apps/v1:Deployment", deployment(probes=False), deployment(),
     ["readinessProbe or livenessProbe", "/v2/health/ready"]),
    ("instance-metadata-protected", LT, {"metadataOptions": {"httpTokens": "optional", "httpPutResponseHopLimit": 1}},
     {"metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1}}, ["httpTokens is optional", "IMDSv1"]),
    ("instance-metadata-protected", LT, {"metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2}},
     {"metadataOptions": {"httpEndpoint": "disabled"}}, ["httpPutResponseHopLimit is 2, above 1", "IRSA"]),
    ("instance-metadata-protected", "aws:ec2/instance:Instance", {},
     {"metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1}},
     ["httpTokens is optional (the default)", "unset"]),
    ("instance-metadata-protected", "aws:eks/nodeGroup:NodeGroup", eks_gpu_group(launch_template=False),
     eks_gpu_group(), ["no launch template", "http_put_response_hop_limit=1"]),
    ("instance-metadata-protected", "gcp:container/nodePool:NodePool",
     {"nodeConfig": {"workloadMetadataConfig": {"mode": "GCE_METADATA"},
                     "metadata": {"disable-legacy-endpoints": "false"}}},
     {"nodeConfig": {"workloadMetadataConfig": {"mode": "GKE_METADATA"},
                     "metadata": {"disable-legacy-endpoints": "true"}}},
     ["mode is GCE_METADATA", "disable-legacy-endpoints is 'false'"]),
    ("kms-key-rotation", "aws:kms/key:Key", {"enableKeyRotation": False},
     {"enableKeyRotation": True, "rotationPeriodInDays": 90}, ["enableKeyRotation is not true"]),
    ("kms-key-rotation", "aws:kms/key:Key", {"enableKeyRotation": True, "rotationPeriodInDays": 366},
     {"customerMasterKeySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY"}, ["rotationPeriodInDays is 366, above"]),
    ("kms-key-rotation", "gcp:kms/cryptoKey:CryptoKey", {"keyRing": "r"},
     {"keyRing": "r", "rotationPeriod": f"{90 * 86_400}s"}, ["no rotationPeriod", "never rotates"]),
    ("kms-key-rotation", "gcp:kms/cryptoKey:CryptoKey", {"rotationPeriod": f"{366 * 86_400}s"},
     {"rotationPeriod": f"{365 * 86_400}s"}, ["rotationPeriod 31622400s is above this stack's 365 days"]),
    ("deletion-protection", "aws:eks/cluster:Cluster", {"deletionProtection": False}, {"deletionProtection": True},
     ["deletionProtection is False", "pulumi destroy"]),
    ("deletion-protection", "aws:eks/cluster:Cluster", {"name": "c"}, {"deletionProtection": True},
     ["deletionProtection is unset (off by default)"]),
    # GKE clusters are protected unless told otherwise (the provider's default).
    ("deletion-protection", "gcp:container/cluster:Cluster", {"deletionProtection": False}, {"name": "c"},
     ["deletionProtection is False"]),
    ("deletion-protection", "aws:lb/loadBalancer:LoadBalancer", {"internal": True},
     {"enableDeletionProtection": True}, ["enableDeletionProtection is unset"]),
    ("required-tags", "aws:eks/cluster:Cluster", {"tags": {"team": "ml"}},
     {"tags": {"Name": "c"}}, ["cost-center", "environment", "managed-by"], {"provider_for_good": AWS_PROVIDER}),
    ("required-tags", "pulumi:providers:aws", {"region": "us-east-1"}, AWS_PROVIDER["props"], ["default_tags"]),
    ("required-tags", "pulumi:providers:gcp", {"defaultLabels": json.dumps({"team": "ml"})},
     {"defaultLabels": json.dumps({"team": "ml", "cost-center": "c", "environment": "e", "managed-by": "m"})},
     ["default_labels lack cost-center"]),
    ("model-owner-and-slo", "kubernetes:apps/v1:Deployment", deployment(annotations={}), deployment(),
     ["modelfleet.io/owner", "modelfleet.io/slo-p99-ms", "modelfleet.io/slo-availability"]),
]

_ENTRY = ("aws:route53/record:Record", "entry", {"name": "aws-eu-west-1.example.com", "type": "A"})


def _routed(name: str, target: str, **extra) -> tuple:
    return ("aws:route53/record:Record", f"{name}-{target}", {"name": name, "setIdentifier": target.split(".")[0],
                                                            "aliases": [{"name": target, "evaluateTargetHealth": False}],
                                                            **extra})


def _residency_records() -> list[tuple]:
    """m's EU clients answered from aws:eu-west-1 and gcp:europe-west4; aws:us-east-1 answers everyone else."""
    entries = [("aws:route53/record:Record", f"entry-{n}", {"name": f"{n}.example.com", "type": "A"})
               for n in ("aws-eu-west-1", "gcp-europe-west4", "aws-us-east-1")]
    return entries + [_routed("m.example.com", "eu.m.example.com", geolocationRoutingPolicies=[{"continent": "EU"}]),
                      _routed("eu.m.example.com", "aws-eu-west-1.example.com", healthCheckId="hc-1"),
                      _routed("eu.m.example.com", "gcp-europe-west4.example.com", healthCheckId="hc-2")]


def _fallback(peer_host: str) -> list[tuple]:
    """m's route in aws:eu-west-1, its Triton first, then the peer gateway `peer_host` as the fallback Backend."""
    return [("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", "aws-eu-west-1-gateway-httproute-triton-m",
             {"kind": "HTTPRoute", "metadata": {"name": "triton-m"}, "spec": {"rules": [{
                 "matches": [{"path": {"type": "PathPrefix", "value": "/v2/models/m"}}],
                 "backendRefs": [{"kind": "Service", "name": "triton-m", "port": 8000},
                                 {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "peer-x"}]}]}}),
            ("kubernetes:gateway.envoyproxy.io/v1alpha1:Backend", "aws-eu-west-1-gateway-backend-peer-x",
             {"kind": "Backend", "metadata": {"name": "peer-x"},
              "spec": {"fallback": True, "endpoints": [{"fqdn": {"hostname": peer_host, "port": 8443}}]}})]


STACK_CASES = [
    ("routing-regions-health-checked",
     [_ENTRY, _routed("m.example.com", "aws-eu-west-1.example.com")],
     [_ENTRY, _routed("m.example.com", "aws-eu-west-1.example.com", healthCheckId="hc-1")],
     ["aws:eu-west-1 without a health check", "no health-checked routed record"]),
    ("routing-residency",
     [("aws:route53/record:Record", "us", {"name": "aws-us-east-1.example.com", "type": "A"}),
      _routed("m.example.com", "eu.m.example.com", geolocationRoutingPolicies=[{"continent": "EU"}]),
      _routed("eu.m.example.com", "aws-us-east-1.example.com", healthCheckId="hc-1")],
     [_ENTRY, _routed("m.example.com", "eu.m.example.com", geolocationRoutingPolicies=[{"continent": "EU"}]),
      _routed("eu.m.example.com", "aws-eu-west-1.example.com", healthCheckId="hc-1")],
     ["aws:us-east-1, outside EU"]),
    ("routing-fallback-residency",
     _residency_records() + _fallback("aws-us-east-1.example.com"),
     _residency_records() + _fallback("gcp-europe-west4.example.com"),
     ["m's gateway in aws:eu-west-1", "aws:us-east-1 (Backend peer-x)", "its EU clients",
      "aws:eu-west-1, gcp:europe-west4"]),
    ("tls-on-public-listeners",
     [("aws:lb/loadBalancer:LoadBalancer", "gw", {"internal": False}),
      ("aws:lb/listener:Listener", "http", {"protocol": "HTTP", "port": 80,
                                            "defaultActions": [{"type": "forward"}]}, ["gw"])],
     [("aws:lb/loadBalancer:LoadBalancer", "gw", {"internal": False}),
      ("aws:lb/listener:Listener", "https", {"protocol": "HTTPS", "port": 443, "certificateArn": "arn"}, ["gw"]),
      ("aws:lb/listener:Listener", "redirect", {"protocol": "HTTP", "port": 80, "defaultActions": [
          {"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}]}, ["gw"]),
      ("aws:lb/loadBalancer:LoadBalancer", "internal", {"internal": True}),
      ("aws:lb/listener:Listener", "plain-internal", {"protocol": "HTTP", "port": 8080}, ["internal"])],
     ["port 80 speaks HTTP", "certificate_arn"]),
    ("tls-on-public-listeners",
     [("kubernetes:networking.k8s.io/v1:Ingress", "gw", {"spec": {"rules": [{"host": "a.example.com"}]}}),
      ("kubernetes:core/v1:Service", "lb", {"spec": {"type": "LoadBalancer"}})],
     [("kubernetes:networking.k8s.io/v1:Ingress", "gw", {"spec": {"rules": [{"host": "a.example.com"}],
                                                                   "tls": [{"hosts": ["a.example.com"]}]}}),
      ("kubernetes:core/v1:Service", "lb", {"metadata": {"annotations": {
          "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}}, "spec": {"type": "LoadBalancer"}})],
     ["no spec.tls", "public LoadBalancer Service"]),
    ("tls-on-public-listeners",
     [("gcp:compute/uRLMap:URLMap", "map", {"defaultService": "backend"}),
      ("gcp:compute/targetHttpProxy:TargetHttpProxy", "http", {"urlMap": "map"}, ["map"])],
     [("gcp:compute/uRLMap:URLMap", "redirect", {"defaultUrlRedirect": {"httpsRedirect": True}}),
      ("gcp:compute/targetHttpProxy:TargetHttpProxy", "http", {"urlMap": "redirect"}, ["redirect"])],
     ["TargetHttpsProxy"]),
    ("triton-network-policy", [DEP], [DEP, NP], ["not selected by any NetworkPolicy", "modelfleet-prod"]),
    ("triton-network-policy", [DEP, ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "other-ns",
                                     {**NP[2], "metadata": {"namespace": "default"}})],
     [DEP, ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "deny-all",
            {"metadata": {"namespace": "modelfleet-prod"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})],
     ["allows ingress from the gateway"]),
    ("triton-only-via-gateway", [DEP, NP],
     [DEP, ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "triton-ingress", {**NP[2], "spec": {
         **NP[2]["spec"], "ingress": [
             {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "envoy"}}}],
              "ports": [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 8001}]},
             {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 8002}]}]}})],
     ["skip the gateway", "a peer", "kubernetes.io/metadata.name"]),
    ("triton-network-policy", [DEP, (NP[0], "allow-all", {**NP[2], "spec": {**NP[2]["spec"], "ingress": [{}]}})],
     [DEP, NP], ["allow-all: ingress[0] admits everyone (a rule without `from`", "gateway's podSelector"]),
    ("triton-network-policy",
     [DEP, (NP[0], "ports-only", {**NP[2], "spec": {**NP[2]["spec"], "ingress": [
         NP[2]["spec"]["ingress"][0], {"ports": [{"protocol": "TCP", "port": 8000}]}]}})],
     [DEP, (NP[0], "ports-and-peers", {**NP[2], "spec": {**NP[2]["spec"], "ingress": [
         {"from": NP[2]["spec"]["ingress"][0]["from"], "ports": [{"protocol": "TCP", "port": 8000}]}]}})],
     ["ingress[1] admits everyone (a rule without `from`"]),
    ("triton-network-policy",
     [DEP, (NP[0], "any-namespace", {**NP[2], "spec": {**NP[2]["spec"], "ingress": [
         {"from": [{"namespaceSelector": {}}]}, {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}})],
     [DEP, (NP[0], "prometheus", {**NP[2], "spec": {**NP[2]["spec"], "ingress": [
         {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
         {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["0.0.0.0/1", "128.0.0.0/1"]}}]}]}})],
     ["namespaceSelector: {} (every pod in every namespace)", "ipBlock 0.0.0.0/0 (every address)"]),
    ("no-api-token-in-triton-pods", [DEP],
     [("kubernetes:apps/v1:Deployment", "fraud-detector", deployment(automountServiceAccountToken=False))],
     ["neither the pod nor its ServiceAccount default sets automountServiceAccountToken: false",
      "Kubernetes API token"]),
    ("no-api-token-in-triton-pods",
     [("kubernetes:apps/v1:Deployment", "fraud-detector",
       deployment(serviceAccountName="triton", automountServiceAccountToken=True)), TRITON_SA],
     [("kubernetes:apps/v1:Deployment", "fraud-detector", deployment(serviceAccountName="triton")), TRITON_SA],
     ["the pod sets automountServiceAccountToken: true"]),
    ("nodes-in-private-subnets", PUBLIC_NET + [
        ("aws:eks/nodeGroup:NodeGroup", "nodes", eks_gpu_group(), ["public"])],
     PUBLIC_NET + [("aws:eks/nodeGroup:NodeGroup", "nodes", eks_gpu_group(), ["private"])],
     ["nodes: launches nodes into the public subnet", "sends 0.0.0.0/0 to an internet gateway", "subnetIds"]),
    ("nodes-in-private-subnets",
     [("aws:ec2/subnet:Subnet", "open", {"mapPublicIpOnLaunch": True}),
      ("aws:ec2/subnet:Subnet", "lb", {"tags": {"kubernetes.io/role/elb": "1"}}),
      ("aws:ec2/instance:Instance", "vm", {"instanceType": "g6.2xlarge"}, ["open"]),
      ("aws:autoscaling/group:Group", "asg", {"maxSize": 2}, ["lb"])],
     [("aws:ec2/subnet:Subnet", "closed", {"mapPublicIpOnLaunch": False,
                                           "tags": {"kubernetes.io/role/internal-elb": "1"}}),
      ("aws:ec2/instance:Instance", "vm", {"instanceType": "g6.2xlarge"}, ["closed"])],
     ["it sets mapPublicIpOnLaunch", "subnetId", "tagged kubernetes.io/role/elb=1", "vpcZoneIdentifiers"]),
    # A separate aws.ec2.Route whose gateway id is unknown during preview: the dependency on the IGW decides.
    ("nodes-in-private-subnets",
     [("aws:ec2/internetGateway:InternetGateway", "igw", {}), ("aws:ec2/routeTable:RouteTable", "rt", {}),
      ("aws:ec2/route:Route", "default", {"destinationCidrBlock": "0.0.0.0/0", "gatewayId": UNKNOWN_STRING_VALUE},
       ["rt", "igw"]),
      ("aws:ec2/subnet:Subnet", "s", {}), ("aws:ec2/routeTableAssociation:RouteTableAssociation", "a", {}, ["s", "rt"]),
      ("aws:eks/nodeGroup:NodeGroup", "nodes", eks_gpu_group(), ["s"])],
     [("aws:ec2/natGateway:NatGateway", "nat", {}), ("aws:ec2/routeTable:RouteTable", "rt", {}),
      ("aws:ec2/route:Route", "default", {"destinationCidrBlock": "0.0.0.0/0", "natGatewayId": UNKNOWN_STRING_VALUE},
       ["rt", "nat"]),
      ("aws:ec2/subnet:Subnet", "s", {}), ("aws:ec2/routeTableAssociation:RouteTableAssociation", "a", {}, ["s", "rt"]),
      ("aws:eks/nodeGroup:NodeGroup", "nodes", eks_gpu_group(), ["s"])],
     ["public subnet aws:ec2/subnet:Subnet s"]),
    ("vpc-flow-logs",
     [("aws:ec2/vpc:Vpc", "v", {"cidrBlock": "10.0.0.0/16"}),
      ("aws:ec2/flowLog:FlowLog", "accepted-only", {"trafficType": "ACCEPT"}, ["v"]),
      ("gcp:compute/subnetwork:Subnetwork", "s", {"ipCidrRange": "10.1.0.0/20"})],
     [("aws:ec2/vpc:Vpc", "v", {"cidrBlock": "10.0.0.0/16"}),
      ("aws:ec2/flowLog:FlowLog", "all", {"trafficType": "ALL"}, ["v"]),
      ("gcp:compute/subnetwork:Subnetwork", "s", {"ipCidrRange": "10.1.0.0/20",
                                                   "logConfig": {"aggregationInterval": "INTERVAL_5_SEC"}})],
     ["the VPC has no flow log recording ALL", "the subnetwork has no VPC flow logs"]),
    ("cost-within-budget", [cost(12_500.0)], [cost(9_800.0)],
     ["$12,500.00/month", "budget of $10,000.00/month", "by $2,500.00", "pool gpu-l4"]),
    ("cost-within-budget", [("modelfleet:fleet:Region", "aws-us-east-1", {})], [],
     ["no modelfleet:fleet:Cost resource"]),
    ("triton-scraped-and-alerted", [DEP, SVC], [DEP, SVC, MONITOR, RULE],
     ["not scraped", "not alerted on", "model=fraud-detector"]),
    ("deployer-access-decided",
     [("modelfleet:fleet:DeployerAccess", "deployer-access",
       {"placeholder": True, "privateOnly": True, "publicAccessCidrs": []})],
     [("modelfleet:fleet:DeployerAccess", "deployer-access",
       {"placeholder": False, "privateOnly": False, "publicAccessCidrs": ["34.120.10.0/28"]})],
     ["still the example's placeholder", "private only", "modelfleet:cluster_endpoint.placeholder"]),
    ("gateway-image-released",
     [("modelfleet:fleet:GatewayRelease", "gateway-release",
       {"inspectorImageDigest": "sha256:" + "0" * 64, "regions": ["aws-us-east-1", "gcp-us-central1"]})],
     [("modelfleet:fleet:GatewayRelease", "gateway-release",
       {"inspectorImageDigest": "sha256:" + "0" * 63 + "1", "regions": ["aws-us-east-1", "gcp-us-central1"]})],
     ["inspector_image_digest is the example's placeholder", "aws-us-east-1, gcp-us-central1", "crane digest"]),
    ("triton-scraped-and-alerted", [DEP, SVC, MONITOR, NOT_SLO, slo_rule("fraud-detectorx"),
                                    slo_rule("fraud-detector", ("latency",))],
     [DEP, SVC, MONITOR, NOT_SLO, slo_rule("fraud-detector")],
     ["not alerted on its SLO", "model=fraud-detector and slo=availability"]),
]


def _case_id(case) -> str:
    return f"{case[0]}:{case[1].split(':')[-1] if isinstance(case[1], str) else len(case[1])}"


@pytest.mark.parametrize("case", RESOURCE_CASES, ids=[_case_id(c) for c in RESOURCE_CASES])
def test_resource_policy_flags_the_violation_and_passes_the_fix(case):
    name, t, bad, good, words = case[:5]
    extra = case[5] if len(case) > 5 else {}
    messages = run(name, t, bad)
    assert messages, f"{name} should flag {bad}"
    text = " ".join(messages)
    for word in words:
        assert word in text, f"{word!r} missing from {messages}"
    assert "Fix:" in text, "every message says how to fix it"
    assert run(name, t, good, provider=extra.get("provider_for_good")) == []


@pytest.mark.parametrize("case", STACK_CASES, ids=[_case_id(c) for c in STACK_CASES])
def test_stack_policy_flags_the_violation_and_passes_the_fix(case):
    name, bad, good, words = case
    found = run_stack(name, bad)
    assert found, f"{name} should flag {bad}"
    text = " ".join(m for m, _ in found)
    for word in words:
        assert word in text, f"{word!r} missing from {text}"
    assert "Fix:" in text
    assert run_stack(name, good) == []


def test_every_policy_has_a_violating_and_a_compliant_case():
    covered = {c[0] for c in RESOURCE_CASES} | {c[0] for c in STACK_CASES}
    assert set(POLICIES) == covered


def test_messages_name_the_resource():
    [message] = run("gpu-pools-tainted", "aws:eks/nodeGroup:NodeGroup", eks_gpu_group(taints=False))
    assert message.startswith("aws:eks/nodeGroup:NodeGroup r:")


def test_stack_policies_attribute_violations_to_the_resource():
    [(_, where)] = run_stack("triton-network-policy", [DEP])
    assert where == urn(DEP[0], DEP[1])


# ---------------------------------------------------------------- configuration

def test_per_stack_config_changes_the_verdict():
    group = eks_gpu_group(max_size=12)
    assert run("gpu-count-under-cap", "aws:eks/nodeGroup:NodeGroup", group, {"max_gpus_per_pool": 8})
    assert not run("gpu-count-under-cap", "aws:eks/nodeGroup:NodeGroup", group, {"max_gpus_per_pool": 12})
    h100 = eks_gpu_group(instance="p5.48xlarge", max_size=1)
    assert run("approved-gpu-classes", "aws:eks/nodeGroup:NodeGroup", h100)
    assert not run("approved-gpu-classes", "aws:eks/nodeGroup:NodeGroup", h100,
                   {"approved_gpu_classes": ["nvidia-l4", "nvidia-h100"]})
    assert run("no-world-ingress-except-listeners", "gcp:compute/firewall:Firewall",
               {"sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["8443"]}]})
    assert not run("no-world-ingress-except-listeners", "gcp:compute/firewall:Firewall",
                   {"sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["8443"]}]},
                   {"public_listener_ports": [443, 8443]})
    assert run_stack("cost-within-budget", [cost(5_000, budget=10_000)], {"budget_monthly_usd": 4_000})
    hop2 = {"metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2}}
    assert not run("instance-metadata-protected", LT, hop2, {"max_hop_limit": 2})
    key = {"enableKeyRotation": True, "rotationPeriodInDays": 180}
    assert not run("kms-key-rotation", "aws:kms/key:Key", key)
    assert run("kms-key-rotation", "aws:kms/key:Key", key, {"max_rotation_days": 90})


def test_required_tags_are_inherited_from_the_provider_default_tags():
    assert run("required-tags", "aws:ec2/vpc:Vpc", {"cidrBlock": "10.0.0.0/16"})
    assert not run("required-tags", "aws:ec2/vpc:Vpc", {"cidrBlock": "10.0.0.0/16"}, provider=AWS_PROVIDER)
    assert run("required-tags", "aws:ec2/vpc:Vpc", {"tags": {"team": ""}}, provider=AWS_PROVIDER)  # blanked


def test_unknown_values_during_preview():
    from pulumi_policy.proxy import UnknownValueError
    # A KMS key ARN not known until the key exists still counts as set...
    assert not run("secrets-encrypted-with-customer-key", "aws:eks/cluster:Cluster",
                   {"encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": UNKNOWN_STRING_VALUE}}})
    # ...while a decision that needs an unknown value raises, which the analyzer reports as "can't run in preview".
    with pytest.raises(UnknownValueError):
        run("no-public-ip-on-nodes", "aws:ec2/subnet:Subnet", {"mapPublicIpOnLaunch": UNKNOWN_STRING_VALUE})


def test_gpu_tables_agree_with_the_hardware_catalogue():
    sys.path.insert(0, str(PACK))
    from modelfleet_policies._util import aws_gpu, gcp_gpu

    from modelfleet.catalogue import hardware
    for name, cls in hardware().classes.items():
        if cls.aws:
            expected = None if cls.aws.gpus_per_node == 0 else (name, cls.aws.gpus_per_node)
            assert aws_gpu(cls.aws.instance_type) == expected, cls.aws.instance_type
        if cls.gcp:
            accelerators = [{"type": cls.gcp.accelerator, "count": cls.gcp.gpus_per_node}] if cls.gcp.accelerator else []
            expected = None if cls.gcp.gpus_per_node == 0 else (name, cls.gcp.gpus_per_node)
            assert gcp_gpu(cls.gcp.instance_type, accelerators) == expected, cls.gcp.instance_type


# ---------------------------------------------------------------- the pack as the Pulumi CLI runs it

def test_pack_layout_for_the_pulumi_cli():
    manifest = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    main = ast.parse((PACK / "__main__.py").read_text())
    calls = [n for n in ast.walk(main) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "PolicyPack"]
    assert len(calls) == 1, "__main__.py builds exactly one PolicyPack"
    top = [type(n).__name__ for n in main.body]
    assert set(top) <= {"Expr", "Import", "ImportFrom"}, f"__main__.py only assembles the pack: {top}"


def test_pack_is_self_contained_and_pinned_like_the_project():
    stdlib = set(sys.stdlib_module_names)
    for path in (PACK / "modelfleet_policies").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                root = name.split(".")[0]
                assert root in stdlib or root == "pulumi_policy", f"{path.name} imports {name}"
    pins = dict(line.split("==") for line in (PACK / "requirements.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    project = dict(d.split("==") for d in tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert pins == {"pulumi-policy": project["pulumi-policy"], "pulumi": project["pulumi"]}


def test_pack_shape():
    assert len(POLICIES) >= 15
    for policy in POLICIES.values():
        assert re.fullmatch(r"[a-z0-9-]+", policy.name) and policy.description
        assert policy.enforcement_level is not None


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_stack_policy_config_files_are_valid(stack):
    from modelfleet.review import _settings, config_path
    raw = json.loads(config_path(stack).read_text())
    settings = _settings(tuple(POLICIES.values()), raw, stack)
    spec = yaml.safe_load((PROJECT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    budget = settings["cost-within-budget"][1].get("budget_monthly_usd")
    assert budget is None or budget <= spec["modelfleet:budget_monthly_usd"] * 1.5
    required = settings["required-tags"][1]["required_tags"]
    assert set(required) <= set(spec.get("modelfleet:required_tags", {})) | {"managed-by", "stack"}


def test_bad_policy_config_is_refused_with_the_known_names():
    from modelfleet.review import _settings
    with pytest.raises(PolicyConfigError, match="no policy named gpu-cap; known: "):
        _settings(tuple(POLICIES.values()), {"gpu-cap": "mandatory"}, "x.json")
    with pytest.raises(PolicyConfigError, match="no setting max_gpus; known: max_gpus_per_pool"):
        _settings(tuple(POLICIES.values()), {"gpu-count-under-cap": {"max_gpus": 3}}, "x.json")
    with pytest.raises(PolicyConfigError, match="enforcement level must be one of"):
        _settings(tuple(POLICIES.values()), {"all": "strict"}, "x.json")


# ---------------------------------------------------------------- offline review of the example stacks

def _with(evaluation: Evaluation, *, replace: dict | None = None, add: list[Recorded] = ()) -> Evaluation:
    """A copy of an evaluation with some resources' inputs replaced and others added."""
    replace = replace or {}
    resources = [dataclasses.replace(r, inputs=replace[r.urn]) if r.urn in replace else r for r in evaluation.resources]
    return Evaluation(evaluation.stack, resources + list(add))


def _recorded(stack: str, t: str, name: str, inputs: dict, provider: str | None = None) -> Recorded:
    return Recorded(urn=f"urn:pulumi:{stack}::modelfleet::{t}::{name}", type=t, name=name, parent=None,
                    provider=provider, custom=not t.startswith("modelfleet:"), inputs=inputs)


# The example stacks' marked placeholders: mandatory in staging and prod, advisory in dev (policies/config/dev.json).
PLACEHOLDER_POLICIES = {"deployer-access-decided", "gateway-image-released"}
# Dev and staging are rebuilt at will, so deletion protection (which makes `pulumi destroy` fail) is off there.
DISABLED = {"dev": {"deletion-protection"}, "staging": {"deletion-protection"}, "prod": set()}


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_example_stacks_have_no_mandatory_violation(stack, evaluated):
    """Apart from the marked placeholders, deployer access and the gateway image (mandatory outside dev:
    tests/test_check.py), each flagged once."""
    result = review(evaluated(stack))
    assert result.evaluated == sorted(set(POLICIES) - DISABLED[stack])
    others = [v for v in result.mandatory if v.policy not in PLACEHOLDER_POLICIES]
    assert others == [], "\n".join(f"{v.policy} {v.urn}: {v.message}" for v in others)
    flagged = sorted(v.policy for v in result.mandatory if v.policy in PLACEHOLDER_POLICIES)
    assert flagged == ([] if stack == "dev" else sorted(PLACEHOLDER_POLICIES))
    assert sorted(v.policy for v in result.advisory if v.policy in PLACEHOLDER_POLICIES) == (
        sorted(PLACEHOLDER_POLICIES) if stack == "dev" else [])


def test_review_json_shape_is_deterministic(evaluated):
    first = review(evaluated("dev")).to_json()
    assert set(first) == {"evaluated", "violations"}
    assert all(set(v) == {"policy", "level", "urn", "message"} for v in first["violations"])
    assert review(evaluated("dev")).to_json() == first


def test_levels_follow_the_config(evaluated):
    evaluation = _with(evaluated("dev"), add=[_recorded("dev", "kubernetes:apps/v1:Deployment", "t",
                                                        deployment(image="tritonserver:latest"))])
    assert any(v.policy == "images-pinned-by-digest" for v in review(evaluation).mandatory)
    relaxed = review(evaluation, {"images-pinned-by-digest": "advisory"})
    assert not any(v.policy == "images-pinned-by-digest" for v in relaxed.mandatory)
    assert any(v.policy == "images-pinned-by-digest" for v in relaxed.advisory)
    disabled = review(evaluation, {"images-pinned-by-digest": {"enforcementLevel": "disabled"}})
    assert "images-pinned-by-digest" not in disabled.evaluated


def test_mutated_stack_node_with_public_ip_is_caught(evaluated):
    evaluation = evaluated("prod")
    template = next(r for r in evaluation.resources if r.type == LT)
    bad = {**template.inputs, "networkInterfaces": [{"associatePublicIpAddress": "true"}]}
    result = review(_with(evaluation, replace={template.urn: bad}))
    [v] = [v for v in result.mandatory if v.policy == "no-public-ip-on-nodes"]
    assert v.urn == template.urn and "associatePublicIpAddress is true" in v.message


def test_mutated_stack_untainted_gpu_pool_is_caught(evaluated):
    evaluation = evaluated("prod")
    pools = [r for r in evaluation.resources if r.type in ("aws:eks/nodeGroup:NodeGroup", "gcp:container/nodePool:NodePool")
             and "gpu" in r.name]
    assert {r.type for r in pools} == {"aws:eks/nodeGroup:NodeGroup", "gcp:container/nodePool:NodePool"}
    replace = {}
    for r in pools[:1] + pools[-1:]:
        inputs = json.loads(json.dumps(r.inputs))
        (inputs.get("nodeConfig") or inputs)["taints"] = []
        replace[r.urn] = inputs
    result = review(_with(evaluation, replace=replace))
    flagged = {v.urn: v.message for v in result.mandatory if v.policy == "gpu-pools-tainted"}
    assert set(flagged) == set(replace)
    assert all("no nvidia.com/gpu NoSchedule taint" in m for m in flagged.values())


def test_mutated_stack_node_group_in_public_subnets_is_caught(evaluated):
    """The program's own public subnets are recognised by their route to the internet gateway: a node group moved
    onto them (its subnet_ids, hence its dependencies) fails."""
    evaluation = evaluated("prod")
    subnets = [r for r in evaluation.resources if r.type == "aws:ec2/subnet:Subnet"]
    group = next(r for r in evaluation.resources if r.type == "aws:eks/nodeGroup:NodeGroup")
    private = [d for d in group.dependencies if d in {s.urn for s in subnets}]
    assert private and all("-private-" in u for u in private)
    public = [s.urn for s in subnets if "-public-" in s.urn and s.urn.replace("-public-", "-private-") in private]
    assert len(public) == len(private)
    moved = dataclasses.replace(group, dependencies=tuple(d for d in group.dependencies if d not in private)
                                + tuple(public))
    resources = [moved if r.urn == group.urn else r for r in evaluation.resources]
    result = review(Evaluation(evaluation.stack, resources))
    flagged = [v for v in result.mandatory if v.policy == "nodes-in-private-subnets"]
    assert {v.urn for v in flagged} == {group.urn} and len(flagged) == len(public)
    assert all("sends 0.0.0.0/0 to an internet gateway" in v.message for v in flagged)


def test_mutated_stack_unpinned_image_is_caught(evaluated):
    evaluation = evaluated("prod")
    workloads = [r for r in evaluation.resources if r.type == "kubernetes:apps/v1:Deployment"
                 and "tritonserver" in json.dumps(r.inputs)]
    assert workloads, "prod declares Triton Deployments"
    target = workloads[0]
    inputs = json.loads(json.dumps(target.inputs))
    inputs["spec"]["template"]["spec"]["containers"][0]["image"] = "nvcr.io/nvidia/tritonserver:25.01-py3"
    result = review(_with(evaluation, replace={target.urn: inputs}))
    [v] = [v for v in result.mandatory if v.policy == "images-pinned-by-digest" and v.urn == target.urn]
    assert "'nvcr.io/nvidia/tritonserver:25.01-py3', not pinned by digest" in v.message


def evaluated_regions(evaluation: Evaluation) -> list:
    return [r for r in evaluation.resources if r.type == "modelfleet:fleet:Region"]


def test_deletion_protection_is_mandatory_in_prod_only(evaluated):
    replace = {}
    for stack in ("prod", "dev"):
        clusters = [r for r in evaluated(stack).resources
                    if r.type in ("aws:eks/cluster:Cluster", "gcp:container/cluster:Cluster")]
        assert len(clusters) == len(evaluated_regions(evaluated(stack))) > 0
        replace[stack] = {r.urn: {**r.inputs, "deletionProtection": False} for r in clusters}
    assert {u.split("::")[2].split("$")[-1] for u in replace["prod"]} == {"aws:eks/cluster:Cluster",
                                                                         "gcp:container/cluster:Cluster"}
    prod = review(_with(evaluated("prod"), replace=replace["prod"]))
    flagged = {v.urn for v in prod.mandatory if v.policy == "deletion-protection"}
    assert flagged == set(replace["prod"])
    dev = review(_with(evaluated("dev"), replace=replace["dev"]))
    assert "deletion-protection" not in dev.evaluated and dev.mandatory == []


def test_mutated_stack_over_budget_is_caught(evaluated, project_copy):
    from modelfleet.offline import evaluate

    stack_file = project_copy / "stacks" / "Pulumi.dev.yaml"
    stack_file.write_text(stack_file.read_text().replace("budget_monthly_usd: 6000", "budget_monthly_usd: 100"))
    result = review(evaluate(project_copy, "dev"), PACK / "config" / "dev.json")
    [v] = [v for v in result.mandatory if v.policy == "cost-within-budget"]
    assert "over the budget of $" in v.message and "Fix:" in v.message


def _first_line(process, timeout_s: float) -> bytes:
    """The first line a child writes to its stdout pipe, or a failure naming what came instead, after timeout_s."""
    import selectors
    import time

    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    fd, data = process.stdout.fileno(), b""
    deadline = time.monotonic() + timeout_s
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not selector.select(timeout=left):
            pytest.fail(f"no line on the pack's stdout within {timeout_s} s (got {data!r})")
        chunk = os.read(fd, 4096)
        if not chunk:
            pytest.fail(f"the pack exited ({process.wait()}) before writing its port (got {data!r})")
        data += chunk
    return data.split(b"\n", 1)[0]


def test_the_pack_serves_the_analyzer_protocol_the_cli_speaks():
    """Start policies/__main__.py as the CLI does and talk gRPC to it: info, config, a resource and a stack."""
    import subprocess

    import grpc
    from google.protobuf import empty_pb2, struct_pb2
    from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

    # The pack writes its port to stdout without flushing (pulumi_policy's PolicyPack), so a block-buffered pipe
    # would hold it back forever: run the child unbuffered (-u) whatever PYTHONUNBUFFERED says here, and never wait
    # for the line without a deadline.
    server = subprocess.Popen([sys.executable, "-u", str(PACK / "__main__.py")], stdout=subprocess.PIPE,
                              cwd=PACK.parent.parent)
    try:
        port = int(_first_line(server, timeout_s=60))
        stub = analyzer_pb2_grpc.AnalyzerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
        assert info.name == "modelfleet-policies" and {p.name for p in info.policies} == set(POLICIES)

        def struct(value: dict) -> struct_pb2.Struct:
            s = struct_pb2.Struct()
            s.update(value)
            return s

        config = struct({"max_gpus_per_pool": 4})
        stub.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig={
            "gpu-count-under-cap": analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.ADVISORY, properties=config)}),
            timeout=30)
        group = analyzer_pb2.AnalyzeRequest(type="aws:eks/nodeGroup:NodeGroup", urn=urn("aws:eks/nodeGroup:NodeGroup", "g"),
                                            name="g", properties=struct(eks_gpu_group(taints=False, max_size=6)))
        found = {d.policyName: d for d in stub.Analyze(group, timeout=30).diagnostics}
        assert found["gpu-pools-tainted"].enforcementLevel == analyzer_pb2.MANDATORY
        assert found["gpu-count-under-cap"].enforcementLevel == analyzer_pb2.ADVISORY
        assert "cap of 4" in found["gpu-count-under-cap"].message
        stack = analyzer_pb2.AnalyzeStackRequest(resources=[analyzer_pb2.AnalyzerResource(
            type=t, urn=urn(t, n), name=n, properties=struct(props)) for t, n, props in [cost(20_000.0)]])
        [diag] = [d for d in stub.AnalyzeStack(stack, timeout=30).diagnostics if d.policyName == "cost-within-budget"]
        assert "$20,000.00/month" in diag.message
    finally:
        server.terminate()
        server.wait(timeout=10)
