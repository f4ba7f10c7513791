"""Model Analyzer in and out, as pure functions: the profile config built from a spec, and its results read back.

- `profile_config(...)`: the YAML config of `model-analyzer profile` for one model (constraints from the SLO,
  objectives, search bounds from `tuning:` in the spec, `cpu_only` off GPUs, quick or brute search).
- `parse_inference_csv`, `parse_variant_config`, `parse_checkpoint`: the inference CSV, each variant's
  `config.pbtxt` and the checkpoint JSON, as Model Analyzer 1.58 writes them.
- `select(...)`: the best measured variant meeting the SLO, or the closest when none does.

No subprocesses and no Triton here: unit tests feed these functions recorded outputs of a real run.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Literal

from modelfleet.spec import ModelSpec

SearchMode = Literal["quick", "brute"]
# Short, loose windows keep a search to minutes on a couple of shared cores (see the Triton CPU note);
# perf_analyzer still repeats a window until two of three agree within the stability percentage.
PERF_ANALYZER_FLAGS: dict[str, str | int] = {
    "measurement-mode": "time_windows",
    "measurement-interval": 500,
    "stability-percentage": 50,
    "max-trials": 10,
}
# The latency objective: the lowest p99 among variants giving at least this share of the best throughput.
LATENCY_OBJECTIVE_THROUGHPUT_SHARE = 0.9
DEFAULT_VARIANT = "config_default"
# Throughput still rising: the best point gained at least this share over the next lower concurrency measured.
STILL_RISING_SHARE = 0.05
CONCURRENCY_CEILING = 4096  # the search never extends past what one perf_analyzer drives sensibly

# What Model Analyzer's quick search varies, per backend (its run_config_search_{min,max}_* bounds: max batch
# size, instance count, concurrency). An LLM engine (vllm, tensorrtllm) batches inside one KIND_MODEL instance
# and takes no Triton batch size: only the load is searched. An ensemble is profiled through its steps' models.
QUICK_SEARCHED: dict[str, tuple[str, ...]] = {
    "vllm": ("concurrency",),
    "tensorrtllm": ("concurrency",),
    "ensemble": (),
}
QUICK_SEARCHED_DEFAULT = ("max_batch_size", "instance_count", "concurrency")


@dataclass(frozen=True)
class Settings:
    """The batching and instance settings of one model config variant."""

    max_batch_size: int
    instance_count: int
    dynamic_batching: bool
    max_queue_delay_us: int | None
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Measurement:
    """One row of Model Analyzer's inference table: a variant at one concurrency."""

    variant: str
    concurrency: int
    throughput_per_s: float
    p99_ms: float
    satisfies_constraints: bool | None = None  # Model Analyzer's own verdict, when the CSV gives it
    settings: Settings | None = None

    def meets(self, slo_p99_ms: float) -> bool:
        return self.p99_ms <= slo_p99_ms


@dataclass(frozen=True)
class Selection:
    best: Measurement
    slo_met: bool
    candidates: int  # measurements that met the SLO


# --- the profile config ---------------------------------------------------------------------------------

def powers_of_two(low: int, high: int) -> list[int]:
    out, value = [], 1
    while value <= high:
        if value >= low:
            out.append(value)
        value *= 2
    return out or [low]


def dynamic_batching_tuned(spec: ModelSpec) -> bool:
    """Whether the model's dynamic batching settings are tuned: it batches, and not by sequence."""
    return spec.max_batch_size > 0 and spec.triton.sequence_batching is None and spec.batching.dynamic


def knobs(spec: ModelSpec, mode: SearchMode) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(what Model Analyzer searched, what modelfleet swept itself) for `spec` in `mode`.

    quick: Model Analyzer searches its knobs for the backend (QUICK_SEARCHED), modelfleet then sweeps the queue
    delays (and preferred sizes) of the winner. brute: modelfleet hands Model Analyzer every combination of the
    spec's bounds, and Model Analyzer only searches the concurrency of each."""
    batching = dynamic_batching_tuned(spec)
    queue = (("max_queue_delay_us",) + (("preferred_batch_sizes",) if spec.tuning.preferred_batch_sizes else ())
             if batching else ())
    if mode == "brute":
        swept = (("max_batch_size",) if spec.max_batch_size > 0 else ()) + ("instance_count",) + queue
        return ("concurrency",), swept
    searched = QUICK_SEARCHED.get(spec.backend, QUICK_SEARCHED_DEFAULT)
    if spec.max_batch_size == 0:
        searched = tuple(k for k in searched if k != "max_batch_size")
    return searched, queue


