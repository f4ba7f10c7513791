"""Triton python-backend model: fraud scoring MLP, weights in model.npz next to this file, computed with numpy.

Input `features` FP32 [batch, 32] -> output `probabilities` FP32 [batch, 2] (legit, fraud).
Needs a config with max_batch_size > 0: the leading dimension is the batch.

numpy only: the python backend of the pinned NGC image (nvcr.io/nvidia/tritonserver:*-py3) ships numpy and nothing
else (triton-inference-server/server build.py installs only numpy for it), so this file runs the same there as on
the local CPU Triton. No onnxruntime, no packed execution environment to build and ship.
"""

import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.npz")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"fraud-detector: model artefact not found: {path}")
        with np.load(path) as weights:
            self.w = {name: weights[name] for name in weights.files}

    def _probabilities(self, features):
        w = self.w
        x = (features - w["mean"]) / w["std"]
        x = np.maximum(x @ w["w1"] + w["b1"], 0)
        x = np.maximum(x @ w["w2"] + w["b2"], 0)
        logits = x @ w["w3"] + w["b3"]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def execute(self, requests):
        # Dynamic batching hands us several requests: one matrix product for all of them is what makes
        # batching pay; a run per request would cost nearly the same as no batching.
        batches = [pb_utils.get_input_tensor_by_name(r, "features").as_numpy() for r in requests]
        probabilities = self._probabilities(np.concatenate(batches).astype(np.float32, copy=False))
        ends = np.cumsum([len(b) for b in batches])[:-1]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probabilities", part)])
            for part in np.split(probabilities, ends)
        ]
