"""The tuning record: what `modelfleet tune` measured for one model on one hardware class, as a YAML file.

    models/<model>.tuning/<hardware-class>.yaml      the record (read by the loader, used by the plan)
    models/<model>.tuning/<hardware-class>/          Model Analyzer's plots and inference CSV, kept beside it

The loader globs `models/*.yaml` only, so records never look like model specs. Nothing here measures: a record
is written from a real Model Analyzer run (`modelfleet.tuning.run`) and read back as data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

RECORD_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Strict):
    """One Model Analyzer measurement: a model config variant at one client concurrency."""

    variant: str  # Model Analyzer's name, e.g. fraud-detector_config_3 (prefixed by the search phase)
    max_batch_size: int
    instance_count: int
    dynamic_batching: bool
    max_queue_delay_us: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    concurrency: int
    throughput_per_s: float
    p99_ms: float
    meets_slo: bool


class Hardware(_Strict):
    hardware_class: str
    cpu_model: str
    cores: int
    gpus: tuple[str, ...] = ()
    measured_on: str = "local"  # "local", or the --triton-url the measurements were taken against


class Versions(_Strict):
    triton: str
    model_analyzer: str
    perf_analyzer: str


class Search(_Strict):
    mode: Literal["quick", "brute"]
    variants_measured: int  # distinct model configs measured
    measurements: int  # (config, concurrency) points measured
    space: int  # configs in the brute-force space of the spec's bounds
    duration_s: float
    complete: bool  # false when stopped by --timeout or Ctrl-C before Model Analyzer finished
    perf_analyzer_flags: dict[str, str | int] = Field(default_factory=dict)
    searched_by_model_analyzer: tuple[str, ...] = ()  # the knobs Model Analyzer's own search varied
    swept_by_modelfleet: tuple[str, ...] = ()  # the knobs modelfleet handed it as explicit lists
    # Phases stopped because Model Analyzer revisited measured configs in a loop with no new measurement: the
    # search had converged (complete stays true); see modelfleet.tuning.run.LIVELOCK_SKIPS.
    converged_without_new_measurements: tuple[str, ...] = ()
    concurrency_extended_to: int | None = None  # where the search went past the spec's concurrency range


class TuningRecord(_Strict):
    version: Literal[1] = RECORD_VERSION
    model: str
    hardware_class: str
    created: str  # ISO 8601, UTC
    objective: Literal["throughput", "latency"]
    slo_p99_ms: float
    slo_met: bool  # false: `chosen` is the closest variant and the plan will not size from it by default
    chosen: Variant
    # True when `chosen` is at the highest concurrency measured for its settings with throughput still rising
    # there (after the search extended as far as it could): its throughput is a lower bound, not a capacity.
    lower_bound: bool = False
    variants: tuple[Variant, ...]
    hardware: Hardware
    versions: Versions
    search: Search
    artifacts: tuple[str, ...] = ()  # files kept beside the record, relative to it

    @property
    def throughput_per_replica(self) -> float:
        return self.chosen.throughput_per_s

    @property
    def p99_ms(self) -> float:
        return self.chosen.p99_ms


def record_dir(root: Path, model: str) -> Path:
    return root / "models" / f"{model}.tuning"


def record_path(root: Path, model: str, hardware_class: str) -> Path:
    return record_dir(root, model) / f"{hardware_class}.yaml"


def write_record(record: TuningRecord, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = record.model_dump(mode="json")
    rows = data.pop("variants")
    artifacts = data.pop("artifacts")
    header = (f"# Written by `modelfleet tune {record.model} --hardware {record.hardware_class}` from a real Model "
              f"Analyzer run; do not edit figures by hand.\n")
    # One line per measured variant: the table reads like the CLI's.
    table = "variants:\n" + "".join(
        "- " + yaml.safe_dump(row, default_flow_style=True, sort_keys=False, width=10_000) for row in rows)
    tail = yaml.safe_dump({"artifacts": artifacts}, sort_keys=False, width=120)
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, width=120) + table + tail)
    read_record(path)  # what is written must read back
    return path


def read_record(path: Path) -> TuningRecord:
    """Parse one record; raises pydantic.ValidationError or yaml.YAMLError (the loader turns them into Problems)."""
    return TuningRecord.model_validate(yaml.safe_load(path.read_text()))


def usable(record: TuningRecord, accept_unmet_slo: bool) -> bool:
    """Whether the plan may size replicas (and the renderer take settings) from `record`."""
    return record.slo_met or accept_unmet_slo


# The (model, hardware class) -> record mapping the loader builds and the plan reads.
Records = dict[tuple[str, str], TuningRecord]
RecordPaths = dict[tuple[str, str], str]
