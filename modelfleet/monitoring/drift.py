"""Input drift, pure: a reference profile per model (built by `modelfleet profile`, committed beside the spec as
`models/<model>.profile.json`), and the statistics that compare a sliding window of sampled inputs with it.

Numeric features (each element of a numeric input tensor, `features[3]`): the reference's decile bin edges and
shares (PSI) and its percentiles (KS, the largest CDF gap, evaluated at the reference percentiles). BYTES inputs:
the text length (bins and percentiles, as for a number) and the vocabulary's most frequent tokens (PSI over token
shares, the rest in one `<other>` bucket). Thresholds are the spec's (`monitoring.drift_psi_threshold`,
`drift_ks_threshold`); the gauges are `modelfleet.monitoring.metrics.DRIFT_*`.
"""

from __future__ import annotations

import json
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BINS = 10
PERCENTILES = 101  # 0..100
VOCABULARY = 200
EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite (the usual convention)
OTHER = "<other>"
PROFILE_VERSION = 1
TOKEN = re.compile(r"[a-z0-9']+")


class ProfileError(ValueError):
    """The data cannot be profiled for this model; `str()` says what and how to fix it."""


def profile_path(models_dir: Path, model: str) -> Path:
    return models_dir / f"{model}.profile.json"


@dataclass(frozen=True)
class NumericProfile:
    edges: tuple[float, ...]  # up to BINS + 1 edges (quantiles; ties merged)
    shares: tuple[float, ...]  # per bin, with a bin below and one above the edges (both empty here)
    percentiles: tuple[float, ...]

    @classmethod
    def of(cls, values: np.ndarray) -> "NumericProfile":
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        if values.size < BINS:
            raise ProfileError(f"need at least {BINS} finite values per feature, got {values.size}")
        edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)))
        if edges.size < 2:  # a constant feature: one bin around its value
            edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
        shares = _shares(values, edges)
        return cls(tuple(map(float, edges)), tuple(map(float, shares)),
                   tuple(map(float, np.quantile(values, np.linspace(0, 1, PERCENTILES)))))

    def quantile_sample(self, n: int) -> np.ndarray:
        """`n` values spread evenly over the reference's quantile function (its percentiles, interpolated): the
        reference distribution, rebuilt from the committed profile when the raw reference data is not at hand."""
        return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, PERCENTILES), np.array(self.percentiles))

    def psi(self, window: np.ndarray) -> float:
        return psi(np.array(self.shares), _shares(np.asarray(window, dtype=float), np.array(self.edges)))

    def ks(self, window: np.ndarray) -> float:
        """Largest gap between the reference CDF and the window's, at the reference percentiles."""
        window = np.sort(np.asarray(window, dtype=float))
        if window.size == 0:
            return 0.0
        ref_cdf = np.linspace(0, 1, PERCENTILES)
        win_cdf = np.searchsorted(window, np.array(self.percentiles), side="right") / window.size
        return float(np.max(np.abs(ref_cdf - win_cdf)))


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of `values` in the reference's bins plus one below and one above its range (empty in the reference:
    values outside what the model was profiled on are the clearest drift)."""
    index = np.searchsorted(edges, values, side="right")
    index[values == edges[-1]] = len(edges) - 1  # the maximum belongs to the last bin, not beyond it
    return np.bincount(index, minlength=len(edges) + 1) / max(values.size, 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index: sum((a - e) * ln(a / e)) over bins."""
    e = np.clip(np.asarray(expected, dtype=float), EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=float), EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


@dataclass(frozen=True)
class TextProfile:
    length: NumericProfile
    vocabulary: tuple[tuple[str, float], ...]  # token, share of all tokens; OTHER last

    @classmethod
    def of(cls, texts: list[str]) -> "TextProfile":
        if len(texts) < BINS:
            raise ProfileError(f"need at least {BINS} texts, got {len(texts)}")
        counts = Counter(t for text in texts for t in tokens(text))
        total = sum(counts.values()) or 1
        top = counts.most_common(VOCABULARY)
        vocab = tuple((t, n / total) for t, n in top) + ((OTHER, 1 - sum(n for _, n in top) / total),)
        return cls(NumericProfile.of(np.array([len(t) for t in texts])), vocab)

    def vocabulary_psi(self, texts: list[str]) -> float:
        counts = Counter(t for text in texts for t in tokens(text))
        total = sum(counts.values()) or 1
        known = [t for t, _ in self.vocabulary[:-1]]
        actual = [counts.get(t, 0) / total for t in known]
        actual.append(1 - sum(actual))
        return psi(np.array([s for _, s in self.vocabulary]), np.array(actual))


@dataclass(frozen=True)
class Profile:
    model: str
    numeric: dict[str, NumericProfile] = field(default_factory=dict)  # feature -> profile
    text: dict[str, TextProfile] = field(default_factory=dict)  # BYTES input -> profile
    rows: int = 0

    def to_json(self) -> str:
        doc = {"version": PROFILE_VERSION, "model": self.model, "rows": self.rows,
               "numeric": {k: v.__dict__ for k, v in self.numeric.items()},
               "text": {k: {"length": v.length.__dict__, "vocabulary": [list(p) for p in v.vocabulary]}
                        for k, v in self.text.items()}}
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Profile":
        doc = json.loads(text)
        if doc.get("version") != PROFILE_VERSION:
            raise ProfileError(f"profile version {doc.get('version')} is not {PROFILE_VERSION}; re-run modelfleet profile")

        def num(d: dict) -> NumericProfile:
            return NumericProfile(tuple(d["edges"]), tuple(d["shares"]), tuple(d["percentiles"]))
        return cls(doc["model"], {k: num(v) for k, v in doc["numeric"].items()},
                   {k: TextProfile(num(v["length"]), tuple((t, s) for t, s in v["vocabulary"]))
                    for k, v in doc["text"].items()}, doc["rows"])


class DriftWindow:
    """The last `size` sampled requests of one model, and their drift against the profile, per feature:
    `{feature: (psi, ks)}`; text inputs report `<input>.length` (PSI, KS) and `<input>.vocabulary` (PSI, KS 0)."""

    def __init__(self, profile: Profile, size: int):
        self.profile, self.size = profile, size
        self.numeric = {f: deque(maxlen=size) for f in profile.numeric}
        self.texts = {f: deque(maxlen=size) for f in profile.text}

    def add_numeric(self, feature: str, values) -> None:
        if feature in self.numeric:
            self.numeric[feature].extend(float(v) for v in np.ravel(values))

    def add_text(self, name: str, texts: list[str]) -> None:
        if name in self.texts:
            self.texts[name].extend(texts)

    @property
    def samples(self) -> int:
        lengths = [len(d) for d in (*self.numeric.values(), *self.texts.values())]
        return min(lengths) if lengths else 0

    def statistics(self) -> dict[str, tuple[float, float]]:
        out = {}
        for feature, values in self.numeric.items():
            if values:
                arr = np.fromiter(values, dtype=float)
                ref = self.profile.numeric[feature]
                out[feature] = (ref.psi(arr), ref.ks(arr))
        for name, texts in self.texts.items():
            if texts:
                ref = self.profile.text[name]
                lengths = np.array([len(t) for t in texts])
                out[f"{name}.length"] = (ref.length.psi(lengths), ref.length.ks(lengths))
                out[f"{name}.vocabulary"] = (ref.vocabulary_psi(list(texts)), 0.0)
        return out
