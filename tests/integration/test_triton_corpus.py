"""The corpus's python models, imported into specs and rendered back, load and serve in the real tritonserver:
BYTES with -1 dims, dynamic batching and the response cache (hits counted by Triton's own metrics), sequence
batching keeping state across 4 parallel sequences, a decoupled model and an ensemble whose steps are specs too.
Each spec is served with the default warmup (`auto`) in place of the imported one: the default must never keep a
model from loading."""

from __future__ import annotations

import json
import queue
import re
import threading
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelfleet.triton.config import build_repository, render_config, server_flags
from modelfleet.triton.importer import ImportOptions, import_model
from modelfleet.triton.runtime import TritonServer, free_ports

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "triton"
RUNNABLE = ("identity_bytes", "sequence_accumulate", "repeat_decoupled", "upper_bytes", "text_pipeline")
pytestmark = pytest.mark.integration


def _specs():
    specs = []
    for name in RUNNABLE:
        item = import_model(CORPUS / name, ImportOptions())
        assert item.equivalent, item.differences
        data = item.spec.model_dump(by_alias=True, exclude_unset=True)
        data["triton"] = {**data["triton"], "warmup": "auto"}
        specs.append(type(item.spec).model_validate(data))
    return specs


@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory, triton_install):
    specs = _specs()
    repository = build_repository(tmp_path_factory.mktemp("corpus") / "repository", [
        (spec, render_config(spec, "cpu"), CORPUS / spec.name) for spec in specs])
    with TritonServer(repository, *free_ports(3), install=triton_install, extra_args=server_flags(specs),
                      startup_timeout_s=90) as server:
        yield server


def _metric(server, name: str, model: str) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf'^{name}{{[^}}]*model="{model}"[^}}]*}} (\S+)$', text, re.M)
    assert match, f"{name} for {model} not exported:\n{text[:2000]}"
    return float(match.group(1))


def test_every_model_is_served_with_the_rendered_config(corpus_server):
    for name in RUNNABLE:
        with urllib.request.urlopen(f"http://{corpus_server.http_url}/v2/models/{name}/config", timeout=5) as r:
            served = json.loads(r.read())
        assert served["name"] == name
        # The automatic warmup ran where it is safe, and was left out of the decoupled, sequence and ensemble models.
        assert bool(served.get("model_warmup")) == (name in ("identity_bytes", "upper_bytes")), name
    assert "--cache-config=local,size=" in " ".join(corpus_server.command())


def test_bytes_with_variable_dims_and_the_response_cache_hits(corpus_server):
    client = httpclient.InferenceServerClient(corpus_server.http_url)
    before = _metric(corpus_server, "nv_cache_num_hits_per_model", "identity_bytes")
    for words in ([b"a", b"bc"], [b"three", b"", b"words"], [b"three", b"", b"words"], [b"a", b"bc"]):
        data = np.array([words], dtype=object)
        infer = httpclient.InferInput("INPUT0", list(data.shape), "BYTES")
        infer.set_data_from_numpy(data)
        out = client.infer("identity_bytes", [infer]).as_numpy("OUTPUT0")
        assert out.tolist() == data.tolist()
    # Two of the four requests repeat an earlier one: Triton answers them from its cache.
    assert _metric(corpus_server, "nv_cache_num_hits_per_model", "identity_bytes") - before == 2


def test_sequence_state_is_kept_apart_across_four_parallel_sequences(corpus_server):
    steps, results, errors = 6, {}, []

    def run(sequence_id: int) -> None:
        try:
            client = grpcclient.InferenceServerClient(corpus_server.grpc_url)
            sums = []
            for step in range(steps):
                infer = grpcclient.InferInput("INPUT", [1, 1], "INT32")
                infer.set_data_from_numpy(np.array([[sequence_id]], np.int32))
                result = client.infer("sequence_accumulate", [infer], sequence_id=sequence_id,
                                      sequence_start=step == 0, sequence_end=step == steps - 1)
                sums.append(int(result.as_numpy("OUTPUT")[0, 0]))
            results[sequence_id] = sums
        except Exception as exc:  # surfaced below with the sequence it came from
            errors.append((sequence_id, exc))

    threads = [threading.Thread(target=run, args=(sid,)) for sid in (11, 22, 33, 44)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # Each sequence adds its own id at every step: its running sum owes nothing to the other three.
    assert results == {sid: [sid * (i + 1) for i in range(steps)] for sid in (11, 22, 33, 44)}


def test_the_decoupled_model_streams_one_response_per_element(corpus_server):
    received: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(corpus_server.grpc_url)
    client.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), received))
    try:
        infer = grpcclient.InferInput("IN", [3], "INT32")
        infer.set_data_from_numpy(np.array([4, 5, 6], np.int32))
        client.async_stream_infer("repeat_decoupled", [infer])
        values = []
        for _ in range(3):
            result, error = received.get(timeout=30)
            assert error is None, error
            values.append(int(result.as_numpy("OUT")[0]))
    finally:
        client.stop_stream()
    assert values == [4, 5, 6]


def test_the_ensemble_runs_its_steps(corpus_server):
    client = httpclient.InferenceServerClient(corpus_server.http_url)
    data = np.array([[b"hello", b"triton"]], dtype=object)
    infer = httpclient.InferInput("text", list(data.shape), "BYTES")
    infer.set_data_from_numpy(data)
    assert client.infer("text_pipeline", [infer]).as_numpy("result").tolist() == [[b"HELLO", b"TRITON"]]


def test_the_real_servers_normalisation_is_ours(tmp_path, triton_install):
    """The corpus's own config.pbtxt files, served as they are: the config the server holds equals our
    normalisation of the original and of the spec imported from it, as protobuf messages. So "equivalent after
    Triton's normalisation" (what import promises) is checked against Triton itself, not only against our model
    of it."""
    import shutil

    from google.protobuf import json_format

    from modelfleet.triton.config import build_config, mc
    from modelfleet.triton.importer import read_original
    from modelfleet.triton.normalise import differences, normalise

    repository = tmp_path / "originals"
    for name in RUNNABLE:
        shutil.copytree(CORPUS / name, repository / name)
    specs = [import_model(CORPUS / name, ImportOptions()).spec for name in RUNNABLE]
    with TritonServer(repository, *free_ports(3), install=triton_install, extra_args=server_flags(specs),
                      startup_timeout_s=90) as server:
        for spec in specs:
            with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{spec.name}/config", timeout=5) as r:
                served = json_format.ParseDict(json.loads(r.read()), mc.ModelConfig(), ignore_unknown_fields=True)
            raw, _ = read_original(CORPUS / spec.name)
            assert normalise(raw) == served, differences(normalise(raw), served)
            rendered = normalise(build_config(spec, "cpu"))
            assert rendered == served, differences(rendered, served)
