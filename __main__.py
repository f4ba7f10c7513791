"""The modelfleet Pulumi program: the stack's spec becomes a plan, the plan becomes resources."""

from components.fleet import deploy
from modelfleet.program import current_plan

deploy(current_plan())
