"""Cost: the plan's estimated monthly cost stays under the stack's budget.

The estimate is computed once, by the fleet plan (`modelfleet.plan`, priced from the hardware catalogue), and the
program carries it into the deployment as a `modelfleet:fleet:Cost` component resource whose properties are the
plan's numbers (passed as the component's props *and* registered as its outputs). A stack policy reads that
resource, so `pulumi preview --policy-pack policies` (which sees component outputs) and the offline review (which
sees recorded inputs) judge the same figures with no pricing logic in the pack. Expected properties:

    {"currency": "USD", "monthlyUsd": 9876.5, "budgetMonthlyUsd": 12000,
     "lines": [{"region": "aws-us-east-1", "item": "pool gpu-l4 (g6.2xlarge)", "quantity": 2,
                "hourlyUsdEach": 0.9776, "monthlyUsd": 1427.3}, ...]}
"""

from __future__ import annotations

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ReportViolation, StackValidationArgs,
                           StackValidationPolicy)

from ._util import COST_TYPE, config, get, items, short


def _within_budget(args: StackValidationArgs, report: ReportViolation) -> None:
    costs = [r for r in args.resources if r.resource_type == COST_TYPE]
    ours = [r for r in args.resources if r.resource_type.startswith("modelfleet:")]
    configured = config(args, "budget_monthly_usd", None)
    if not costs:
        if ours:
            report(f"the stack declares modelfleet resources but no {COST_TYPE} resource, so its cost cannot be "
                   f"checked against the budget. Fix: have components/fleet.py create the {COST_TYPE} component from "
                   "the plan (see policies/README.md, 'Cost data').")
        return
    for r in costs:
        monthly = float(get(r.props, "monthlyUsd", default=0))
        declared = get(r.props, "budgetMonthlyUsd")
        limits = [(float(configured), "budget_monthly_usd in the policy config")] if configured is not None else []
        if declared is not None:
            limits.append((float(declared), "the stack's modelfleet:budget_monthly_usd"))
        if not limits:
            report(f"{short(r.urn)}: no budget to check ${monthly:,.2f}/month against. Fix: set "
                   "modelfleet:budget_monthly_usd in the stack, or budget_monthly_usd for this policy.", r.urn)
            continue
        limit, source = min(limits)
        if monthly > limit:
            lines = sorted(items(get(r.props, "lines")), key=lambda l: -float(get(l, "monthlyUsd", default=0)))
            top = "; ".join(f"{get(l, 'region', default='')} {get(l, 'item', default='?')} "
                            f"${float(get(l, 'monthlyUsd', default=0)):,.0f}" for l in lines[:3])
            report(f"{short(r.urn)}: the estimated cost is ${monthly:,.2f}/month, over the budget of ${limit:,.2f}/month "
                   f"({source}) by ${monthly - limit:,.2f}. Largest items: {top or 'n/a'}. Fix: lower min/max "
                   "replicas or move models to cheaper hardware (spot, a smaller GPU class), or raise the budget "
                   "after approval.", r.urn)


cost_within_budget = StackValidationPolicy(
    name="cost-within-budget",
    description="The fleet plan's estimated monthly cost is within the stack's budget.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "budget_monthly_usd": {"type": "number", "exclusiveMinimum": 0,
                               "description": "A budget in USD/month set by finance; the lower of this and the "
                                              "stack's own budget applies."},
    }),
    validate=_within_budget,
)

POLICIES = [cost_within_budget]
