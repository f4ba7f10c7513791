"""Nodes: worker nodes sit in private subnets, and pods cannot take the node's cloud credentials from the
instance metadata service."""

from __future__ import annotations

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ReportViolation, ResourceValidationArgs,
                           ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy)

from ._util import WORLD, as_dict, config, get, items, literal, present, short, truthy

SUBNET = "aws:ec2/subnet:Subnet"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
ROUTE = "aws:ec2/route:Route"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
INTERNET_GATEWAY = "aws:ec2/internetGateway:InternetGateway"
# What launches nodes into subnets, and the prop that names them.
NODE_LAUNCHERS = {
    "aws:eks/nodeGroup:NodeGroup": "subnetIds",
    "aws:autoscaling/group:Group": "vpcZoneIdentifiers",
    "aws:ec2/instance:Instance": "subnetId",
}
# Tags the AWS load balancer controller reads to find the subnets for internet-facing load balancers.
PUBLIC_LB_TAG = "kubernetes.io/role/elb"

# ---------------------------------------------------------------- nodes in private subnets


def _to_internet(route, table_deps: list) -> bool:
    """A default route (0.0.0.0/0 or ::/0) through an internet gateway: the route's gatewayId comes from an
    InternetGateway the table depends on (unknown during preview, so the dependency decides), or is a literal
    `igw-` id."""
    destination = literal(route, "cidrBlock") or literal(route, "destinationCidrBlock") or \
        literal(route, "ipv6CidrBlock") or literal(route, "destinationIpv6CidrBlock")
    if str(destination) not in WORLD or not present(route, "gatewayId"):
        return False
    return any(d.resource_type == INTERNET_GATEWAY for d in table_deps) or \
        str(literal(route, "gatewayId")).startswith("igw-")


def _public_subnets(args: StackValidationArgs) -> dict[str, str]:
    """URN -> why, for every subnet that is public: it routes to an internet gateway, hands out public IPs, or is
    tagged for internet-facing load balancers."""
    public: dict[str, str] = {}
    internet_tables = set()
    for r in args.resources:
        if r.resource_type == ROUTE_TABLE and any(_to_internet(route, r.dependencies)
                                                   for route in items(get(r.props, "routes"))):
            internet_tables.add(r.urn)
        elif r.resource_type == ROUTE and _to_internet(r.props, r.dependencies):
            internet_tables.update(d.urn for d in r.dependencies if d.resource_type == ROUTE_TABLE)
    for r in args.resources:
        if r.resource_type == ASSOCIATION and {d.urn for d in r.dependencies} & internet_tables:
            for d in r.dependencies:
                if d.resource_type == SUBNET:
                    public[d.urn] = "its route table sends 0.0.0.0/0 to an internet gateway"
    for r in args.resources:
        if r.resource_type != SUBNET or r.urn in public:
            continue
        if truthy(literal(r.props, "mapPublicIpOnLaunch")):
            public[r.urn] = "it sets mapPublicIpOnLaunch"
        elif str(as_dict(get(r.props, "tags")).get(PUBLIC_LB_TAG, "")) == "1":
            public[r.urn] = f"it is tagged {PUBLIC_LB_TAG}=1 for internet-facing load balancers"
    return public


def _private_subnets(args: StackValidationArgs, report: ReportViolation) -> None:
    public = _public_subnets(args)
    for r in args.resources:
        prop = NODE_LAUNCHERS.get(r.resource_type)
        if prop is None:
            continue
        for d in r.dependencies:
            if d.urn in public:
                report(f"{short(r.urn)}: launches nodes into the public subnet {short(d.urn)} ({public[d.urn]}), "
                       "so the nodes sit one security-group mistake away from the internet. Fix: give "
                       f"{prop} the private subnets only (egress through NAT; load balancers stay in the public "
                       "ones).", r.urn)


nodes_in_private_subnets = StackValidationPolicy(
    name="nodes-in-private-subnets",
    description="EKS node groups, auto scaling groups and EC2 instances are launched into private subnets only (no "
                "route to an internet gateway, no public IPs on launch, not tagged for internet-facing LBs).",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_private_subnets,
)

# ---------------------------------------------------------------- instance metadata


def _imds(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p, who = args.resource_type, args.props, short(args.urn)
    max_hops = int(config(args, "max_hop_limit", 1))
    if t in ("aws:ec2/launchTemplate:LaunchTemplate", "aws:ec2/instance:Instance"):
        options = get(p, "metadataOptions")
        if str(get(options, "httpEndpoint", default="enabled")) == "disabled":
            return  # no metadata service at all
        # EC2's defaults without metadataOptions: httpTokens "optional" (IMDSv1 on) unless the AMI says otherwise,
        # hop limit 1 (2 on AMIs that declare IMDSv2 support). Only an explicit setting is checked, so say it.
        tokens = str(get(options, "httpTokens", default="optional (the default)"))
        if tokens != "required":
            report(f"{who}: metadataOptions.httpTokens is {tokens}, so IMDSv1 answers any request, including one a "
                   "server-side request forgery makes on a pod's behalf, with the node role's credentials. Fix: "
                   "metadata_options={'http_tokens': 'required', 'http_put_response_hop_limit': 1}.")
        hops = get(options, "httpPutResponseHopLimit")
        if hops is None or int(hops) > max_hops:
            report(f"{who}: metadataOptions.httpPutResponseHopLimit is "
                   f"{hops if hops is not None else 'unset (EC2 picks 1 or 2 by AMI)'}, above {max_hops}: pods (one "
                   "network hop further than the node) can fetch an IMDSv2 token and read the node role's "
                   f"credentials. Fix: http_put_response_hop_limit={max_hops}; pods get their own role through IRSA.")
    elif t == "aws:eks/nodeGroup:NodeGroup" and not present(p, "launchTemplate"):
        report(f"{who}: no launch template, so the nodes' instance metadata settings are EKS's defaults and not "
               "declared here (hop limit and IMDSv1 cannot be checked or enforced). Fix: a launch template with "
               "metadata_options http_tokens='required' and http_put_response_hop_limit=1.")
    elif t == "gcp:container/nodePool:NodePool":
        node = get(p, "nodeConfig")
        mode = get(node, "workloadMetadataConfig", "mode")
        if mode is not None and str(mode) != "GKE_METADATA":
            report(f"{who}: nodeConfig.workloadMetadataConfig.mode is {mode}, so pods read the node service "
                   "account's token from the Compute Engine metadata server. Fix: mode 'GKE_METADATA' (workload "
                   "identity's metadata server).")
        legacy = as_dict(get(node, "metadata")).get("disable-legacy-endpoints")
        if legacy is not None and str(legacy).lower() != "true":
            report(f"{who}: nodeConfig.metadata disable-legacy-endpoints is {legacy!r}: the legacy metadata "
                   "endpoints answer without the Metadata-Flavor header (GCP's IMDSv1). Fix: set it to 'true'.")


instance_metadata_protected = ResourceValidationPolicy(
    name="instance-metadata-protected",
    description="Nodes require IMDSv2 with a hop limit of 1 (AWS), and GKE pools keep the GKE metadata server and "
                "no legacy endpoints, so pods cannot take the node's credentials.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "max_hop_limit": {"type": "integer", "default": 1, "minimum": 1,
                          "description": "Highest httpPutResponseHopLimit allowed (2 lets pods reach IMDS)."},
    }),
    validate=_imds,
)

POLICIES = [nodes_in_private_subnets, instance_metadata_protected]
