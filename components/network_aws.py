"""A private VPC for one AWS region: nodes in private subnets, only NAT and load balancers in public ones."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from modelfleet import access
from modelfleet.plan import RegionPlan

HTTPS = 443


class AwsNetwork(pulumi.ComponentResource):
    """VPC over the plan's zones: per zone a private subnet (nodes, endpoints) and a public one (NAT, LBs);
    NAT gateways as the plan lays them out; S3/ECR/STS endpoints so model and image pulls skip NAT; flow logs."""

    def __init__(self, region: RegionPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:aws:Network", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = region.key

        self.vpc = aws.ec2.Vpc(
            key,
            cidr_block=region.cidr,
            # Interface endpoints answer for the public service names only with private DNS on.
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={"Name": key},
            opts=child,
        )
        # CIS: the default security group allows nothing, so nothing lands in it by accident.
        aws.ec2.DefaultSecurityGroup(key, vpc_id=self.vpc.id, tags={"Name": f"{key}-default-deny"}, opts=child)

        self.private_subnets: list[aws.ec2.Subnet] = []
        self.public_subnets: list[aws.ec2.Subnet] = []
        for zone, private_cidr, public_cidr in zip(region.zones, region.private_subnets, region.public_subnets):
            self.private_subnets.append(aws.ec2.Subnet(
                f"{key}-private-{zone}",
                vpc_id=self.vpc.id,
                cidr_block=private_cidr,
                availability_zone=zone,
                map_public_ip_on_launch=False,
                # Internal load balancers land here; cluster tags come with the EKS cluster itself.
                tags={"Name": f"{key}-private-{zone}", "kubernetes.io/role/internal-elb": "1"},
                opts=child,
            ))
            self.public_subnets.append(aws.ec2.Subnet(
                f"{key}-public-{zone}",
                vpc_id=self.vpc.id,
                cidr_block=public_cidr,
                availability_zone=zone,
                # Even here nothing gets a public address by default: NAT gateways use Elastic IPs and load
                # balancers bring their own.
                map_public_ip_on_launch=False,
                tags={"Name": f"{key}-public-{zone}", "kubernetes.io/role/elb": "1"},
                opts=child,
            ))

        igw = aws.ec2.InternetGateway(key, vpc_id=self.vpc.id, tags={"Name": key}, opts=child)
        public_routes = aws.ec2.RouteTable(
            f"{key}-public",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags={"Name": f"{key}-public"},
            opts=child,
        )
        for zone, subnet in zip(region.zones, self.public_subnets):
            aws.ec2.RouteTableAssociation(f"{key}-public-{zone}", subnet_id=subnet.id,
                                          route_table_id=public_routes.id, opts=child)

        self.nat_gateways: list[aws.ec2.NatGateway] = []
        for index in range(region.nat_gateways):
            zone = region.zones[index]
            eip = aws.ec2.Eip(f"{key}-nat-{zone}", domain="vpc", tags={"Name": f"{key}-nat-{zone}"}, opts=child)
            self.nat_gateways.append(aws.ec2.NatGateway(
                f"{key}-{zone}",
                allocation_id=eip.id,
                subnet_id=self.public_subnets[index].id,
                tags={"Name": f"{key}-{zone}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
            ))

        self.private_route_tables: list[aws.ec2.RouteTable] = []
        for zone, subnet, nat_index in zip(region.zones, self.private_subnets, region.nat_routes):
            table = aws.ec2.RouteTable(
                f"{key}-private-{zone}",
                vpc_id=self.vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0",
                                                    nat_gateway_id=self.nat_gateways[nat_index].id)],
                tags={"Name": f"{key}-private-{zone}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(f"{key}-private-{zone}", subnet_id=subnet.id, route_table_id=table.id,
                                          opts=child)
            self.private_route_tables.append(table)

        for service in region.gateway_endpoints:
            aws.ec2.VpcEndpoint(
                f"{key}-{service}",
                vpc_id=self.vpc.id,
                service_name=f"com.amazonaws.{region.region}.{service}",
                vpc_endpoint_type="Gateway",
                route_table_ids=[t.id for t in self.private_route_tables],
                tags={"Name": f"{key}-{service}"},
                opts=child,
            )
        endpoint_sg = aws.ec2.SecurityGroup(
            f"{key}-endpoints",
            vpc_id=self.vpc.id,
            description="HTTPS from inside the VPC to the interface endpoints",
            ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=HTTPS, to_port=HTTPS,
                                                      cidr_blocks=[region.cidr])],
            tags={"Name": f"{key}-endpoints"},
            opts=child,
        )
        for service in region.interface_endpoints:
            aws.ec2.VpcEndpoint(
                f"{key}-{service.replace('.', '-')}",
                vpc_id=self.vpc.id,
                service_name=f"com.amazonaws.{region.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[s.id for s in self.private_subnets],
                security_group_ids=[endpoint_sg.id],
                tags={"Name": f"{key}-{service}"},
                opts=child,
            )

        flow_logs = aws.cloudwatch.LogGroup(
            f"{key}-flow-logs",
            retention_in_days=region.log_retention_days,
            opts=child,
        )
        flow_role = aws.iam.Role(
            f"{key}-flow-logs",
            assume_role_policy=json.dumps(access.assume_role_policy("vpc-flow-logs.amazonaws.com")),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{key}-flow-logs",
            role=flow_role.id,
            policy=flow_logs.arn.apply(lambda arn: json.dumps(access.flow_log_policy(arn))),
            opts=child,
        )
        aws.ec2.FlowLog(
            key,
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=flow_logs.arn,
            iam_role_arn=flow_role.arn,
            tags={"Name": key},
            opts=child,
        )

        self.private_subnet_ids = [s.id for s in self.private_subnets]
        self.register_outputs({
            "vpcId": self.vpc.id,
            "privateSubnetIds": self.private_subnet_ids,
            "publicSubnetIds": [s.id for s in self.public_subnets],
        })
