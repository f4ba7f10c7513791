"""The second layer of failover: a region's gateway sends its model traffic to the next region's gateway when its
own Triton is unhealthy, so clients that DNS already sent here are not lost while Route53 notices.

Pure: it rewrites the local Envoy bootstrap (`gateway.envoy_config.envoy_bootstrap`) with the settings below;
the cloud declares the same numbers in Envoy Gateway's BackendTrafficPolicy (`cloud_policy`).

- The Triton clusters get priority levels: 0 = this region's Triton, 1 = the peer region's gateway. Envoy moves
  load to priority 1 as priority 0's healthy share drops (all of it when none is healthy), judged by an active
  health check (Triton's readiness) and outlier detection (consecutive 5xx / gateway errors eject a host).
- Requests that never reached Triton (connection refused, reset before the request was sent) are retried once on
  the other priority: safe even for inference, and it closes the gap before the health check has noticed.
- Cross-region traffic is authenticated with mutual TLS: each region's gateway holds a certificate from the
  fleet's peer CA and presents it to the peer's `peer` listener, which admits only that CA's certificates and
  routes only to its own Triton (never onward: no loops). Why not a per-region API key: the client's key is
  stripped by the first gateway (Triton never sees it), and a gateway key would make the peer count every
  failed-over tenant as one tenant; mTLS authenticates the gateway itself and keeps the first gateway's tenant
  header, which the peer trusts only on that listener.
- The gateway's own health paths stay on this region's Triton: Route53's health check must see this region's
  state, not the peer's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from modelfleet.gateway.envoy_config import TYPE

PEER_SAN_SUFFIX = ".peer.modelfleet"
HEALTH_PATH = "/v2/health/ready"


@dataclass(frozen=True)
class FailoverSettings:
    """One set of numbers for the local Envoy and the cloud's BackendTrafficPolicy."""

    health_interval_s: float = 1.0
    health_timeout_s: float = 0.5
    unhealthy_threshold: int = 2
    healthy_threshold: int = 2
    consecutive_5xx: int = 3
    consecutive_gateway_errors: int = 3
    outlier_interval_s: float = 1.0
    base_ejection_s: float = 5.0
    retries: int = 1


SETTINGS = FailoverSettings()


@dataclass(frozen=True)
class PeerTls:
    """Files of this region's peer certificate (server and client), its key, and the fleet's peer CA."""

    ca: str
    cert: str
    key: str


def peer_name(region: str) -> str:
    return f"{region.replace(':', '-')}{PEER_SAN_SUFFIX}"


def _s(seconds: float) -> str:
    return f"{seconds:g}s"


def _tls_context(tls: PeerTls, san: dict, alpn: list[str]) -> dict:
    return {
        "tls_certificates": [{"certificate_chain": {"filename": tls.cert}, "private_key": {"filename": tls.key}}],
        "validation_context": {"trusted_ca": {"filename": tls.ca},
                               "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": san}]},
        "alpn_protocols": alpn,
    }


def _failover_cluster(base: dict, peer_port: int, peer: str, tls: PeerTls, http2: bool,
                      settings: FailoverSettings) -> dict:
    cluster = copy.deepcopy(base)
    local = cluster["load_assignment"]["endpoints"][0]
    local["priority"] = 0
    cluster["load_assignment"]["endpoints"].append({"priority": 1, "lb_endpoints": [{
        "endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": peer_port}},
                     "hostname": peer},
        "metadata": {"filter_metadata": {"envoy.transport_socket_match": {"peer": True}}}}]})
    cluster["transport_socket_matches"] = [{
        "name": "peer-mtls", "match": {"peer": True},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": peer,
            "common_tls_context": _tls_context(tls, {"exact": peer}, ["h2"] if http2 else ["http/1.1"])}}}]
    cluster["outlier_detection"] = {
        "consecutive_5xx": settings.consecutive_5xx,
        "consecutive_gateway_failure": settings.consecutive_gateway_errors,
        "enforcing_consecutive_gateway_failure": 100,
        "interval": _s(settings.outlier_interval_s),
        "base_ejection_time": _s(settings.base_ejection_s),
        "max_ejection_percent": 100,
    }
    check = {"timeout": _s(settings.health_timeout_s), "interval": _s(settings.health_interval_s),
             # Envoy checks an idle cluster only every 60 s by default: the peer priority is idle until it is
             # needed, and a peer that was down at start would stay "unhealthy" for a minute.
             "no_traffic_interval": _s(settings.health_interval_s),
             "unhealthy_interval": _s(settings.health_interval_s),
             "unhealthy_threshold": settings.unhealthy_threshold, "healthy_threshold": settings.healthy_threshold}
    # Triton's HTTP readiness; its gRPC port answers the standard grpc.health.v1 service.
    check.update({"grpc_health_check": {}} if http2 else {"http_health_check": {"path": HEALTH_PATH}})
    cluster["health_checks"] = [check]
    return cluster


def _retry_policy(settings: FailoverSettings) -> dict:
    return {
        # Only failures before the request reached Triton: inference is not repeated behind a client's back.
        "retry_on": "connect-failure,refused-stream,reset-before-request",
        "num_retries": settings.retries,
        "retry_priority": {"name": "envoy.retry_priorities.previous_priorities", "typed_config": {
            "@type": TYPE + "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
            "update_frequency": 1}},
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": TYPE + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": 3,
    }


def _peer_listener(port: int, tls: PeerTls) -> dict:
    hcm = {
        "@type": TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "peer",
        "codec_type": "AUTO",
        "route_config": {"name": "peer", "virtual_hosts": [{"name": "peer", "domains": ["*"], "routes": [
            {"match": {"prefix": "/", "grpc": {}}, "route": {"cluster": "triton_grpc_local", "timeout": "60s"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "triton_http_local", "timeout": "60s"}},
        ]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": TYPE + "envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "name": "peer",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": True,
                "common_tls_context": _tls_context(tls, {"suffix": PEER_SAN_SUFFIX}, ["h2", "http/1.1"])}},
            "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def with_failover(bootstrap: dict, *, peer_listen_port: int, peer_port: int, peer_region: str, tls: PeerTls,
                  settings: FailoverSettings = SETTINGS) -> dict:
    """The gateway's bootstrap with the peer region as priority 1 behind its Triton clusters, and this region's
    own mTLS `peer` listener on `peer_listen_port`."""
    out = copy.deepcopy(bootstrap)
    resources = out["static_resources"]
    peer = peer_name(peer_region)
    # Every cluster in front of Triton fails over: the shared ones (health paths, the peer listener keep a _local
    # copy) and the per-model ones the model routes use (`triton-<model>[/grpc]`, for per-model metrics).
    for cluster in list(resources["clusters"]):
        name = cluster["name"]
        if name not in ("triton_http", "triton_grpc") and not name.startswith("triton-"):
            continue
        if name in ("triton_http", "triton_grpc"):
            local = copy.deepcopy(cluster)
            local["name"] = local["load_assignment"]["cluster_name"] = f"{name}_local"
            resources["clusters"].append(local)
        http2 = name == "triton_grpc" or name.endswith("/grpc")
        resources["clusters"][resources["clusters"].index(cluster)] = _failover_cluster(
            cluster, peer_port, peer, tls, http2, settings)
    for listener in resources["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for vhost in hcm["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                if "metadata" in route:  # a model route
                    route["route"]["retry_policy"] = _retry_policy(settings)
                else:  # a health path: this region's own Triton only
                    route["route"]["cluster"] += "_local"
    resources["listeners"].append(_peer_listener(peer_listen_port, tls))
    return out
