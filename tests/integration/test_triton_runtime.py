"""The real tritonserver serves the example models, and the runtime reports failures clearly."""

from __future__ import annotations

import shutil
import urllib.request

import pytest

from modelfleet.triton.runtime import TritonNotInstalled, TritonServer, TritonStartupError, find_install, free_ports, run_perf_analyzer

try:
    import numpy as np
    import tritonclient.http as httpclient
except ImportError:
    # Installed with Triton. Without them this module must still collect (`pytest -m "not
    # integration"`); selected tests then fail in the triton_install fixture, naming the fix.
    np = httpclient = None

pytestmark = pytest.mark.integration

EXPECTED_METADATA = {
    "fraud-detector": ([("features", "FP32", [-1, 32])], [("probabilities", "FP32", [-1, 2])]),
    "sentiment": ([("text", "BYTES", [-1, 1])], [("scores", "FP32", [-1, 3])]),
}


def _fraud_input(rows):
    tensor = httpclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def _text_input(texts: list[str]):
    tensor = httpclient.InferInput("text", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
    return tensor


def test_server_is_ready_with_both_models(triton):
    with urllib.request.urlopen(f"http://{triton.http_url}/v2/health/ready") as response:
        assert response.status == 200
    client = httpclient.InferenceServerClient(triton.http_url)
    states = {m["name"]: m.get("state") for m in client.get_model_repository_index()}
    assert states == {"fraud-detector": "READY", "sentiment": "READY"}


@pytest.mark.parametrize("model", sorted(EXPECTED_METADATA))
def test_model_metadata_matches_the_config(triton, model):
    metadata = httpclient.InferenceServerClient(triton.http_url).get_model_metadata(model)
    inputs = [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]]
    outputs = [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]]
    assert (inputs, outputs) == EXPECTED_METADATA[model]
    assert metadata["platform"] == "python"


def test_fraud_detector_matches_the_numpy_reference(triton, examples):
    rows = np.random.default_rng(1).normal(size=(16, 32)).astype(np.float32)
    client = httpclient.InferenceServerClient(triton.http_url)
    served = client.infer("fraud-detector", [_fraud_input(rows)]).as_numpy("probabilities")
    assert served.shape == (16, 2)
    np.testing.assert_allclose(served, examples.fraud_reference(rows), rtol=1e-5, atol=1e-6)


def test_concurrent_requests_are_batched_and_split_back_correctly(triton, examples):
    """Several requests meet in one execute(): each must get back exactly its own rows."""
    rng = np.random.default_rng(2)
    requests = [rng.normal(size=(int(n), 32)).astype(np.float32) for n in rng.integers(1, 5, size=24)]
    client = httpclient.InferenceServerClient(triton.http_url, concurrency=12)
    before = client.get_inference_statistics("fraud-detector")["model_stats"][0]["execution_count"]

    pending = [client.async_infer("fraud-detector", [_fraud_input(rows)]) for rows in requests]
    for rows, result in zip(requests, pending):
        np.testing.assert_allclose(
            result.get_result().as_numpy("probabilities"), examples.fraud_reference(rows), rtol=1e-5, atol=1e-6
        )
    executions = client.get_inference_statistics("fraud-detector")["model_stats"][0]["execution_count"] - before
    assert executions < len(requests), f"{len(requests)} requests ran in {executions} executions: no batching"


def test_sentiment_matches_the_numpy_reference(triton, examples):
    texts = ["I love it, great product!", "Terrible. It arrived broken, I want a refund.",
             "The parcel came on Tuesday.", "", "Très bien — works fine 👍"]
    client = httpclient.InferenceServerClient(triton.http_url)
    served = client.infer("sentiment", [_text_input(texts)]).as_numpy("scores")
    np.testing.assert_allclose(served, examples.sentiment_reference(texts), rtol=1e-5, atol=1e-6)
    labels = [examples.SENTIMENT_CLASSES[i] for i in served.argmax(axis=1)]
    assert labels[:4] == ["positive", "negative", "neutral", "neutral"]


def test_missing_artefact_fails_with_its_path(triton_install, model_repository, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(model_repository / "fraud-detector", repository / "fraud-detector")
    missing = repository / "fraud-detector" / "1" / "model.npz"
    missing.unlink()
    with pytest.raises(TritonStartupError) as failure:
        with TritonServer(repository, *free_ports(3), install=triton_install, startup_timeout_s=30,
                          log_path=tmp_path / "tritonserver.log"):
            pass
    assert f"model artefact not found: {missing}" in str(failure.value)


def test_perf_analyzer_measures_real_throughput(triton, triton_install):
    points = run_perf_analyzer(
        "fraud-detector", triton.grpc_url, [1, 2], install=triton_install,
        measurement_interval_ms=500, stability_percentage=50, max_trials=6, timeout_s=60,
    )
    assert [p.concurrency for p in points] == [1, 2]
    assert all(p.throughput_infer_per_s > 0 and p.p99_latency_ms > 0 for p in points), points


def test_missing_install_names_the_fix(tmp_path):
    with pytest.raises(TritonNotInstalled, match="scripts/install_triton.sh"):
        find_install(tmp_path)


def test_example_models_build_byte_for_byte_the_same(build_examples, tmp_path):
    first, second = build_examples(tmp_path / "a"), build_examples(tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert names == ["fraud-detector", "sentiment"]
    for name in names:
        assert sorted(p.name for p in (first / name / "1").iterdir()) == ["model.npz", "model.py"]
        for artefact in ("model.npz", "model.py"):
            assert (first / name / "1" / artefact).read_bytes() == (second / name / "1" / artefact).read_bytes()
