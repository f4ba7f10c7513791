"""Drift sampling inside the gateway's inspection (ext_proc) service: a share of each drift-watched model's
accepted requests (`monitoring.drift_sample_rate`) feeds a sliding window (`monitoring.drift_window` requests),
and Prometheus reads PSI and KS per feature (`modelfleet.monitoring.metrics.DRIFT_*`) at scrape time.

Sampling is every n-th request (n = round(1 / rate)), not random: the same traffic gives the same windows, and
the cost per request is one counter increment for the requests not sampled. KServe v2 JSON bodies are sampled;
binary-data and gRPC bodies are not decoded here (they pass uncounted).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelfleet.monitoring import metrics as m
from modelfleet.monitoring.drift import DriftWindow, Profile, profile_path
from modelfleet.spec import ModelSpec

log = logging.getLogger(__name__)


class DriftSampler(Collector):
    def __init__(self, windows: dict[str, tuple[DriftWindow, int, ModelSpec]]):
        self.windows = windows  # model -> (window, every n-th request, spec)
        self.seen = dict.fromkeys(windows, 0)
        self.lock = threading.Lock()

    @classmethod
    def for_models(cls, models: tuple[ModelSpec, ...], models_dir: Path) -> "DriftSampler":
        """Every model with `monitoring.drift_detection` and a committed profile; the others are not sampled."""
        windows = {}
        for spec in models:
            path = profile_path(models_dir, spec.name)
            if not spec.monitoring.drift_detection:
                continue
            if not path.exists():
                log.warning("%s: drift_detection is on but %s is missing (modelfleet profile %s --data ...)",
                            spec.name, path, spec.name)
                continue
            every = max(1, round(1 / spec.monitoring.drift_sample_rate))
            windows[spec.name] = (DriftWindow(Profile.from_json(path.read_text()), spec.monitoring.drift_window),
                                  every, spec)
        return cls(windows)

    def observe_http(self, model: str, body: bytes) -> None:
        entry = self.windows.get(model)
        if entry is None:
            return
        window, every, spec = entry
        with self.lock:
            self.seen[model] += 1
            if self.seen[model] % every:
                return
        try:
            inputs = json.loads(body).get("inputs", [])
        except (ValueError, AttributeError):
            return  # binary-data bodies: not sampled
        by_name = {t.get("name"): t for t in inputs if isinstance(t, dict)}
        with self.lock:
            for tensor in spec.inputs:
                data = by_name.get(tensor.name, {}).get("data")
                if data is None:
                    continue
                if tensor.dtype == "BYTES":
                    window.add_text(tensor.name, [str(v) for v in np.ravel(np.array(data, dtype=object))])
                    continue
                rows = np.asarray(data, dtype=float).reshape(-1, max(1, int(np.prod(tensor.dims))))
                names = [tensor.name] if rows.shape[1] == 1 else [f"{tensor.name}[{i}]" for i in range(rows.shape[1])]
                for i, feature in enumerate(names):
                    window.add_numeric(feature, rows[:, i])

    def collect(self):
        psi = GaugeMetricFamily(m.DRIFT_PSI, "Population stability index of a feature's sliding window against "
                                             "the model's reference profile", labels=["model", "feature"])
        ks = GaugeMetricFamily(m.DRIFT_KS, "Kolmogorov-Smirnov statistic of a feature's sliding window against "
                                           "the reference profile", labels=["model", "feature"])
        samples = GaugeMetricFamily(m.DRIFT_SAMPLES, "Sampled requests in the model's current drift window",
                                    labels=["model"])
        with self.lock:
            for model, (window, _, _) in sorted(self.windows.items()):
                samples.add_metric([model], window.samples)
                for feature, (p, k) in sorted(window.statistics().items()):
                    psi.add_metric([model, feature], p)
                    ks.add_metric([model, feature], k)
        yield psi
        yield ks
        yield samples


def serve_metrics(sampler: DriftSampler, port: int, address: str = "127.0.0.1") -> None:
    """Expose the drift gauges on http://address:port/metrics (prometheus-client's own server thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(sampler)
    start_http_server(port, addr=address, registry=registry)
