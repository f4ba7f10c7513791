"""Triton python-backend model: text sentiment from hashed bag-of-words, weights in model.npz, numpy only.

Input `text` BYTES [batch, 1] (UTF-8) -> output `scores` FP32 [batch, 3] (negative, neutral, positive).
Needs a config with max_batch_size > 0: the leading dimension is the batch.
numpy only, for the same reason as fraud_detector.py: it is all the pinned image's python backend ships.
"""

import os
import re
import zlib

import numpy as np
import triton_python_backend_utils as pb_utils

# Must match examples/build_models.py, which placed the lexicon weights in these buckets.
TOKEN = re.compile(r"[a-z0-9']+")


def featurize(texts, buckets):
    """Token counts hashed into `buckets` columns; crc32 because Python's hash() is salted per process."""
    features = np.zeros((len(texts), buckets), dtype=np.float32)
    for row, text in enumerate(texts):
        for token in TOKEN.findall(text.lower()):
            features[row, zlib.crc32(token.encode()) % buckets] += 1.0
    return features


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.npz")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"sentiment: model artefact not found: {path}")
        with np.load(path) as weights:
            self.w, self.b = weights["w"], weights["b"]

    def execute(self, requests):
        # Concatenate every request of the dynamic batch into one matrix product, then split.
        texts = [pb_utils.get_input_tensor_by_name(r, "text").as_numpy().reshape(-1) for r in requests]
        flat = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for b in texts for t in b]
        logits = featurize(flat, self.w.shape[0]) @ self.w + self.b
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        ends = np.cumsum([len(t) for t in texts])[:-1]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("scores", part)])
            for part in np.split(scores, ends)
        ]
