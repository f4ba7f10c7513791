"""modelfleet: production ML models on AWS and GCP, declared once.

The Pulumi-free core: `spec` (typed inputs), `loader` (files and clear errors), `plan` (every decision,
pure), `report` (what a person reads), `cli`. `offline` evaluates the Pulumi program under the SDK's mocks.
"""

__version__ = "0.1.0"