def still_rising(measurements: Iterable[Measurement], best: Measurement) -> bool:
    """Whether `best` is a lower bound: it is its settings' highest measured concurrency and gained at least
    STILL_RISING_SHARE over the next lower one, so more load would likely give more throughput."""
    same = sorted((m for m in merge_repeats(measurements) if m.settings == best.settings),
                  key=lambda m: m.concurrency)
    if not same or same[-1].concurrency != best.concurrency or len(same) < 2:
        return False
    return best.throughput_per_s >= same[-2].throughput_per_s * (1 + STILL_RISING_SHARE)


def record_is_lower_bound(record) -> bool:
    """`still_rising` for a tuning record's chosen point, from its variants table: records written before
    `lower_bound` existed are judged the same way as new ones."""
    def measurement(v) -> Measurement:
        return Measurement(v.variant, v.concurrency, v.throughput_per_s, v.p99_ms, None,
                           Settings(v.max_batch_size, v.instance_count, v.dynamic_batching, v.max_queue_delay_us,
                                    tuple(v.preferred_batch_sizes)))

    return record.lower_bound or still_rising([measurement(v) for v in record.variants], measurement(record.chosen))


def search_space(spec: ModelSpec) -> int:
    """How many model configs a brute-force search over the spec's bounds measures (each at a concurrency sweep)."""
    t = spec.tuning
    batch = len(t.batch_sizes_for(spec.max_batch_size))
    if spec.max_batch_size == 0:
        return len(t.instance_counts)
    if not dynamic_batching_tuned(spec):
        return batch * len(t.instance_counts)
    return batch * len(t.instance_counts) * len(t.queue_delays_us) * max(1, len(t.preferred_batch_sizes))


def brute_parameters(spec: ModelSpec, kind: str) -> dict:
    """`model_config_parameters` for a manual brute search over every bound in `spec.tuning`."""
    t = spec.tuning
    params: dict = {"instance_group": [[{"kind": kind, "count": sorted(set(t.instance_counts))}]]}
    if spec.max_batch_size > 0:
        params["max_batch_size"] = t.batch_sizes_for(spec.max_batch_size)
    if dynamic_batching_tuned(spec):
        dyn: dict = {"max_queue_delay_microseconds": sorted(set(t.queue_delays_us))}
        if t.preferred_batch_sizes:
            dyn["preferred_batch_size"] = [sorted(sizes) for sizes in t.preferred_batch_sizes]
        params["dynamic_batching"] = dyn
    return params


def constraint_ms(p99_ms: float) -> int:
    """The SLO as Model Analyzer's p99 constraint. Model Analyzer reads constraints as whole milliseconds
    (`int(0.5)` is 0, and a 0 ms constraint crashes it with ZeroDivisionError), so the constraint is the SLO
    rounded up, at least 1 ms. It only steers Model Analyzer's own search: `select` judges against the exact SLO."""
    return max(1, math.ceil(p99_ms))


def objectives(spec: ModelSpec) -> dict[str, int]:
    if spec.tuning.objective == "latency":
        return {"perf_throughput": 5, "perf_latency_p99": 5}
    return {"perf_throughput": 10}


def profile_config(
    spec: ModelSpec,
    *,
    mode: SearchMode,
    model_repository: Path,
    work_dir: Path,
    perf_analyzer_path: Path,
    http: str,
    grpc: str,
    metrics_url: str,
    cpu_only: bool,
    model_config_parameters: dict | None = None,
    concurrency: list[int] | None = None,
    triton_server_path: Path | None = None,
) -> dict:
    """The `model-analyzer profile -f` config (remote launch mode unless `triton_server_path` is given).

    `mode="quick"`: Model Analyzer's hill-climbing over max batch size, instance count and concurrency within the
    spec's bounds; `model_config_parameters` may pin single values (e.g. one queue delay). `mode="brute"`: every
    combination of `model_config_parameters` (default: all the spec's bounds), each swept over `concurrency` or,
    without it, over powers of two in the spec's concurrency range until throughput stops growing.
    """
    t = spec.tuning
    model: dict = {
        "cpu_only": cpu_only,
        "constraints": {"perf_latency_p99": {"max": constraint_ms(spec.slo.p99_ms)}},
        "objectives": objectives(spec),
    }
    config: dict = {
        "model_repository": str(model_repository),
        "triton_launch_mode": "local" if triton_server_path else "remote",
        "triton_http_endpoint": http,
        "triton_grpc_endpoint": grpc,
        "triton_metrics_url": metrics_url,
        "client_protocol": "grpc",
        "perf_analyzer_path": str(perf_analyzer_path),
        "perf_analyzer_flags": dict(PERF_ANALYZER_FLAGS),
        "output_model_repository_path": str(work_dir / "output_model_repository"),
        "override_output_model_repository": True,
        "export_path": str(work_dir / "export"),
        "checkpoint_directory": str(work_dir / "checkpoints"),
        "run_config_search_mode": mode,
        "run_config_search_min_concurrency": t.concurrency.min,
        "run_config_search_max_concurrency": t.concurrency.max,
        "collect_cpu_metrics": True,
        "profile_models": {spec.name: model},
    }
    if triton_server_path:
        config["triton_server_path"] = str(triton_server_path)
    kind = "KIND_CPU" if cpu_only else "KIND_GPU"
    if mode == "quick":
        searched, _ = knobs(spec, "quick")
        batch = spec.tuning.batch_sizes_for(spec.max_batch_size) if "max_batch_size" in searched else [1]
        counts = t.instance_counts if "instance_count" in searched else [1]
        config["run_config_search_min_model_batch_size"] = max(1, min(batch))
        config["run_config_search_max_model_batch_size"] = max(1, max(batch))
        config["run_config_search_min_instance_count"] = min(counts)
        config["run_config_search_max_instance_count"] = max(counts)
        if model_config_parameters:
            model["model_config_parameters"] = model_config_parameters
    else:
        model["model_config_parameters"] = model_config_parameters or brute_parameters(spec, kind)
        if concurrency:
            model["parameters"] = {"concurrency": sorted(set(concurrency))}
    return config


