"""Entry point the Pulumi CLI runs for `--policy-pack policies`: it only assembles the pack.

Constructing `PolicyPack` starts the analyzer's gRPC server and blocks, so nothing else may live here; the
policies are in the importable `modelfleet_policies` package, which `modelfleet.review` also runs offline.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the pack's own directory, however it is launched

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from modelfleet_policies import PACK_NAME, POLICIES  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    enforcement_level=EnforcementLevel.ADVISORY,  # each policy sets its own level; this only covers omissions
    policies=list(POLICIES),
)
