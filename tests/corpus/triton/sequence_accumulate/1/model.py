"""Running sum per sequence: the state lives in the instance, keyed by the CORRID control Triton fills in.
START resets a sequence's sum; each request adds INPUT and returns the sum so far."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            start = pb_utils.get_input_tensor_by_name(request, "START").as_numpy()
            corrid = pb_utils.get_input_tensor_by_name(request, "CORRID").as_numpy()
            out = np.empty_like(value)
            for row in range(value.shape[0]):  # a batch of slots; each slot is one sequence
                key = int(corrid.reshape(-1)[row])
                if int(start.reshape(-1)[row]):
                    self.sums[key] = 0
                self.sums[key] = self.sums.get(key, 0) + int(value[row, 0])
                out[row, 0] = self.sums[key]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", out)]))
        return responses