# --- reading results -----------------------------------------------------------------------------------

_CSV_COLUMNS = {
    "variant": "Model Config Path",
    "concurrency": "Concurrency",
    "throughput": "Throughput (infer/sec)",
    "p99": "p99 Latency (ms)",
    "satisfies": "Satisfies Constraints",
}


def parse_inference_csv(path: Path) -> list[Measurement]:
    """`results/metrics-model-inference.csv`: one row per (variant, concurrency)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CSV_COLUMNS.values() if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a Model Analyzer inference table (missing columns: {', '.join(missing)})")
        return [
            Measurement(
                variant=row[_CSV_COLUMNS["variant"]],
                concurrency=int(row[_CSV_COLUMNS["concurrency"]]),
                throughput_per_s=float(row[_CSV_COLUMNS["throughput"]]),
                p99_ms=float(row[_CSV_COLUMNS["p99"]]),
                satisfies_constraints=row[_CSV_COLUMNS["satisfies"]].strip().lower() == "yes",
            )
            for row in reader
            if row.get(_CSV_COLUMNS["variant"])
        ]


def _field(text: str, name: str) -> list[str]:
    return re.findall(rf"\b{name}\s*:\s*([A-Za-z0-9_]+)", text)


def _block(text: str, name: str) -> str | None:
    """The body of the first `name { ... }` block (braces balanced), or None."""
    match = re.search(rf"\b{name}\s*{{", text)
    if not match:
        return None
    depth, start = 1, match.end()
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    raise ValueError(f"unbalanced braces after {name}")


def parse_variant_config(text: str) -> Settings:
    """The settings tuning cares about from a variant's `config.pbtxt` (protobuf text format, as Model
    Analyzer writes it). The inference CSV has no dynamic-batching columns: they come from here."""
    mbs = _field(text, "max_batch_size")
    count = 0
    rest = text
    while (group := _block(rest, "instance_group")) is not None:
        counts = _field(group, "count")
        count += int(counts[0]) if counts else 1
        rest = rest[rest.index(group) + len(group):]
    dyn = _block(text, "dynamic_batching")
    delay = None
    sizes: tuple[int, ...] = ()
    if dyn is not None:
        delays = _field(dyn, "max_queue_delay_microseconds")
        delay = int(delays[0]) if delays else 0
        sizes = tuple(int(s) for s in _field(dyn, "preferred_batch_size"))
    return Settings(
        max_batch_size=int(mbs[0]) if mbs else 0,
        instance_count=count or 1,
        dynamic_batching=dyn is not None,
        max_queue_delay_us=delay,
        preferred_batch_sizes=sizes,
    )


def _settings_from_json(config: dict) -> Settings:
    """The same settings from a checkpoint's model config (protobuf JSON: camelCase, int64 as strings)."""
    dyn = config.get("dynamicBatching")
    return Settings(
        max_batch_size=int(config.get("maxBatchSize", 0)),
        instance_count=sum(int(g.get("count", 1)) for g in config.get("instanceGroup", [])) or 1,
        dynamic_batching=dyn is not None,
        max_queue_delay_us=int(dyn.get("maxQueueDelayMicroseconds", 0)) if dyn is not None else None,
        preferred_batch_sizes=tuple(int(s) for s in (dyn or {}).get("preferredBatchSize", [])),
    )


def _metric(measurement: dict, tag: str) -> float | None:
    found = measurement.get("_non_gpu_data_from_tag", {}).get(tag)
    return float(found[1]["_value"]) if found else None


