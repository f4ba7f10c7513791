"""Global routing: the records and health checks the prod program declares, the failover proof (where a lost
region's clients go, whether the receivers hold their SLO), residency under every single-region failure, the
policies on mutated stacks, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfleet.cli import app
from modelfleet.loader import SpecError, load_fleet
from modelfleet.plan import build_plan
from modelfleet.review import review
from modelfleet.routing import failover
from modelfleet.routing.plan import distance_km

PROJECT = Path(__file__).resolve().parent.parent
RECORD, HEALTH = "aws:route53/record:Record", "aws:route53/healthCheck:HealthCheck"
EU = ("aws:eu-", "gcp:europe-")


def _stack_regions(root: Path, stack: str) -> list[str]:
    config = yaml.safe_load((root / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    return [r if isinstance(r, str) else r["region"] for r in config["modelfleet:regions"]]


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# ---------------------------------------------------------------- the declared records (prod, offline program)

def test_every_prod_region_has_a_health_checked_record(evaluated):
    resources = evaluated("prod").resources
    regions = _stack_regions(PROJECT, "prod")
    records = [r for r in resources if r.type == RECORD]
    checks = {r.id: r for r in resources if r.type == HEALTH}
    entries = {r.inputs["name"]: r for r in records if "setIdentifier" not in r.inputs}
    assert sorted(entries) == sorted(f"{ref.replace(':', '-')}.inference.example.com" for ref in regions)
    assert len(checks) == 2 * len(regions)  # two models, a check per model and region
    for ref in regions:
        entry = f"{ref.replace(':', '-')}.inference.example.com"
        routed = [r for r in records if r.inputs.get("setIdentifier") and r.inputs["aliases"][0]["name"] == entry]
        assert routed, f"{ref} is in no routed record"
        for r in routed:
            check = checks[r.inputs["healthCheckId"]].inputs
            assert check["fqdn"] == entry, "a record must carry its own region's check"
    # Every routed record that answers with one region carries a health check: 4 for fraud-detector's latency
    # set, 2 + 4 for sentiment's EU and default sets.
    regional = [r for r in records if r.inputs.get("setIdentifier") and r.inputs["aliases"][0]["name"] in entries]
    assert len(regional) == 4 + 2 + 4
    assert all(r.inputs.get("healthCheckId") for r in regional)


def test_health_checks_probe_each_model_through_its_gateway(evaluated):
    resources = evaluated("prod").resources
    checks = [r.inputs for r in resources if r.type == HEALTH]
    assert len(checks) == 8
    for c in checks:
        assert (c["type"], c["port"], c["enableSni"]) == ("HTTPS", 443, True)
        assert (c["requestInterval"], c["failureThreshold"]) == (30, 3)
        assert re.fullmatch(r"/health/(fraud-detector|sentiment)", c["resourcePath"])
        assert c["fqdn"].endswith(".inference.example.com")
    routes = [r.inputs for r in resources if r.type.endswith("HTTPRoute") and r.name.endswith("health-sentiment")]
    assert len(routes) == 4
    for route in routes:
        rule = route["spec"]["rules"][0]
        assert rule["matches"][0]["path"] == {"type": "Exact", "value": "/health/sentiment"}
        assert rule["filters"][0]["urlRewrite"]["path"]["replaceFullPath"] == "/v2/health/ready"
        assert rule["backendRefs"][0]["name"] == "triton-sentiment"
        assert "sentiment.inference.example.com" in route["spec"]["hostnames"]


def test_records_live_on_the_global_provider_and_latency_keys_are_aws_regions(evaluated):
    resources = evaluated("prod").resources
    dns = [r for r in resources if r.type in (RECORD, HEALTH, "aws:route53/zone:Zone")]
    assert len(dns) > 0 and {r.provider for r in dns} == {"global"}
    aws_regions = {f"{name}" for name in yaml.safe_load((PROJECT / "modelfleet/data/regions.yaml").read_text())["aws"]}
    keys = [p["region"] for r in dns for p in r.inputs.get("latencyRoutingPolicies", [])]
    assert len(keys) == 10 and set(keys) <= aws_regions


def test_the_eu_geolocation_record_never_falls_back_abroad(evaluated):
    records = [r.inputs for r in evaluated("prod").resources if r.type == RECORD]
    [geo] = [r for r in records if r.get("geolocationRoutingPolicies", [{}])[0].get("continent") == "EU"]
    assert geo["aliases"][0]["evaluateTargetHealth"] is False and "healthCheckId" not in geo
    members = [r["aliases"][0]["name"] for r in records if r["name"] == geo["aliases"][0]["name"]]
    assert sorted(members) == ["aws-eu-west-1.inference.example.com", "gcp-europe-west4.inference.example.com"]


# ---------------------------------------------------------------- latency keys

def test_every_catalogue_region_has_a_latency_key_with_a_reason():
    catalogue = yaml.safe_load((PROJECT / "modelfleet/data/regions.yaml").read_text())
    keys = yaml.safe_load((PROJECT / "modelfleet/data/latency_keys.yaml").read_text())
    assert sorted(keys["aws"]) == sorted(catalogue["aws"]) and sorted(keys["gcp"]) == sorted(catalogue["gcp"])
    for name, entry in keys["gcp"].items():
        assert entry["key"] in catalogue["aws"] and len(entry["reason"]) > 20, name
        # The stated key is the nearest catalogue AWS region by the file's own coordinates.
        nearest = min(keys["aws"], key=lambda a: distance_km(tuple(entry["at"]), tuple(keys["aws"][a]["at"])))
        assert entry["key"] == nearest, f"gcp:{name}: nearest AWS region is {nearest}, file says {entry['key']}"


# ---------------------------------------------------------------- the failover proof

def _cpu_fleet(root: Path, us_east_rps: float, central_rps: float, max_replicas: int):
    """fraud-detector on the `cpu` class, whose committed tuning record gives a measured throughput."""
    def change(m):
        m["hardware"] = {"gpu_class": "cpu", "gpus_per_replica": 0}
        m["traffic"] = {"rps": 400, "by_region": {"aws:us-east-1": us_east_rps, "gcp:us-central1": central_rps}}
        m["scaling"] = {"min_replicas": 1, "max_replicas": max_replicas}
    _edit(root / "models/fraud-detector.yaml", change)
    return build_plan(load_fleet(root, "prod"))


def _throughput() -> float:
    return yaml.safe_load((PROJECT / "models/fraud-detector.tuning/cpu.yaml").read_text())["chosen"]["throughput_per_s"]


def test_a_lost_region_goes_to_the_nearest_and_the_receiver_is_sized_from_the_record(project_copy):
    plan = _cpu_fleet(project_copy, 1200, 400, 12)
    result = failover.simulate(plan, "aws:us-east-1")
    fraud = result["models"]["fraud-detector"]
    # N. Virginia's clients: Iowa (latency key Ohio) is nearer than Dublin or the Netherlands.
    assert fraud["moves_to"] == [{"region": "gcp:us-central1", "rps": 1200.0}]
    receiver = fraud["regions"]["gcp:us-central1"]
    assert receiver["rps"] == 1600.0
    assert receiver["replicas_needed"] == math.ceil(1600 / _throughput())
    assert fraud["absorbed"] is True and result["clients_move_s"] == 30 * 3 + 60


def test_a_failure_the_survivors_cannot_absorb_is_a_warning_on_the_plan(project_copy):
    plan = _cpu_fleet(project_copy, 60000, 20000, 6)
    needed = math.ceil(80000 / _throughput())
    assert needed > 6  # the independent expectation: the receiver cannot hold it at 6 replicas
    fraud = failover.simulate(plan, "aws:us-east-1")["models"]["fraud-detector"]
    assert fraud["absorbed"] is False and fraud["regions"]["gcp:us-central1"]["replicas_needed"] == needed
    assert any(w.startswith("losing aws:us-east-1: fraud-detector is not absorbed") for w in plan.warnings)
    # The headroom: replicas added up to max, priced per replica of the cpu class.
    assert fraud["headroom_monthly_usd"] > 0


def _residency_holds(plan) -> int:
    checked = 0
    for ref in [r.ref for r in plan.regions]:
        result = failover.simulate(plan, ref)
        for mr in plan.routing.models:
            resident = mr.residency_of(ref)
            if not resident:
                continue
            moves = [m["region"] for m in result["models"][mr.model]["moves_to"]]
            assert all(m in resident[1] and m.startswith(EU) for m in moves), (ref, mr.model, moves)
            checked += 1
    return checked


def test_residency_holds_in_every_single_region_failure_of_prod():
    plan = build_plan(load_fleet(PROJECT, "prod"))
    assert _residency_holds(plan) == 2  # sentiment, losing either EU region


def test_residency_holds_in_a_three_eu_region_stack(project_copy):
    _edit(project_copy / "stacks/Pulumi.prod.yaml", lambda s: s["config"].update(
        {"modelfleet:regions": ["aws:us-east-1", "aws:eu-west-1", "gcp:europe-west4", "gcp:europe-west1"]}))
    _edit(project_copy / "models/fraud-detector.yaml", lambda m: m.update(
        routing={"residency": {"eu": ["aws:eu-west-1", "gcp:europe-west4", "gcp:europe-west1"]}}))
    plan = build_plan(load_fleet(project_copy, "prod"))
    assert _residency_holds(plan) == 3 + 2  # fraud-detector: three EU regions; sentiment: its two
    # Losing the last EU region of a model's set would leave its clients nowhere rather than abroad.
    _edit(project_copy / "models/sentiment.yaml", lambda m: m.update(routing={"residency": {"eu": ["aws:eu-west-1"]}}))
    plan = build_plan(load_fleet(project_copy, "prod"))
    lost = failover.simulate(plan, "aws:eu-west-1")["models"]["sentiment"]
    assert lost["moves_to"] == [] and lost["absorbed"] is False and "not sent abroad" in lost["reason"]


def test_gateway_fallback_peers_stay_inside_residency():
    plan = build_plan(load_fleet(PROJECT, "prod"))
    sentiment = dict(plan.routing.model("sentiment").fallback)
    assert sentiment["aws:eu-west-1"] == "gcp:europe-west4" and sentiment["gcp:europe-west4"] == "aws:eu-west-1"
    fraud = dict(plan.routing.model("fraud-detector").fallback)
    assert fraud["aws:us-east-1"] == "gcp:us-central1" and len(fraud) == 4


def test_a_residency_region_on_another_continent_is_refused(project_copy):
    _edit(project_copy / "models/sentiment.yaml", lambda m: m.update(
        routing={"residency": {"eu": ["aws:eu-west-1", "aws:us-east-1"]}}))
    with pytest.raises(SpecError) as exc:
        load_fleet(project_copy, "prod")
    [problem] = [p for p in exc.value.problems if p.path.startswith("routing.residency")]
    assert problem.file == "models/sentiment.yaml" and "aws:us-east-1 is in na, not eu" in problem.message


def test_failover_policy_and_canary_records(project_copy):
    _edit(project_copy / "models/fraud-detector.yaml", lambda m: m.update(routing={"policy": "failover"}))
    _edit(project_copy / "models/sentiment.yaml", lambda m: m.update(
        routing={"canary": {"region": "gcp:europe-west4", "percent": 5}}))
    plan = build_plan(load_fleet(project_copy, "prod"))
    fraud = plan.routing.model("fraud-detector")
    assert [(r.failover, r.region) for r in fraud.records] == [("PRIMARY", "aws:us-east-1"),
                                                              ("SECONDARY", "gcp:us-central1")]
    sentiment = plan.routing.model("sentiment")
    weighted = [r for r in sentiment.records if r.policy == "weighted"]
    assert sorted((r.weight, r.region) for r in weighted) == [(5, "gcp:europe-west4"), (95, "")]
    stable = [r.region for r in sentiment.records if r.policy == "latency"]
    assert len(stable) == 3 and "gcp:europe-west4" not in stable


# ---------------------------------------------------------------- policies on mutated stacks

def _mutated(evaluation, change):
    resources = [dataclasses.replace(r, inputs=change(r) or r.inputs) if r.type == RECORD else r
                 for r in evaluation.resources]
    return dataclasses.replace(evaluation, resources=resources)


def _violations(evaluation, policy: str) -> list[str]:
    return [v["message"] for v in review(evaluation).to_json()["violations"] if v["policy"] == policy]


def test_policies_pass_prod(evaluated):
    result = review(evaluated("prod")).to_json()["violations"]
    assert not [v for v in result if v["policy"].startswith("routing-")]


def test_a_region_without_a_health_check_is_caught(evaluated):
    def drop(r):
        if r.inputs.get("setIdentifier") == "gcp-us-central1" and r.inputs["name"].startswith("fraud-detector."):
            return {k: v for k, v in r.inputs.items() if k != "healthCheckId"}
    [message] = _violations(_mutated(evaluated("prod"), drop), "routing-regions-health-checked")
    assert "gcp:us-central1 without a health check" in message and "Fix:" in message


def test_a_residency_set_failing_over_abroad_is_caught(evaluated):
    def abroad(r):
        if r.inputs["name"].startswith("eu.sentiment.") and r.inputs.get("setIdentifier") == "gcp-europe-west4":
            return {**r.inputs, "aliases": [{**r.inputs["aliases"][0], "name": "aws-us-east-1.inference.example.com"}]}

    def evaluates(r):
        if r.inputs.get("setIdentifier") == "geo-eu":
            return {**r.inputs, "aliases": [{**r.inputs["aliases"][0], "evaluateTargetHealth": True}]}
    [message] = _violations(_mutated(evaluated("prod"), abroad), "routing-residency")
    assert "aws:us-east-1, outside EU" in message
    [message] = _violations(_mutated(evaluated("prod"), evaluates), "routing-residency")
    assert "falls back to the default record" in message


def test_a_gateway_falling_back_abroad_from_a_resident_region_is_caught(evaluated):
    """aws:eu-west-1 answers sentiment's EU clients (models/sentiment.yaml); its gateway's fallback Backend moved to
    a US region must be refused for sentiment's two routes there, and for no route of a model without residency."""
    def abroad(r):
        if r.type.endswith(":Backend") and r.name.startswith("aws-eu-west-1-"):
            return {**r.inputs, "spec": {**r.inputs["spec"], "endpoints": [
                {"fqdn": {"hostname": "aws-us-east-1.inference.example.com", "port": 8443}}]}}

    evaluation = evaluated("prod")
    resident = {name for name, spec in ((p.stem, yaml.safe_load(p.read_text())) for p in (PROJECT / "models").glob(
        "*.yaml")) if "aws:eu-west-1" in spec.get("routing", {}).get("residency", {}).get("eu", [])}
    assert resident == {"sentiment"}
    changed = dataclasses.replace(evaluation, resources=[
        dataclasses.replace(r, inputs=abroad(r) or r.inputs) for r in evaluation.resources])
    messages = _violations(changed, "routing-fallback-residency")
    assert len(messages) == 2 * len(resident), messages  # its HTTPRoute and its GRPCRoute
    assert all("sentiment's gateway in aws:eu-west-1" in m and "aws:us-east-1" in m for m in messages)
    assert not _violations(evaluation, "routing-fallback-residency")


