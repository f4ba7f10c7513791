"""Global routing: the Route53 zone, a health check per model and region, and the record sets of
`modelfleet.routing.plan`, on their own AWS provider (Route53 is global; its API lives in us-east-1).

The component takes each region's entry address as an input, so it works from either shape of deployment
(docs/adr/0003-global-routing.md): in one program the addresses are the regions' entry Services
(`RegionEntry` below); in a global stack they are `pulumi.StackReference` outputs of the regional stacks
(`endpoints_from_stacks`). Nothing is computed here: names, policies, keys and intervals come from the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from modelfleet.plan import FleetPlan, RegionPlan
from modelfleet.routing import endpoint
from modelfleet.routing.plan import RecordPlan, RoutingPlan

# Output names a regional stack exports for the global stack (the StackReference contract).
ENTRY_HOSTNAME, ENTRY_IP = "globalEntryHostname", "globalEntryIp"


@dataclass(frozen=True)
class EntryAddress:
    """Where a region's gateway is reached from the internet: an AWS NLB's DNS name, or a GCP LB's address."""

    cloud: str
    region: str  # e.g. us-east-1
    hostname: Any = None  # Input[str], AWS
    ip: Any = None  # Input[str], GCP


class RegionEntry(pulumi.ComponentResource):
    """One region's internet-facing entry to its gateway, and the open health routes Route53 probes."""

    def __init__(self, fleet: FleetPlan, region: RegionPlan, kubernetes: pulumi.ProviderResource,
                 needs: list[pulumi.Resource], opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:routing:RegionEntry", f"{region.key}-global-entry", None, opts)
        from components.gateway import declare

        child = pulumi.ResourceOptions(parent=self, provider=kubernetes, depends_on=needs)
        objects = endpoint.objects(fleet, region)
        self.service = declare(f"{region.key}-global-entry", objects[0], child)
        self.routes = [declare(f"{region.key}-{o['metadata']['name']}", o, child) for o in objects[1:]]
        ingress = self.service.status.apply(lambda s: (s.load_balancer.ingress or [None])[0] if s and s.load_balancer
                                            else None)
        self.address = EntryAddress(
            region.cloud, region.region,
            hostname=ingress.apply(lambda i: i.hostname if i else None) if region.cloud == "aws" else None,
            ip=ingress.apply(lambda i: i.ip if i else None) if region.cloud == "gcp" else None,
        )
        self.register_outputs({ENTRY_HOSTNAME: self.address.hostname, ENTRY_IP: self.address.ip})


def endpoints_from_stacks(stacks: Mapping[str, str]) -> dict[str, EntryAddress]:
    """The scale path: `aws:us-east-1` -> the regional stack `org/modelfleet/prod-aws-us-east-1` that exported
    ENTRY_HOSTNAME / ENTRY_IP (its RegionEntry's outputs)."""
    out = {}
    for ref, stack_name in stacks.items():
        other = pulumi.StackReference(f"entry-{ref.replace(':', '-')}", stack_name=stack_name)
        cloud, region = ref.split(":", 1)
        out[ref] = EntryAddress(cloud, region,
                                hostname=other.get_output(ENTRY_HOSTNAME) if cloud == "aws" else None,
                                ip=other.get_output(ENTRY_IP) if cloud == "gcp" else None)
    return out


class GlobalRouting(pulumi.ComponentResource):
    """Route53: zone (or the existing one), health checks, regional records, each model's record set."""

    def __init__(self, routing: RoutingPlan, entries: Mapping[str, EntryAddress], tags: Mapping[str, str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:routing:GlobalRouting", "global-routing", None, opts)
        self.domain = routing.domain
        missing = sorted(r.region for r in routing.regions if r.region not in entries)
        assert not missing, f"no entry address for {', '.join(missing)}"
        self.provider = aws.Provider("global", region=routing.provider_region,
                                     default_tags=aws.ProviderDefaultTagsArgs(tags=dict(tags)),
                                     opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=self.provider)
        if routing.existing_zone:
            zone = aws.route53.get_zone_output(name=routing.existing_zone, private_zone=False,
                                               opts=pulumi.InvokeOutputOptions(parent=self, provider=self.provider))
            self.zone_id = zone.zone_id
        else:
            self.zone = aws.route53.Zone("zone", name=routing.domain, comment=f"modelfleet {routing.domain}",
                                         opts=child)
            self.zone_id = self.zone.zone_id
        self.health_checks = {
            hc.name: aws.route53.HealthCheck(
                hc.name, type=hc.type, fqdn=hc.fqdn, port=hc.port, resource_path=hc.resource_path,
                request_interval=hc.request_interval, failure_threshold=hc.failure_threshold,
                enable_sni=True,  # SNI = the regional name, which the Gateway's certificate covers
                tags={"Name": hc.name, "modelfleet-model": hc.model, "modelfleet-region": hc.region},
                opts=child)
            for hc in routing.health_checks
        }
        self.regional = {r.region: self._regional(r.region, r.name, entries[r.region], routing.ttl_s, child)
                         for r in routing.regions}
        self.records = []
        for m in routing.models:
            for rec in m.records:
                self.records.append(self._routed(rec, child))
        self.register_outputs({"zoneId": self.zone_id, "names": [m.fqdn for m in routing.models],
                               "healthChecks": len(self.health_checks)})

    def _regional(self, ref: str, name: str, entry: EntryAddress, ttl: int, opts) -> aws.route53.Record:
        key = ref.replace(":", "-")
        if entry.cloud == "aws":
            # An alias to the NLB: Route53 answers with its current addresses, queries to aliases are free.
            nlb_zone = aws.lb.get_hosted_zone_id_output(load_balancer_type="network", region=entry.region,
                                                        opts=pulumi.InvokeOutputOptions(parent=self,
                                                                                        provider=self.provider))
            return aws.route53.Record(f"{key}-entry", zone_id=self.zone_id, name=name, type="A",
                                      aliases=[aws.route53.RecordAliasArgs(name=entry.hostname, zone_id=nlb_zone.id,
                                                                           evaluate_target_health=False)],
                                      opts=opts)
        return aws.route53.Record(f"{key}-entry", zone_id=self.zone_id, name=name, type="A", ttl=ttl,
                                  records=[entry.ip], opts=opts)

    def _routed(self, rec: RecordPlan, opts) -> aws.route53.Record:
        args: dict[str, Any] = {
            "zone_id": self.zone_id, "name": rec.name, "type": "A", "set_identifier": rec.set_identifier,
            "aliases": [aws.route53.RecordAliasArgs(name=rec.alias_name, zone_id=self.zone_id,
                                                    evaluate_target_health=rec.evaluate_target_health)],
        }
        if rec.health_check:
            args["health_check_id"] = self.health_checks[rec.health_check].id
        if rec.policy == "latency":
            args["latency_routing_policies"] = [aws.route53.RecordLatencyRoutingPolicyArgs(region=rec.latency_region)]
        elif rec.policy == "failover":
            args["failover_routing_policies"] = [aws.route53.RecordFailoverRoutingPolicyArgs(type=rec.failover)]
        elif rec.policy == "weighted":
            args["weighted_routing_policies"] = [aws.route53.RecordWeightedRoutingPolicyArgs(weight=rec.weight)]
        elif rec.policy == "geolocation":
            args["geolocation_routing_policies"] = [aws.route53.RecordGeolocationRoutingPolicyArgs(
                continent=None if rec.continent == "*" else rec.continent,
                country="*" if rec.continent == "*" else None)]
        # One resource name per record: the name inside the zone, and its set.
        resource = f"{rec.name.removesuffix('.' + self.domain).replace('.', '-')}-{rec.set_identifier}"
        return aws.route53.Record(resource, **args, opts=opts)


def deploy(fleet: FleetPlan, regions: list) -> GlobalRouting | None:
    """From `components.fleet.deploy`: each Region's entry, then the global records over them (role all), or the
    entry exported for the global stack (role regional)."""
    if fleet.routing is None:
        return None
    entries = {}
    for region in regions:
        entry = RegionEntry(fleet, region.plan, region.kubernetes, [region.gateway],
                            pulumi.ResourceOptions(parent=region))
        entries[region.plan.ref] = entry.address
    if fleet.role == "regional":
        [address] = entries.values()
        pulumi.export(ENTRY_HOSTNAME, address.hostname)
        pulumi.export(ENTRY_IP, address.ip)
        return None
    return GlobalRouting(fleet.routing, entries, dict(fleet.tags))


def deploy_global(fleet: FleetPlan) -> GlobalRouting:
    """The global stack of a split fleet: the same records as role all, over the regional stacks' exports."""
    assert fleet.routing is not None, "the spec refuses role global without routing"
    return GlobalRouting(fleet.routing, endpoints_from_stacks(dict(fleet.region_stacks)), dict(fleet.tags))