def parse_checkpoint(path: Path, model: str) -> list[Measurement]:
    """Every measurement of `model` in a Model Analyzer checkpoint (`checkpoints/<n>.ckpt`, JSON), with the
    variant's settings. This is what survives an interrupted run: the CSV is only exported at the end."""
    data = json.loads(path.read_text())
    results = data.get("ResultManager.results", {}).get("_results", {}).get(model, {})
    out: list[Measurement] = []
    for variant, (run_config, measurements) in sorted(results.items()):
        settings = None
        for mrc in run_config.get("_model_run_configs", []):
            cfg = mrc.get("_model_config_variant", {}).get("model_config")
            if cfg:
                settings = _settings_from_json(cfg)
                break
        for measured in measurements.values():
            for mcm in measured.get("_model_config_measurements", []):
                params = mcm.get("_model_specific_pa_params", {})
                throughput, p99 = _metric(mcm, "perf_throughput"), _metric(mcm, "perf_latency_p99")
                if throughput is None or p99 is None or params.get("concurrency-range") is None:
                    continue
                out.append(Measurement(variant, int(params["concurrency-range"]), throughput, p99, None, settings))
    return sorted(out, key=lambda m: (m.variant, m.concurrency))


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    found = sorted(checkpoint_dir.glob("*.ckpt"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
    return found[-1] if found else None


def read_results(work_dir: Path, model: str) -> list[Measurement]:
    """All measurements of one Model Analyzer run directory, each with its variant's settings.

    The inference CSV is the table when Model Analyzer finished; an interrupted run has only its checkpoint.
    Settings come from each variant's `config.pbtxt`, else from the checkpoint.
    """
    checkpoint = latest_checkpoint(work_dir / "checkpoints")
    from_checkpoint = parse_checkpoint(checkpoint, model) if checkpoint else []
    settings = {m.variant: m.settings for m in from_checkpoint if m.settings}
    repo = work_dir / "output_model_repository"
    for config in sorted(repo.glob("*/config.pbtxt")):
        settings[config.parent.name] = parse_variant_config(config.read_text())
    csv_path = work_dir / "export" / "results" / "metrics-model-inference.csv"
    rows = parse_inference_csv(csv_path) if csv_path.exists() else from_checkpoint
    return [replace(m, settings=settings.get(m.variant, m.settings)) for m in rows]


# --- choosing --------------------------------------------------------------------------------------------

def merge_repeats(measurements: Iterable[Measurement]) -> list[Measurement]:
    """One figure per (settings, concurrency): the same config measured twice (Model Analyzer's default config in
    each search phase, the quick winner again in the delay pass) counts once, with the mean throughput and the
    worse p99. On noisy machines this keeps one lucky window from becoming the operating point."""
    groups: dict = {}
    for m in measurements:
        key = (m.settings, m.concurrency) if m.settings is not None else (m.variant, m.concurrency)
        groups.setdefault(key, []).append(m)
    merged = []
    for group in groups.values():
        group.sort(key=lambda m: m.variant)
        if len(group) == 1:
            merged.append(group[0])
            continue
        merged.append(replace(group[0], variant="+".join(m.variant for m in group),
                              throughput_per_s=round(sum(m.throughput_per_s for m in group) / len(group), 1),
                              p99_ms=max(m.p99_ms for m in group), satisfies_constraints=None))
    return merged


def select(measurements: Iterable[Measurement], slo_p99_ms: float,
           objective: Literal["throughput", "latency"] = "throughput") -> Selection:
    """The operating point: the measurement with the most throughput whose p99 meets the SLO (`latency`: the
    lowest p99 among those within 10% of that throughput). When none meets the SLO, the closest: the lowest
    p99, then the most throughput. Ties break on fewer instances, then the variant name, for determinism.
    Repeated measurements of the same settings at the same concurrency are merged first (`merge_repeats`)."""
    rows = merge_repeats(m for m in measurements if math.isfinite(m.throughput_per_s) and m.throughput_per_s > 0)
    if not rows:
        raise ValueError("Model Analyzer measured nothing: no variant completed a measurement")

    def instances(m: Measurement) -> int:
        return m.settings.instance_count if m.settings else 0

    meeting = [m for m in rows if m.meets(slo_p99_ms)]
    if not meeting:
        best = min(rows, key=lambda m: (m.p99_ms, -m.throughput_per_s, instances(m), m.variant, m.concurrency))
        return Selection(best, False, 0)
    top = max(m.throughput_per_s for m in meeting)
    if objective == "latency":
        pool = [m for m in meeting if m.throughput_per_s >= LATENCY_OBJECTIVE_THROUGHPUT_SHARE * top]
        best = min(pool, key=lambda m: (m.p99_ms, -m.throughput_per_s, instances(m), m.variant, m.concurrency))
    else:
        best = min(meeting, key=lambda m: (-m.throughput_per_s, m.p99_ms, instances(m), m.variant, m.concurrency))
    return Selection(best, True, len(meeting))
