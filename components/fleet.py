"""The top of the component tree: one `Region` per region of the plan, each with its own provider."""

from __future__ import annotations

import pulumi

from components.providers import cloud_provider
from modelfleet.plan import FleetPlan, RegionPlan


class Region(pulumi.ComponentResource):
    """Everything modelfleet runs in one cloud region, under one explicit provider."""

    def __init__(self, region: RegionPlan, fleet: FleetPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:fleet:Region", region.key, None, opts)
        self.provider = cloud_provider(region, fleet, pulumi.ResourceOptions(parent=self))
        self.register_outputs({})


def deploy(fleet: FleetPlan) -> list[Region]:
    return [Region(region, fleet) for region in fleet.regions]
