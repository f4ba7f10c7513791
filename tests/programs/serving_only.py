"""A Pulumi program declaring only the serving components, one per region, each with its own Kubernetes provider.

Used by tests/test_serving.py while `components/fleet.py` does not yet instantiate `Serving` in each `Region`
(it needs the cluster's provider and Triton's identity from the infrastructure components).
"""

import pulumi_kubernetes as k8s

from components.serving import Serving
from modelfleet import serving
from modelfleet.program import current_plan

plan = current_plan()
for region in plan.regions:
    provider = k8s.Provider(f"{region.key}-kubernetes", kubeconfig="{}")
    Serving(plan, region, provider, serving.placeholder_identity(region.cloud))
