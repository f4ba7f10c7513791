"""Prometheus rules computed from each model's `slo`, `monitoring` and `owner`: the monitoring plan.

SLO alerts are the Google SRE workbook's multiwindow, multi-burn-rate alerts (chapter "Alerting on SLOs", table
5-8): a long window proves the budget is really burning, a short one that it still is (so the alert resets soon
after a fix). Availability is measured at the gateway (upstream 5xx over all answers), latency from the gateway's
histogram (share of requests slower than the p99 target; a p99 SLO leaves 1% of requests as budget).

Every alert carries `model`, `owner` (Alertmanager routes on it) and `severity`; each comes with the promtool
unit-test cases that show it firing and quiet (`modelfleet.monitoring.promtests` writes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelfleet.monitoring import metrics as m
from modelfleet.plan import FleetPlan, cold_start_s
from modelfleet.spec import ModelSpec

# (long window, short window, burn-rate factor, severity): the workbook's table. A factor f spends f/30 of a
# 30-day budget per day: 14.4 in 1h is 2% of the budget, 6 in 6h is 5%, 3 in 1d is 10%, 1 in 3d is 10%.
BURN_WINDOWS = (("1h", "5m", 14.4, "page"), ("6h", "30m", 6.0, "page"),
                ("1d", "2h", 3.0, "ticket"), ("3d", "6h", 1.0, "ticket"))
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
WINDOW_MINUTES = {"5m": 5, "30m": 30, "1h": 60, "2h": 120, "6h": 360, "1d": 1440, "3d": 4320}
BURN_FOR = {"page": "1m", "ticket": "15m"}
LATENCY_OBJECTIVE = 0.99  # p99: 1% of requests may be slower than the target
# Queue time: KEDA adds replicas at a quarter of the p99 target (serving.QUEUE_SHARE_OF_P99); at half of it for
# 10 minutes scaling has not kept up.
QUEUE_ALERT_SHARE_OF_P99 = 0.5
QUEUE_ALERT_FOR = "10m"
TRITON_FAILURE_RATIO = 0.01
RESTARTS_IN_15M = 2  # a model that fails to load makes tritonserver exit (--load-model): restarts
GPU_LOW_PERCENT, GPU_LOW_FOR = 10, "1h"  # a GPU paid for and idle
GPU_HIGH_PERCENT, GPU_HIGH_FOR = 95, "15m"  # saturated: latency follows
RATE_LIMITED_RATIO, RATE_LIMITED_FOR = 0.05, "10m"


@dataclass(frozen=True)
class Case:
    """One promtool alert test: input series (name{labels}, values every minute), evaluated at `eval_minutes`,
    and the label sets (without alertname) of the alerts expected to fire then."""

    description: str
    series: tuple[tuple[str, str], ...]
    eval_minutes: int
    firing: tuple[tuple[tuple[str, str], ...], ...]  # label sets; annotations are the firing rule's
    # How often promtool evaluates the rules: the tested pair's short window for burn rates (so multi-day cases
    # take a dozen steps), every minute elsewhere so `for:` durations are met to the minute.
    eval_interval_minutes: int = 1


@dataclass(frozen=True)
class Rule:
    name: str
    expr: str
    alert: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    for_: str = ""
    annotations: tuple[tuple[str, str], ...] = ()
    cases: tuple[Case, ...] = ()

    def to_dict(self) -> dict:
        out: dict = {("alert" if self.alert else "record"): self.name, "expr": self.expr}
        if self.for_:
            out["for"] = self.for_
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Group:
    name: str
    rules: tuple[Rule, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "rules": [r.to_dict() for r in self.rules]}


@dataclass(frozen=True)
class ModelMonitoring:
    model: str  # Triton's name: the `model` label of Triton's metrics and of every alert
    kube_name: str  # the Kubernetes name its pods and objects carry
    owner: str
    latency_bucket_ms: float  # the gateway histogram bound the latency SLO is measured at
    queue_alert_us: int
    availability_objective: float
    drift: bool
    gpu: bool
    cold_start_s: int
    receivers: tuple[str, ...]  # the spec's extra alert routes
    hourly_usd: float = 0.0  # the plan's cost of the model's replicas in the stack (capacity_json)


@dataclass(frozen=True)
class MonitoringPlan:
    models: tuple[ModelMonitoring, ...]
    groups: tuple[Group, ...]
    warnings: tuple[str, ...] = field(default=())

    def rule_file(self) -> dict:
        """The Prometheus rule file (and the `spec` of a PrometheusRule)."""
        return {"groups": [g.to_dict() for g in self.groups]}

    @property
    def alerts(self) -> tuple[Rule, ...]:
        return tuple(r for g in self.groups for r in g.rules if r.alert)

    @property
    def records(self) -> tuple[Rule, ...]:
        return tuple(r for g in self.groups for r in g.rules if not r.alert)


def num(x: float) -> str:
    """A float as PromQL and promtool read it: full precision, without float noise or a trailing `.0`."""
    text = repr(round(float(x), 12))
    return text[:-2] if text.endswith(".0") else text


def monitoring_plan(plan: FleetPlan) -> MonitoringPlan:
    models = tuple(_model_monitoring(plan, spec) for spec in plan.models)
    groups = [Group("modelfleet-triton", _triton_records())]
    for spec, mm in zip(plan.models, models):
        groups.append(Group(f"modelfleet-{spec.name}-sli", _sli_records(mm)))
        groups.append(Group(f"modelfleet-{spec.name}-alerts", _alerts(spec, mm)))
    warnings = tuple(
        f"{mm.model}: latency SLO measured at the gateway's {mm.latency_bucket_ms:g} ms bucket, stricter than its "
        f"p99 target of {spec.slo.p99_ms:g} ms (Envoy's default histogram buckets)"
        for spec, mm in zip(plan.models, models) if mm.latency_bucket_ms != spec.slo.p99_ms)
    return MonitoringPlan(models, tuple(groups), warnings)


def _hourly_usd(plan: FleetPlan, model: str) -> float:
    from modelfleet.catalogue import hardware
    from modelfleet.tuning.capacity import capacity_json

    return round(capacity_json(plan)["models"][model]["monthly_usd"] / hardware().hours_per_month, 6)


def _model_monitoring(plan: FleetPlan, spec: ModelSpec) -> ModelMonitoring:
    on_gpu = plan.environment != "local" and any(
        p.gpus_per_replica > 0 for r in plan.regions for p in r.placements if p.model == spec.name)
    return ModelMonitoring(
        model=spec.name, kube_name=spec.kube_name, owner=spec.owner, latency_bucket_ms=m.latency_bucket_ms(spec.slo.p99_ms),
        queue_alert_us=int(spec.slo.p99_ms * 1000 * QUEUE_ALERT_SHARE_OF_P99),
        availability_objective=spec.slo.availability, drift=spec.monitoring.drift_detection, gpu=on_gpu,
        cold_start_s=cold_start_s(spec), receivers=tuple(spec.monitoring.alert_routes),
        hourly_usd=_hourly_usd(plan, spec.name),
    )


# --- recording rules --------------------------------------------------------------------------------------

QUEUE_RECORD = "modelfleet:triton_queue_us_per_request:rate5m"
BATCH_RECORD = "modelfleet:triton_batch_size:rate5m"
COMPUTE_RECORD = "modelfleet:triton_compute_us_per_request:rate5m"
SUCCESS_RECORD = "modelfleet:triton_success:rate5m"
FAILURE_RATIO_RECORD = "modelfleet:triton_failure:ratio_rate5m"


# The plan's cost as a series: dashboards divide it by the measured inference rate. A rule, not a number in the
# dashboard, so a traffic change updates a PrometheusRule instead of replacing a ConfigMap.
COST_RECORD = "modelfleet:plan_cost_usd:per_hour"


def availability_record(window: str) -> str:
    return f"modelfleet:slo_availability_errors:ratio_rate{window}"


def latency_record(window: str) -> str:
    return f"modelfleet:slo_latency_slow:ratio_rate{window}"


def requests_record(window: str) -> str:
    return f"modelfleet:gateway_requests:rate{window}"


def _triton_records() -> tuple[Rule, ...]:
    """Per model (Triton's own `model` label), shared by alerts, dashboards and KEDA's reading of the queue."""
    def per_request(counter: str) -> str:
        return (f"sum by (model) (rate({counter}[5m])) / "
                f"sum by (model) (rate({m.TRITON_SUCCESS}[5m]))")
    return (
        Rule(SUCCESS_RECORD, f"sum by (model) (rate({m.TRITON_SUCCESS}[5m]))"),
        Rule(QUEUE_RECORD, per_request(m.TRITON_QUEUE_US)),
        Rule(COMPUTE_RECORD, per_request(m.TRITON_COMPUTE_INFER_US)),
        Rule(BATCH_RECORD, f"sum by (model) (rate({m.TRITON_INFERENCES}[5m])) / "
                           f"sum by (model) (rate({m.TRITON_EXECUTIONS}[5m]))"),
        Rule(FAILURE_RATIO_RECORD, f"sum by (model) (rate({m.TRITON_FAILURE}[5m])) / "
                                   f"(sum by (model) (rate({m.TRITON_FAILURE}[5m])) + "
                                   f"sum by (model) (rate({m.TRITON_SUCCESS}[5m])))"),
    )


def _sli_records(mm: ModelMonitoring) -> tuple[Rule, ...]:
    sel = m.upstream_selector(mm.model, mm.kube_name)
    labels = (("model", mm.model),)
    out = [Rule(COST_RECORD, f"vector({num(mm.hourly_usd)})", labels=labels)]
    for w in WINDOWS:
        answered = f"sum(rate({m.ENVOY_RQ_XX}{{{sel}}}[{w}]))"
        out.append(Rule(requests_record(w), answered, labels=labels))
        out.append(Rule(availability_record(w),
                        f'sum(rate({m.ENVOY_RQ_XX}{{{sel},envoy_response_code_class="5"}}[{w}])) / {answered}',
                        labels=labels))
        out.append(Rule(latency_record(w),
                        f"1 - sum(rate({m.ENVOY_RQ_TIME_BUCKET}{{{sel},{m.le_matcher(mm.latency_bucket_ms)}}}[{w}])) / "
                        f"sum(rate({m.ENVOY_RQ_TIME_COUNT}{{{sel}}}[{w}]))", labels=labels))
    return tuple(out)


# --- alerts -----------------------------------------------------------------------------------------------

def _labels(mm: ModelMonitoring, severity: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"model": mm.model, "owner": mm.owner, "severity": severity, **extra}.items()))


def _alerts(spec: ModelSpec, mm: ModelMonitoring) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    rules += _burn_alerts(mm, "availability", mm.availability_objective, availability_record, _availability_series)
    rules += _burn_alerts(mm, "latency", LATENCY_OBJECTIVE, latency_record, _latency_series)
    rules += [_queue_alert(spec, mm), _failure_alert(mm), _load_failure_alert(mm), _pending_alert(mm),
              _rate_limited_alert(mm)]
    if mm.gpu:
        rules += _gpu_alerts(mm)
    if mm.drift:
        rules += _drift_alerts(spec, mm)
    return tuple(rules)


RPM = 600  # requests per minute in the generated test series (10 rps)


def _counter(segments: list[tuple[int, float]]) -> str:
    """promtool's expanding notation for a counter growing by `inc` per minute for `minutes`, segment after
    segment (one sample a minute, starting at 0)."""
    parts, value, first = [], 0.0, True
    for minutes, inc in segments:
        if first:
            parts.append(f"0+{num(inc)}x{minutes}")
            value, first = inc * minutes, False
        else:
            value += inc
            parts.append(f"{num(value)}+{num(inc)}x{minutes - 1}")
            value += inc * (minutes - 1)
    return " ".join(parts)


def _availability_series(mm: ModelMonitoring, profile: list[tuple[int, float]]) -> tuple[tuple[str, str], ...]:
    base = f'{m.ENVOY_RQ_XX}{{envoy_cluster_name="triton-{mm.model}",envoy_response_code_class='
    return ((base + '"2"}', _counter([(n, RPM * (1 - r)) for n, r in profile])),
            (base + '"5"}', _counter([(n, RPM * r) for n, r in profile])))


def _latency_series(mm: ModelMonitoring, profile: list[tuple[int, float]]) -> tuple[tuple[str, str], ...]:
    # Envoy Gateway's cluster naming (route named after the Kubernetes name), so both schemes are exercised.
    name = f'envoy_cluster_name="httproute/modelfleet-prod/triton-{mm.kube_name}/rule/0"'
    return ((f'{m.ENVOY_RQ_TIME_BUCKET}{{{name},le="{mm.latency_bucket_ms:g}"}}',
             _counter([(n, RPM * (1 - r)) for n, r in profile])),
            (f'{m.ENVOY_RQ_TIME_BUCKET}{{{name},le="+Inf"}}', _counter([(n, RPM) for n, _ in profile])),
            (f'{m.ENVOY_RQ_TIME_COUNT}{{{name}}}', _counter([(n, RPM) for n, _ in profile])))


def _window_average(profile: list[tuple[int, float]], end: int, minutes: int) -> float:
    """The bad share of requests over the last `minutes` before `end` (or since the data began: both rates of a
    ratio are extrapolated alike), for a piecewise-constant profile."""
    minutes = min(minutes, end)
    start, t, bad = end - minutes, 0, 0.0
    for n, r in profile:
        lo, hi = max(t, start), min(t + n, end)
        if hi > lo:
            bad += (hi - lo) * r
        t += n
    return bad / minutes


def _burn_alerts(mm: ModelMonitoring, slo: str, objective: float, record, series) -> list[Rule]:
    budget = 1 - objective
    name = f"Model{slo.capitalize()}BudgetBurn"
    pairs = [(long, short, factor, severity, factor * budget) for long, short, factor, severity in BURN_WINDOWS]

    def annotations(long: str, short: str, factor: float) -> tuple[tuple[str, str], ...]:
        return (("summary", f"{mm.model}: {slo} error budget burning at {factor:g}x over {long} and {short}"),
                ("description", f"At this rate the 30-day {slo} budget ({num(budget * 100)}% of requests) "
                                f"is gone in {30 / factor:.1f} days."))

    def expected(profile: list[tuple[int, float]]) -> tuple:
        end = sum(n for n, _ in profile)
        firing = []
        for long, short, factor, severity, threshold in pairs:
            ratios = [_window_average(profile, end, WINDOW_MINUTES[w]) for w in (long, short)]
            # Keep every generated case clear of its thresholds: rate() extrapolates at window edges.
            assert all(abs(r - threshold) > 0.05 * threshold for r in ratios), (mm.model, slo, profile, long)
            if all(r > threshold for r in ratios):
                firing.append(_labels(mm, severity, slo=slo, long_window=long, short_window=short))
        return tuple(sorted(firing))

    rules = []
    for long, short, factor, severity, threshold in pairs:
        step = WINDOW_MINUTES[short]
        steady = WINDOW_MINUTES[long] + 4 * step  # the tested pair's windows full
        profiles = {
            f"{slo} errors at 1.25x the {long} threshold": [(steady, threshold * 1.25)],
            f"{slo} errors at 0.8x the {long} threshold": [(steady, threshold * 0.8)],
            # Burning at twice the rate, then fixed for twice the short window: the short window lets go.
            f"{slo} fixed {short} x2 ago after burning at 2x the {long} threshold": [
                (steady, min(1.0, threshold * 2)), (2 * step, 0.0)],
        }
        if factor == BURN_WINDOWS[0][2]:
            profiles[f"no {slo} errors"] = [(steady, 0.0)]
        cases = tuple(Case(d, series(mm, p), sum(n for n, _ in p), expected(p), step) for d, p in profiles.items())
        rules.append(Rule(
            name,
            f"{record(long)}{{model=\"{mm.model}\"}} > {num(threshold)}\n"
            f"and\n{record(short)}{{model=\"{mm.model}\"}} > {num(threshold)}",
            alert=True, for_=BURN_FOR[severity],
            labels=_labels(mm, severity, slo=slo, long_window=long, short_window=short),
            annotations=annotations(long, short, factor),
            cases=cases,
        ))
    return rules


def _queue_alert(spec: ModelSpec, mm: ModelMonitoring) -> Rule:
    def series(queue_us: float) -> tuple[tuple[str, str], ...]:
        lbl = f'{{model="{mm.model}",version="1"}}'
        return ((m.TRITON_QUEUE_US + lbl, _counter([(40, RPM * queue_us)])),
                (m.TRITON_SUCCESS + lbl, _counter([(40, RPM)])))
    firing = (_labels(mm, "warning"),)
    return Rule(
        "TritonQueueTimeHigh", f'{QUEUE_RECORD}{{model="{mm.model}"}} > {mm.queue_alert_us}', alert=True,
        for_=QUEUE_ALERT_FOR, labels=_labels(mm, "warning"),
        annotations=(("summary", f"{mm.model}: requests wait over {mm.queue_alert_us} us in Triton's queue "
                                 f"(half the {spec.slo.p99_ms:g} ms p99 target); autoscaling has not kept up"),),
        cases=(Case("queue at 1.5x the limit for 40m", series(mm.queue_alert_us * 1.5), 40, firing),
               Case("queue at 0.5x the limit", series(mm.queue_alert_us * 0.5), 40, ())),
    )


def _failure_alert(mm: ModelMonitoring) -> Rule:
    def series(ratio: float) -> tuple[tuple[str, str], ...]:
        lbl = f'{{model="{mm.model}",version="1"}}'
        return ((m.TRITON_FAILURE + lbl, _counter([(20, RPM * ratio)])),
                (m.TRITON_SUCCESS + lbl, _counter([(20, RPM * (1 - ratio))])))
    return Rule(
        "TritonInferenceFailures", f'{FAILURE_RATIO_RECORD}{{model="{mm.model}"}} > {num(TRITON_FAILURE_RATIO)}',
        alert=True, for_="5m", labels=_labels(mm, "warning"),
        annotations=(("summary", f"{mm.model}: over {TRITON_FAILURE_RATIO:.0%} of inferences fail inside Triton"),),
        cases=(Case("5% failures", series(0.05), 20, (_labels(mm, "warning"),)),
               Case("0.2% failures", series(0.002), 20, ())),
    )


def _load_failure_alert(mm: ModelMonitoring) -> Rule:
    def series(restarts_per_min: float) -> tuple[tuple[str, str], ...]:
        return ((f'{m.KSM_RESTARTS}{{namespace="modelfleet-prod",pod="triton-{mm.kube_name}-7d9f8c6b5-x2x4z",'
                 f'container="tritonserver"}}', _counter([(30, restarts_per_min)])),)
    return Rule(
        "TritonModelLoadFailing",
        f'sum(increase({m.KSM_RESTARTS}{{container="tritonserver",{m.pod_selector(mm.kube_name)}}}[15m])) '
        f'>= {RESTARTS_IN_15M}',
        alert=True, labels=_labels(mm, "page"),
        annotations=(("summary", f"{mm.model}: Triton restarts repeatedly; the model most likely fails to load "
                                 "(see the pod's log)"),),
        cases=(Case("a restart every 3 minutes", series(1 / 3), 30, (_labels(mm, "page"),)),
               Case("no restarts", series(0), 30, ())),
    )


def _pending_alert(mm: ModelMonitoring) -> Rule:
    minutes = -(-mm.cold_start_s // 60)

    def series(pending_minutes: int) -> tuple[tuple[str, str], ...]:
        values = " ".join(["0"] * (minutes + 5 - pending_minutes) + ["1"] * pending_minutes)
        return ((f'{m.KSM_POD_PHASE}{{namespace="modelfleet-prod",pod="triton-{mm.kube_name}-7d9f8c6b5-x2x4z",'
                 f'phase="Pending"}}', values),)
    return Rule(
        "TritonReplicasPending", f'sum({m.KSM_POD_PHASE}{{phase="Pending",{m.pod_selector(mm.kube_name)}}}) > 0',
        alert=True, for_=f"{mm.cold_start_s}s", labels=_labels(mm, "warning"),
        annotations=(("summary", f"{mm.model}: replicas pending longer than the planned cold start "
                                 f"({mm.cold_start_s} s: node, image, model load); no capacity or quota?"),),
        cases=(Case("pending for the whole cold start and more", series(minutes + 3), minutes + 4,
                    (_labels(mm, "warning"),)),
               Case("pending for half the cold start", series(minutes // 2), minutes + 4, ())),
    )


def _rate_limited_alert(mm: ModelMonitoring) -> Rule:
    sel = m.upstream_selector(mm.model, mm.kube_name)

    def series(ratio: float, local: bool = False) -> tuple[tuple[str, str], ...]:
        name = f'envoy_cluster_name="triton-{mm.model}"'
        limited = (f'{m.ENVOY_LOCAL_RATELIMITED}{{envoy_local_http_ratelimit_prefix="modelfleet_rps_{mm.model}"}}'
                   if local else f'{m.ENVOY_RATELIMIT_OVER}{{{name}}}')
        return ((limited, _counter([(30, RPM * ratio)])),
                (f'{m.ENVOY_RQ_XX}{{{name},envoy_response_code_class="2"}}', _counter([(30, RPM * (1 - ratio))])))
    # Either filter may answer 429 (global in the clusters, local on this machine); a missing one counts 0.
    over = (f"((sum(rate({m.ENVOY_RATELIMIT_OVER}{{{sel}}}[5m])) or vector(0)) + "
            f"(sum(rate({m.ENVOY_LOCAL_RATELIMITED}{{{m.local_ratelimit_selector(mm.model)}}}[5m])) or vector(0)))")
    return Rule(
        "GatewayRateLimiting", f"{over} / ({over} + sum(rate({m.ENVOY_RQ_XX}{{{sel}}}[5m]))) > "
                               f"{num(RATE_LIMITED_RATIO)}",
        alert=True, for_=RATE_LIMITED_FOR, labels=_labels(mm, "warning"),
        annotations=(("summary", f"{mm.model}: the gateway answers 429 to over {RATE_LIMITED_RATIO:.0%} of requests; "
                                 "raise gateway.rate_limit_rps or find the caller"),),
        cases=(Case("10% rate limited by the global limit", series(0.1), 30, (_labels(mm, "warning"),)),
               Case("10% rate limited by the local limit", series(0.1, local=True), 30, (_labels(mm, "warning"),)),
               Case("1% rate limited", series(0.01), 30, ())),
    )


def _gpu_alerts(mm: ModelMonitoring) -> list[Rule]:
    def series(percent: float, minutes: int) -> tuple[tuple[str, str], ...]:
        return ((f'{m.DCGM_GPU_UTIL}{{gpu="0",namespace="modelfleet-prod",pod="triton-{mm.kube_name}-7d9f8c6b5-x2x4z"}}',
                 f"{num(percent)}+0x{minutes}"),)
    util = f'avg({m.DCGM_GPU_UTIL}{{{m.pod_selector(mm.kube_name)}}})'
    return [
        Rule("GpuUnderused", f"{util} < {GPU_LOW_PERCENT}", alert=True, for_=GPU_LOW_FOR,
             labels=_labels(mm, "ticket"),
             annotations=(("summary", f"{mm.model}: GPUs under {GPU_LOW_PERCENT}% busy for {GPU_LOW_FOR}; lower "
                                      "min_replicas or share the GPU"),),
             cases=(Case("5% busy for 70m", series(5, 70), 70, (_labels(mm, "ticket"),)),
                    Case("40% busy", series(40, 70), 70, ()))),
        Rule("GpuSaturated", f"{util} > {GPU_HIGH_PERCENT}", alert=True, for_=GPU_HIGH_FOR,
             labels=_labels(mm, "warning"),
             annotations=(("summary", f"{mm.model}: GPUs over {GPU_HIGH_PERCENT}% busy for {GPU_HIGH_FOR}; "
                                      "latency follows, check max_replicas and the node pool's bounds"),),
             cases=(Case("99% busy for 25m", series(99, 25), 25, (_labels(mm, "warning"),)),
                    Case("80% busy", series(80, 25), 25, ()))),
    ]


def _drift_alerts(spec: ModelSpec, mm: ModelMonitoring) -> list[Rule]:
    """A window's statistic is already smoothed over `drift_window` samples: no `for`, but only full windows."""
    mon = spec.monitoring
    rules = []
    for metric, threshold, name in ((m.DRIFT_PSI, mon.drift_psi_threshold, "ModelInputDriftPSI"),
                                    (m.DRIFT_KS, mon.drift_ks_threshold, "ModelInputDriftKS")):
        def series(value: float, samples: int, metric=metric) -> tuple[tuple[str, str], ...]:
            lbl = f'model="{mm.model}",feature="{spec.inputs[0].name}"'
            return ((f"{metric}{{{lbl}}}", f"{num(value)}+0x10"),
                    (f'{m.DRIFT_SAMPLES}{{model="{mm.model}"}}', f"{samples}+0x10"))
        fired = (_labels(mm, "ticket", feature=spec.inputs[0].name),)
        rules.append(Rule(
            name,
            f'max by (model, feature) ({metric}{{model="{mm.model}"}}) > {num(threshold)}\n'
            f'and on (model) {m.DRIFT_SAMPLES}{{model="{mm.model}"}} >= {mon.drift_window}',
            alert=True, labels=_labels(mm, "ticket"),
            annotations=(("summary", f"{mm.model}: an input feature (label feature) drifted from the reference "
                                     f"profile ({metric.rsplit('_', 1)[-1].upper()} over {num(threshold)})"),),
            cases=(Case("drifted over a full window", series(threshold * 2, mon.drift_window), 10, fired),
                   Case("drifted, window not yet full", series(threshold * 2, mon.drift_window // 2), 10, ()),
                   Case("within the threshold", series(threshold / 2, mon.drift_window), 10, ())),
        ))
    return rules
