"""Build the example model artefacts for Triton's python backend, deterministically.

    python examples/build_models.py OUT_DIR        (e.g. build/models)

Writes OUT_DIR/<model>/1/model.npz (the weights) and OUT_DIR/<model>/1/model.py (numpy only: the one package
the pinned cloud image's python backend ships, so the same config loads there and locally) for:

- fraud-detector: features FP32 [32] -> probabilities FP32 [2] (legit, fraud). A standardise ->
  256 -> 256 -> softmax MLP with fixed-seed random weights: real compute per row, untrained scores.
- sentiment: text BYTES [1] -> scores FP32 [3] (negative, neutral, positive). Hashed bag of words
  -> linear -> softmax, with a small hand lexicon as weights, so "I love it" scores positive.

No config.pbtxt: configs are rendered from models/*.yaml. The *_reference functions compute the
same outputs in plain numpy, outside Triton, for tests to compare against.
"""

from __future__ import annotations

import io
import re
import shutil
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

BACKENDS = Path(__file__).resolve().parent / "backends"
FRAUD_FEATURES, FRAUD_HIDDEN = 32, 256
SENTIMENT_BUCKETS = 4096
SENTIMENT_CLASSES = ("negative", "neutral", "positive")
POSITIVE = ("good", "great", "excellent", "love", "loved", "amazing", "perfect", "fast", "happy",
            "recommend", "best", "awesome", "works", "nice", "thanks")
NEGATIVE = ("bad", "terrible", "awful", "hate", "poor", "worst", "broken", "refund", "disappointed",
            "slow", "useless", "never", "crash", "scam", "not")
TOKEN = re.compile(r"[a-z0-9']+")  # same as backends/sentiment.py


def fraud_weights(seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def dense(fan_in: int, fan_out: int) -> np.ndarray:  # He init keeps ReLU activations O(1)
        return (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "mean": rng.normal(0.0, 1.0, FRAUD_FEATURES).astype(np.float32),
        "std": rng.uniform(0.5, 2.0, FRAUD_FEATURES).astype(np.float32),
        "w1": dense(FRAUD_FEATURES, FRAUD_HIDDEN), "b1": np.zeros(FRAUD_HIDDEN, np.float32),
        "w2": dense(FRAUD_HIDDEN, FRAUD_HIDDEN), "b2": np.zeros(FRAUD_HIDDEN, np.float32),
        "w3": dense(FRAUD_HIDDEN, 2) * np.float32(0.3),  # small logits keep scores off 0 and 1
        "b3": np.array([2.0, -2.0], np.float32),  # fraud is rare: a prior toward "legit"
    }


def fraud_reference(features: np.ndarray, weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
    w = weights or fraud_weights()
    x = (np.asarray(features, np.float32) - w["mean"]) / w["std"]
    x = np.maximum(x @ w["w1"] + w["b1"], 0)
    x = np.maximum(x @ w["w2"] + w["b2"], 0)
    return _softmax(x @ w["w3"] + w["b3"])


def sentiment_featurize(texts: list[str], buckets: int = SENTIMENT_BUCKETS) -> np.ndarray:
    features = np.zeros((len(texts), buckets), np.float32)
    for row, text in enumerate(texts):
        for token in TOKEN.findall(text.lower()):
            features[row, _bucket(token, buckets)] += 1.0
    return features


def sentiment_weights(seed: int = 11) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((SENTIMENT_BUCKETS, 3)) * 0.01).astype(np.float32)  # unknown words: ~no signal
    for word in POSITIVE:
        w[_bucket(word)] = (-1.5, -0.5, 2.0)
    for word in NEGATIVE:
        w[_bucket(word)] = (2.0, -0.5, -1.5)
    words = POSITIVE + NEGATIVE
    assert len({_bucket(t) for t in words}) == len(words), "lexicon words collide: change SENTIMENT_BUCKETS"
    return {"w": w, "b": np.array([0.0, 0.5, 0.0], np.float32)}  # no evidence -> neutral


def sentiment_reference(texts: list[str], weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
    w = weights or sentiment_weights()
    return _softmax(sentiment_featurize(texts) @ w["w"] + w["b"])


MODELS = {
    "fraud-detector": (fraud_weights, BACKENDS / "fraud_detector.py"),
    "sentiment": (sentiment_weights, BACKENDS / "sentiment.py"),
}


def build(out_dir: str | Path, version: int = 1) -> dict[str, Path]:
    """Write every example model; returns {model name: model directory}."""
    built = {}
    for name, (weights, backend) in MODELS.items():
        version_dir = Path(out_dir) / name / str(version)
        version_dir.mkdir(parents=True, exist_ok=True)
        (version_dir / "model.npz").write_bytes(npz_bytes(weights()))
        shutil.copyfile(backend, version_dir / "model.py")
        built[name] = version_dir.parent
    return built


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays as an .npz that `np.load` reads, byte for byte the same on every build: np.savez stamps each
    member with the current time, so members are written here with a fixed one."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return out.getvalue()


def _bucket(token: str, buckets: int = SENTIMENT_BUCKETS) -> int:
    return zlib.crc32(token.encode()) % buckets


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for model_name, model_dir in build(sys.argv[1]).items():
        print(f"{model_name}: {model_dir}")
