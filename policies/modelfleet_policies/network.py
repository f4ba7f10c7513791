"""Network: nodes have no public IPs, nothing is open to the internet but the load balancers' listener ports,
cluster API endpoints are private, and every network records its flows."""

from __future__ import annotations

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ReportViolation, ResourceValidationArgs,
                           ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy)

from ._util import WORLD, config, falsy, get, items, literal, present, short, truthy

# ---------------------------------------------------------------- no public IP on any node


def _no_public_ip(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p, who = args.resource_type, args.props, short(args.urn)
    if t == "aws:ec2/launchTemplate:LaunchTemplate":
        for i, nic in enumerate(items(get(p, "networkInterfaces"))):
            if truthy(get(nic, "associatePublicIpAddress")):
                report(f"{who}: networkInterfaces[{i}].associatePublicIpAddress is true, so every node launched from "
                       "this template gets a public IP. Fix: set associate_public_ip_address='false' (or drop the "
                       "network interface block) and keep nodes in private subnets behind NAT.")
    elif t == "aws:ec2/instance:Instance":
        if truthy(get(p, "associatePublicIpAddress")):
            report(f"{who}: associatePublicIpAddress is true. Fix: set associate_public_ip_address=False and place the "
                   "instance in a private subnet; reach it through SSM, not a public address.")
    elif t == "aws:ec2/subnet:Subnet":
        if truthy(get(p, "mapPublicIpOnLaunch")):
            report(f"{who}: mapPublicIpOnLaunch is true, so anything launched here (nodes included) gets a public "
                   "IP. Fix: set map_public_ip_on_launch=False; NAT gateways use Elastic IPs and load balancers "
                   "allocate their own, so no modelfleet subnet needs it.")
    elif t == "gcp:container/cluster:Cluster":
        if not truthy(get(p, "privateClusterConfig", "enablePrivateNodes")):
            report(f"{who}: privateClusterConfig.enablePrivateNodes is not true, so GKE nodes get external IPs. Fix: "
                   "private_cluster_config={'enable_private_nodes': True, 'master_ipv4_cidr_block': '<a /28>'} and "
                   "Cloud NAT for egress.")
    elif t == "gcp:container/nodePool:NodePool":
        if falsy(get(p, "networkConfig", "enablePrivateNodes")):
            report(f"{who}: networkConfig.enablePrivateNodes is false, which gives this pool's nodes external IPs "
                   "even in a private cluster. Fix: remove the override or set enable_private_nodes=True.")
    elif t in ("gcp:compute/instance:Instance", "gcp:compute/instanceTemplate:InstanceTemplate",
               "gcp:compute/regionInstanceTemplate:RegionInstanceTemplate"):
        for i, nic in enumerate(items(get(p, "networkInterfaces"))):
            if items(get(nic, "accessConfigs")) or items(get(nic, "ipv6AccessConfigs")):
                report(f"{who}: networkInterfaces[{i}] has an access config, i.e. an external IP. Fix: remove "
                       "access_configs and use Cloud NAT for egress and IAP for access.")


no_public_ip_on_nodes = ResourceValidationPolicy(
    name="no-public-ip-on-nodes",
    description="Nodes never get a public IP: launch templates, instances, subnets and GKE clusters/pools are private.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_no_public_ip,
)

# ---------------------------------------------------------------- no 0.0.0.0/0 ingress except listener ports

_ALL_PROTOCOLS = ("-1", "all")


def _exposed_ports(from_port, to_port, protocol) -> tuple[int, int]:
    if str(protocol).lower() in _ALL_PROTOCOLS or (from_port is None and to_port is None):
        return 0, 65535
    lo = int(from_port if from_port is not None else to_port)
    return lo, int(to_port if to_port is not None else lo)


def _outside(lo: int, hi: int, allowed: set[int]) -> bool:
    return hi - lo > 1024 or any(port not in allowed for port in range(lo, hi + 1))


def _fmt(lo: int, hi: int) -> str:
    return "all ports" if (lo, hi) == (0, 65535) else (f"port {lo}" if lo == hi else f"ports {lo}-{hi}")


def _world_ingress(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p, who = args.resource_type, args.props, short(args.urn)
    allowed = {int(x) for x in config(args, "public_listener_ports", [80, 443])}
    fix = (f"Fix: open only the load balancer's listener ports ({', '.join(map(str, sorted(allowed)))}) to the "
           "internet; everything else should allow the VPC CIDR or a source security group. To allow another "
           "listener port, add it to public_listener_ports in policies/config/<stack>.json.")

    def check(where: str, cidrs: list, lo: int, hi: int) -> None:
        world = sorted({str(c) for c in cidrs} & set(WORLD))
        if world and _outside(lo, hi, allowed):
            report(f"{who}: {where} allows {', '.join(world)} on {_fmt(lo, hi)}. {fix}")

    if t == "aws:ec2/securityGroup:SecurityGroup":
        for i, rule in enumerate(items(get(p, "ingress"))):
            lo, hi = _exposed_ports(get(rule, "fromPort"), get(rule, "toPort"), get(rule, "protocol"))
            check(f"ingress[{i}]", items(get(rule, "cidrBlocks")) + items(get(rule, "ipv6CidrBlocks")), lo, hi)
    elif t == "aws:ec2/securityGroupRule:SecurityGroupRule":
        if get(p, "type") == "ingress":
            lo, hi = _exposed_ports(get(p, "fromPort"), get(p, "toPort"), get(p, "protocol"))
            check("this ingress rule", items(get(p, "cidrBlocks")) + items(get(p, "ipv6CidrBlocks")), lo, hi)
    elif t == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        lo, hi = _exposed_ports(get(p, "fromPort"), get(p, "toPort"), get(p, "ipProtocol"))
        check("this ingress rule", [c for c in (get(p, "cidrIpv4"), get(p, "cidrIpv6")) if c], lo, hi)
    elif t == "gcp:compute/firewall:Firewall":
        if str(get(p, "direction", default="INGRESS")).upper() != "INGRESS":
            return
        sources = items(get(p, "sourceRanges"))
        for i, allow in enumerate(items(get(p, "allows"))):
            ports = [str(x) for x in items(get(allow, "ports"))]
            if not ports or str(get(allow, "protocol")).lower() in _ALL_PROTOCOLS:
                check(f"allows[{i}]", sources, 0, 65535)
            for spec in ports:
                lo, _, hi = spec.partition("-")
                check(f"allows[{i}]", sources, int(lo), int(hi or lo))


no_world_ingress = ResourceValidationPolicy(
    name="no-world-ingress-except-listeners",
    description="Security groups and firewalls allow 0.0.0.0/0 (or ::/0) only on load-balancer listener ports.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "public_listener_ports": {"type": "array", "items": {"type": "integer"}, "default": [80, 443],
                                  "description": "Ports the internet may reach (the public listeners)."},
    }),
    validate=_world_ingress,
)