# ---------------------------------------------------------------- CLI

def test_plan_fail_region_in_json_and_markdown():
    runner = CliRunner()
    result = runner.invoke(app, ["plan", "--stack", "prod", "--format", "json", "--fail-region", "aws:eu-west-1",
                                 "--root", str(PROJECT)])
    assert result.exit_code == 0, result.output
    routing = json.loads(result.stdout)["routing"]
    assert routing["fail_region"]["failed_region"] == "aws:eu-west-1"
    assert routing["fail_region"]["models"]["sentiment"]["moves_to"][0]["region"] == "gcp:europe-west4"
    assert sorted(routing["failures"]) == sorted(_stack_regions(PROJECT, "prod"))
    result = runner.invoke(app, ["plan", "--stack", "prod", "--format", "markdown", "--fail-region",
                                 "gcp:us-central1", "--root", str(PROJECT)])
    assert "### Global routing" in result.stdout and "losing gcp:us-central1" in result.stdout
    bad = runner.invoke(app, ["plan", "--stack", "prod", "--fail-region", "aws:mars-1", "--root", str(PROJECT)])
    assert bad.exit_code == 2 and "aws:mars-1 is not a routed region" in bad.output


def test_an_existing_zone_is_looked_up_not_created(project_copy):
    from modelfleet.offline import evaluate

    _edit(project_copy / "stacks/Pulumi.staging.yaml", lambda s: s["config"].update(
        {"modelfleet:routing": {"existing_zone": "example.com", "ttl_s": 30,
                                "health_check": {"request_interval_s": 10, "failure_threshold": 2}}}))
    resources = evaluate(project_copy, "staging").resources
    assert not [r for r in resources if r.type == "aws:route53/zone:Zone"]
    records = [r.inputs for r in resources if r.type == RECORD]
    assert records and {r["zoneId"] for r in records} == {r["zoneId"] for r in records if r["zoneId"].startswith("Z0EXISTING")}
    checks = [r.inputs for r in resources if r.type == HEALTH]
    assert len(checks) == 2 * 2 and all((c["requestInterval"], c["failureThreshold"]) == (10, 2) for c in checks)
    plan = build_plan(load_fleet(project_copy, "staging"))
    assert plan.routing.clients_move_s == 10 * 2 + 30
