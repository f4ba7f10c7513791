"""Triton python-backend model: fraud scoring MLP (model.onnx next to this file) on onnxruntime.

Input `features` FP32 [batch, 32] -> output `probabilities` FP32 [batch, 2] (legit, fraud).
Needs a config with max_batch_size > 0: the leading dimension is the batch.
"""

import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"fraud-detector: model artefact not found: {path}")
        options = ort.SessionOptions()
        # Triton scales with instance_group (one stub process per instance); letting every
        # instance also spawn a thread per core would oversubscribe the CPU.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        # Dynamic batching hands us several requests: one onnxruntime run for all of them is what
        # makes batching pay; a run per request would cost nearly the same as no batching.
        batches = [pb_utils.get_input_tensor_by_name(r, "features").as_numpy() for r in requests]
        probabilities = self.session.run(
            ["probabilities"], {"features": np.concatenate(batches).astype(np.float32, copy=False)}
        )[0]
        ends = np.cumsum([len(b) for b in batches])[:-1]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probabilities", part)])
            for part in np.split(probabilities, ends)
        ]