# ---------------------------------------------------------------- private cluster endpoints


def _private_endpoint(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p, who = args.resource_type, args.props, short(args.urn)
    if t == "aws:eks/cluster:Cluster":
        vpc = get(p, "vpcConfig")
        public = get(vpc, "endpointPublicAccess", default=True)  # the EKS API defaults it to true
        cidrs = [str(c) for c in items(get(vpc, "publicAccessCidrs"))]
        if not truthy(get(vpc, "endpointPrivateAccess")):
            report(f"{who}: vpcConfig.endpointPrivateAccess is not true, so nodes reach the API server over the "
                   "internet. Fix: vpc_config endpoint_private_access=True.")
        if truthy(public) and (not cidrs or set(cidrs) & set(WORLD)):
            report(f"{who}: the cluster API endpoint is public to "
                   f"{'0.0.0.0/0 (the default when publicAccessCidrs is empty)' if not cidrs else ', '.join(cidrs)}. "
                   "Fix: vpc_config endpoint_public_access=False, or list the admin CIDRs in the stack's "
                   "modelfleet:cluster_endpoint.public_access_cidrs so public_access_cidrs is restricted.")
    elif t == "gcp:container/cluster:Cluster":
        if truthy(get(p, "privateClusterConfig", "enablePrivateEndpoint")):
            return
        if falsy(get(p, "controlPlaneEndpointsConfig", "ipEndpointsConfig", "enabled")):
            return  # DNS-based endpoint only, gated by IAM
        blocks = items(get(p, "masterAuthorizedNetworksConfig", "cidrBlocks"))
        cidrs = [str(get(b, "cidrBlock")) for b in blocks]
        if not get(p, "masterAuthorizedNetworksConfig") or not cidrs or set(cidrs) & set(WORLD):
            report(f"{who}: the control plane has a public endpoint open to "
                   f"{', '.join(cidrs) if cidrs else 'any address'}. Fix: "
                   "private_cluster_config enable_private_endpoint=True, or master_authorized_networks_config with "
                   "only the admin CIDRs (modelfleet:cluster_endpoint.public_access_cidrs).")
        elif truthy(get(p, "masterAuthorizedNetworksConfig", "gcpPublicCidrsAccessEnabled")):
            report(f"{who}: masterAuthorizedNetworksConfig.gcpPublicCidrsAccessEnabled lets every Google Cloud "
                   "public IP reach the control plane. Fix: set gcp_public_cidrs_access_enabled=False.")


private_cluster_endpoint = ResourceValidationPolicy(
    name="private-cluster-endpoint",
    description="EKS and GKE control-plane endpoints are private, or public only to listed admin CIDRs.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_private_endpoint,
)

# ---------------------------------------------------------------- flow logs

VPC = "aws:ec2/vpc:Vpc"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"
GCP_SUBNET = "gcp:compute/subnetwork:Subnetwork"
# REJECT alone still records what the security groups stopped (CIS AWS 3.9); ACCEPT alone misses the attacks.
_RECORDING = ("ALL", "REJECT")


def _flow_logs(args: StackValidationArgs, report: ReportViolation) -> None:
    logs = [r for r in args.resources if r.resource_type == FLOW_LOG]
    for r in args.resources:
        if r.resource_type == VPC:
            # A flow log names its VPC by id (an output of the VPC, so a dependency) or by a literal id.
            mine = [f for f in logs if r.urn in {d.urn for d in f.dependencies}
                    and str(literal(f.props, "trafficType")) in _RECORDING]
            if not mine:
                report(f"{short(r.urn)}: the VPC has no flow log recording ALL (or REJECT) traffic, so nothing "
                       "records who talked to the nodes when an incident needs it. Fix: aws.ec2.FlowLog(vpc_id=vpc.id, "
                       "traffic_type='ALL', log_destination_type='cloud-watch-logs', ...) with a retention set on its "
                       "log group.", r.urn)
        elif r.resource_type == GCP_SUBNET:
            if not present(r.props, "logConfig"):  # the provider's only switch: logConfig set = flow logs on
                report(f"{short(r.urn)}: the subnetwork has no VPC flow logs (logConfig is unset). Fix: "
                       "log_config={'aggregation_interval': 'INTERVAL_5_SEC', 'flow_sampling': 0.5, 'metadata': "
                       "'INCLUDE_ALL_METADATA'}.", r.urn)


vpc_flow_logs = StackValidationPolicy(
    name="vpc-flow-logs",
    description="Every AWS VPC has a flow log recording ALL (or REJECT) traffic; every GCP subnetwork has flow "
                "logs (logConfig).",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_flow_logs,
)

POLICIES = [no_public_ip_on_nodes, no_world_ingress, private_cluster_endpoint, vpc_flow_logs]
