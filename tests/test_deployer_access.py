"""The deployer's access to the cluster APIs: only addresses a real CI runner's traffic can come from.

The expectation is a list of addresses picked by hand from the IANA special-purpose registry (one address inside
each kind of range), not the table modelfleet.spec uses.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelfleet.spec import EndpointAccess

REFUSED = {
    "203.0.113.0/28": "documentation",  # RFC 5737 TEST-NET-3, the range the examples used to carry
    "198.51.100.7/32": "documentation",  # TEST-NET-2
    "192.0.2.0/24": "documentation",  # TEST-NET-1
    "10.1.0.0/16": "private",
    "172.20.0.0/16": "private",
    "192.168.1.0/24": "private",
    "127.0.0.1/32": "loopback",
    "169.254.169.254/32": "link-local",
    "100.64.0.0/16": "carrier-grade NAT",
    "224.0.0.0/8": "multicast",
    "240.0.0.0/8": "reserved",
    "0.0.0.0/16": "this network",
    "198.18.0.0/15": "benchmarking",
    "203.0.112.0/23": "documentation",  # wider than TEST-NET-3 and containing it
}
ACCEPTED = ["34.120.10.0/28", "52.94.8.7/32", "8.8.8.0/24", "203.0.114.0/24", "11.0.0.0/8"]


@pytest.mark.parametrize("cidr,kind", sorted(REFUSED.items()))
def test_ranges_no_public_egress_comes_from_are_refused(cidr, kind):
    with pytest.raises(ValidationError) as error:
        EndpointAccess(public_access_cidrs=[cidr])
    message = str(error.value)
    assert kind in message and "can never be a deployer's public egress" in message, message


@pytest.mark.parametrize("cidr", ACCEPTED)
def test_public_ranges_are_accepted(cidr):
    assert [str(c) for c in EndpointAccess(public_access_cidrs=[cidr]).public_access_cidrs] == [cidr]


def test_no_cidrs_means_private_endpoints():
    assert EndpointAccess().public_access_cidrs == [] and EndpointAccess().placeholder is False
