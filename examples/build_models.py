"""Build the example model artefacts for Triton's python backend, deterministically.

    python examples/build_models.py OUT_DIR        (e.g. build/models)

Writes OUT_DIR/<model>/1/model.onnx and OUT_DIR/<model>/1/model.py for:

- fraud-detector: features FP32 [32] -> probabilities FP32 [2] (legit, fraud). A standardise ->
  256 -> 256 -> softmax MLP with fixed-seed random weights: real compute per row, untrained scores.
- sentiment: text BYTES [1] -> scores FP32 [3] (negative, neutral, positive). Hashed bag of words
  -> linear -> softmax, with a small hand lexicon as weights, so "I love it" scores positive.

No config.pbtxt: configs are rendered from models/*.yaml. The *_reference functions compute the
same outputs in plain numpy, independently of ONNX and Triton, for tests to compare against.
"""

from __future__ import annotations

import re
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np

BACKENDS = Path(__file__).resolve().parent / "backends"
OPSET = 17  # what onnxruntime 1.2x/1.3x all run; the onnx package's default is newer
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


def fraud_onnx(weights: dict[str, np.ndarray] | None = None) -> "onnx.ModelProto":
    w = weights or fraud_weights()
    nodes = [
        ("Sub", ["features", "mean"], ["centred"], {}),
        ("Div", ["centred", "std"], ["scaled"], {}),
        ("Gemm", ["scaled", "w1", "b1"], ["h1_pre"], {}),
        ("Relu", ["h1_pre"], ["h1"], {}),
        ("Gemm", ["h1", "w2", "b2"], ["h2_pre"], {}),
        ("Relu", ["h2_pre"], ["h2"], {}),
        ("Gemm", ["h2", "w3", "b3"], ["logits"], {}),
        ("Softmax", ["logits"], ["probabilities"], {"axis": 1}),
    ]
    return _model("fraud-detector", nodes, w, ("features", FRAUD_FEATURES), ("probabilities", 2))


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


def sentiment_onnx(weights: dict[str, np.ndarray] | None = None) -> "onnx.ModelProto":
    # The graph takes the hashed features; tokenising is model.py's job (ONNX has no crc32).
    w = weights or sentiment_weights()
    nodes = [
        ("Gemm", ["features", "w", "b"], ["logits"], {}),
        ("Softmax", ["logits"], ["scores"], {"axis": 1}),
    ]
    return _model("sentiment", nodes, w, ("features", SENTIMENT_BUCKETS), ("scores", 3))


MODELS = {
    "fraud-detector": (fraud_onnx, BACKENDS / "fraud_detector.py"),
    "sentiment": (sentiment_onnx, BACKENDS / "sentiment.py"),
}


def build(out_dir: str | Path, version: int = 1) -> dict[str, Path]:
    """Write every example model; returns {model name: model directory}."""
    built = {}
    for name, (make_onnx, backend) in MODELS.items():
        version_dir = Path(out_dir) / name / str(version)
        version_dir.mkdir(parents=True, exist_ok=True)
        model = make_onnx()
        (version_dir / "model.onnx").write_bytes(model.SerializeToString())
        shutil.copyfile(backend, version_dir / "model.py")
        built[name] = version_dir.parent
    return built


def _model(name, nodes, weights, input_, output) -> "onnx.ModelProto":
    """Build and check the ONNX graph. `nodes` are (op, inputs, outputs, attributes) in plain data, so that
    onnx is needed only here: the reference functions must run where onnx is not installed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    (in_name, in_width), (out_name, out_width) = input_, output
    graph = helper.make_graph(
        [helper.make_node(op, inputs, outputs, **attributes) for op, inputs, outputs, attributes in nodes], name,
        inputs=[helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["batch", in_width])],
        outputs=[helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", out_width])],
        initializer=[numpy_helper.from_array(v, k) for k, v in sorted(weights.items())],
    )
    model = helper.make_model(graph, producer_name="modelfleet-examples",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by older onnxruntime too
    onnx.checker.check_model(model, full_check=True)
    return model


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
