"""Every model's config.pbtxt is rendered through Triton's own schema and stopped before a server when it is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.loader import load_fleet, load_model
from modelfleet.plan import build_plan
from modelfleet.render import model_configs, render
from modelfleet.spec import ModelSpec
from modelfleet.triton.config import (
    ArtefactMissingError, ModelConfigError, TunedSettings, build_config, parse_config, render_config,
    validate_config, write_model,
)

from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402  (installed by scripts/install_triton.sh)
ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(p.stem for p in (ROOT / "models").glob("*.yaml"))


def spec(name: str) -> ModelSpec:
    return load_model(ROOT / "models" / f"{name}.yaml")


def variant(name: str, **changes) -> ModelSpec:
    """A copy of an example spec with top-level fields replaced, validated like a file would be."""
    return ModelSpec.model_validate({**spec(name).model_dump(exclude_unset=True), **changes})


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("hardware", ["cpu", "nvidia-l4"])
def test_every_example_model_renders_parses_and_obeys_the_rules(name, hardware):
    text = render_config(spec(name), hardware)
    parsed = parse_config(text, name)
    assert parsed.name == name
    validate_config(parsed, name, expected_name=name)
    kind = mc.ModelInstanceGroup.Kind.KIND_CPU if hardware == "cpu" else mc.ModelInstanceGroup.Kind.KIND_GPU
    assert [g.kind for g in parsed.instance_group] == [kind]


def test_the_fraud_detector_config_says_what_its_spec_says():
    c = parse_config(render_config(spec("fraud-detector"), "nvidia-l4"), "fraud-detector")
    assert c.backend == "python" and not c.platform
    assert c.max_batch_size == 64
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in c.input] == [("features", "TYPE_FP32", [32])]
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in c.output] == [
        ("probabilities", "TYPE_FP32", [2])]
    assert c.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(c.version_policy.specific.versions) == [1]
    warm = c.model_warmup[0]
    assert warm.batch_size == 1 and warm.inputs["features"].zero_data and list(warm.inputs["features"].dims) == [32]


def test_bytes_tensors_are_triton_strings():
    c = parse_config(render_config(spec("sentiment"), "cpu"), "sentiment")
    assert mc.DataType.Name(c.input[0].data_type) == "TYPE_STRING"


def test_rendering_is_deterministic_and_canonical():
    first = render_config(spec("fraud-detector"), "cpu")
    assert first == render_config(spec("fraud-detector"), "cpu")
    from google.protobuf import text_format
    assert text_format.MessageToString(parse_config(first, "x")) == first


@pytest.mark.parametrize("backend,field,value", [
    ("onnxruntime", "backend", "onnxruntime"),
    ("tensorrt", "platform", "tensorrt_plan"),
    ("pytorch", "platform", "pytorch_libtorch"),
])
def test_backends_map_to_triton_backend_or_platform(backend, field, value):
    c = build_config(variant("fraud-detector", backend=backend), "nvidia-l4")
    assert getattr(c, field) == value


def test_priority_levels_and_queue_policy_where_the_spec_sets_them():
    s = variant("fraud-detector", batching={"preferred_batch_sizes": [8, 32], "priority_levels": 3,
                                            "queue_policy": {"timeout_action": "DELAY", "default_timeout_us": 2000,
                                                             "max_queue_size": 128}, "response_cache": True})
    c = parse_config(render_config(s, "nvidia-l4"), "x")
    dyn = c.dynamic_batching
    assert list(dyn.preferred_batch_size) == [8, 32]
    assert dyn.priority_levels == 3 and dyn.default_priority_level == 3
    assert mc.ModelQueuePolicy.TimeoutAction.Name(dyn.default_queue_policy.timeout_action) == "DELAY"
    assert dyn.default_queue_policy.max_queue_size == 128
    assert c.response_cache.enable


def test_a_model_that_does_not_batch_gets_no_dynamic_batching_by_default():
    c = build_config(variant("fraud-detector", max_batch_size=0, batching={}), "cpu")
    assert not c.HasField("dynamic_batching")


def test_tuning_settings_override_the_spec():
    c = parse_config(render_config(spec("fraud-detector"), "nvidia-l4",
                                   TunedSettings(preferred_batch_sizes=(16,), max_queue_delay_us=900, instance_count=2)),
                     "x")
    assert list(c.dynamic_batching.preferred_batch_size) == [16]
    assert c.dynamic_batching.max_queue_delay_microseconds == 900
    assert c.instance_group[0].count == 2


# --- bad specs are stopped with the file and the field ------------------------------------------------------

def test_preferred_batch_size_above_max_is_stopped():
    with pytest.raises(ModelConfigError) as err:
        render_config(spec("fraud-detector"), "cpu", TunedSettings(preferred_batch_sizes=(128,)))
    assert str(err.value) == ("models/fraud-detector.yaml dynamic_batching.preferred_batch_size: dynamic batching "
                              "preferred size must be <= max batch size: 128 > 64")


def test_preferred_batch_size_equal_to_max_is_allowed_and_one_above_is_not():
    """Triton's rule is `preferred <= max_batch_size`: the boundary itself is a valid config."""
    max_batch = spec("fraud-detector").max_batch_size
    c = parse_config(render_config(spec("fraud-detector"), "cpu", TunedSettings(preferred_batch_sizes=(8, max_batch))),
                     "x")
    assert list(c.dynamic_batching.preferred_batch_size) == [8, max_batch]
    with pytest.raises(ModelConfigError, match=f"must be <= max batch size: {max_batch + 1} > {max_batch}"):
        render_config(spec("fraud-detector"), "cpu", TunedSettings(preferred_batch_sizes=(max_batch + 1,)))


def test_repeated_preferred_batch_sizes_are_stopped():
    with pytest.raises(ModelConfigError) as err:
        render_config(spec("fraud-detector"), "cpu", TunedSettings(preferred_batch_sizes=(16, 8, 16)))
    assert (err.value.field, str(err.value).split(": ", 1)[1]) == (
        "dynamic_batching.preferred_batch_size", "sizes must be distinct, got [16, 8, 16]")
    render_config(spec("fraud-detector"), "cpu", TunedSettings(preferred_batch_sizes=(16, 8)))


def test_explicit_dynamic_batching_without_batching_is_stopped():
    with pytest.raises(ModelConfigError) as err:
        render_config(variant("fraud-detector", max_batch_size=0, batching={"dynamic": True}), "cpu")
    assert err.value.where == "models/fraud-detector.yaml"
    assert err.value.field == "dynamic_batching"
    assert "needs max_batch_size > 0" in str(err.value)


@pytest.mark.parametrize("text,field,message", [
    ('name: "m" backend: "python" input { name: "a" dims: 1 } output { name: "b" data_type: TYPE_FP32 dims: 1 }',
     "input[0].data_type", "must specify 'data_type'"),
    ('name: "m" backend: "python" input { name: "a" data_type: TYPE_FP32 dims: 0 } '
     'output { name: "b" data_type: TYPE_FP32 dims: 1 }', "input[0].dims", "positive size or -1"),
    ('name: "m" backend: "python" max_batch_size: 8 input { name: "a" data_type: TYPE_FP32 dims: 1 } '
     'output { name: "b" data_type: TYPE_FP32 dims: 1 } dynamic_batching { priority_levels: 2 default_priority_level: 3 }',
     "dynamic_batching.default_priority_level", "between 1 and priority_levels"),
    ('name: "m" backend: "python" platform: "tensorrt_plan" input { name: "a" data_type: TYPE_FP32 dims: 1 } '
     'output { name: "b" data_type: TYPE_FP32 dims: 1 }', "backend", "runs on the tensorrt backend"),
    ('name: "m" input { name: "a" data_type: TYPE_FP32 dims: 1 } output { name: "b" data_type: TYPE_FP32 dims: 1 }',
     "backend", "set backend or platform"),
    ('name: "m" platform: "pytorch_libtorch" output { name: "b" data_type: TYPE_FP32 dims: 1 }',
     "input", "the pytorch backend does not fill them in"),
    ('name: "m" backend: "python" max_batch_size: 0 input { name: "a" data_type: TYPE_FP32 dims: 1 reshape { } } '
     'output { name: "b" data_type: TYPE_FP32 dims: 1 }', "input[0].reshape", "non-batching"),
    ('name: "m" backend: "python" input { name: "a" data_type: TYPE_FP32 dims: 1 } '
     'output { name: "b" data_type: TYPE_FP32 dims: 1 } model_transaction_policy { decoupled: true } '
     'response_cache { enable: true }', "response_cache.enable", "decoupled"),
    ('name: "e" platform: "ensemble" input { name: "a" data_type: TYPE_FP32 dims: 1 } '
     'output { name: "b" data_type: TYPE_FP32 dims: 1 } ensemble_scheduling { step { model_name: "m" '
     'input_map { key: "x" value: "a" } output_map { key: "y" value: "c" } } }', "output", "'b' is not written"),
    ('name: "e" platform: "ensemble" input { name: "a" data_type: TYPE_FP32 dims: 1 } '
     'output { name: "b" data_type: TYPE_FP32 dims: 1 } instance_group { count: 1 } ensemble_scheduling { step { '
     'model_name: "m" input_map { key: "x" value: "a" } output_map { key: "y" value: "b" } } }', "instance_group",
     "refuses it on an ensemble"),
    ('name: "m" backend: "python" max_batch_size: 4 input { name: "a" data_type: TYPE_FP32 dims: 1 } '
     'output { name: "b" data_type: TYPE_FP32 dims: 1 } sequence_batching { control_input { name: "a" } }',
     "sequence_batching.control_input[0].name", "also a model input"),
    ('name: "m" backend: "python" input { name: "a" data_type: TYPE_FP32 dims: 1 } '
     'output { name: "a" data_type: TYPE_FP32 dims: 1 }', "input", "repeated: a"),
    ('name: "m" backend: "python" input { name: "a" data_type: TYPE_FP32 dims: 1 } '
     'output { name: "b" data_type: TYPE_FP32 dims: 1 } instance_group { count: 0 kind: KIND_CPU }',
     "instance_group[0].count", "must be >= 1"),
    ('name: "m" backend: "python" input { name: "a" data_type: TYPE_FP32 dims: 1 } '
     'output { name: "b" data_type: TYPE_FP32 dims: 1 } model_warmup { name: "w" batch_size: 1 }',
     "model_warmup[0].inputs", "every required model input"),
    ('name: "m" backend: "python" nonsense: 1', "", "not a valid Triton model config"),
])
def test_semantic_rules_name_the_field(text, field, message):
    with pytest.raises(ModelConfigError) as err:
        validate_config(text, "models/m.yaml")
    assert err.value.field == field and message in str(err.value) and str(err.value).startswith("models/m.yaml")


# --- the model repository -----------------------------------------------------------------------------------

def test_repository_layout(tmp_path):
    source = tmp_path / "src"
    (source / "1").mkdir(parents=True)
    (source / "1" / "model.py").write_text("# model\n")
    (source / "1" / "model.onnx").write_bytes(b"onnx")
    text = render_config(spec("fraud-detector"), "cpu")
    model_dir = write_model(tmp_path / "repo", spec("fraud-detector"), text, source)
    assert (model_dir / "config.pbtxt").read_text() == text
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.onnx", "model.py"]
    linked = write_model(tmp_path / "linked", spec("fraud-detector"), text, source, link=True)
    assert (linked / "1" / "model.py").is_symlink()


def test_a_missing_artefact_names_the_path(tmp_path):
    source = tmp_path / "src"
    (source / "1").mkdir(parents=True)
    with pytest.raises(ArtefactMissingError) as err:
        write_model(tmp_path / "repo", spec("fraud-detector"), "x", source)
    assert str(source / "1" / "model.py") in str(err.value)
    with pytest.raises(ArtefactMissingError, match=str(tmp_path / "nowhere" / "1")):
        write_model(tmp_path / "repo", spec("fraud-detector"), "x", tmp_path / "nowhere")


# --- render() -----------------------------------------------------------------------------------------------

def test_render_writes_one_config_per_model_and_the_local_stack_is_cpu(tmp_path):
    plan = build_plan(load_fleet(ROOT, "local"))
    files = render(plan, tmp_path)
    assert [str(f.relative_to(tmp_path)) for f in files] == [f"models/{m}/config.pbtxt" for m in MODELS]
    for name in MODELS:
        c = parse_config((tmp_path / "models" / name / "config.pbtxt").read_text(), name)
        assert [mc.ModelInstanceGroup.Kind.Name(g.kind) for g in c.instance_group] == ["KIND_CPU"]


def test_cloud_stacks_render_gpu_configs_identical_to_the_library():
    plan = build_plan(load_fleet(ROOT, "prod"))
    configs = model_configs(plan)
    assert set(configs) == {("fraud-detector", "nvidia-l4"), ("sentiment", "nvidia-t4")}
    assert configs[("sentiment", "nvidia-t4")] == render_config(spec("sentiment"), "nvidia-t4")


# --- the real server loads exactly what we render -----------------------------------------------------------

@pytest.mark.integration
def test_the_real_server_loads_the_rendered_configs_of_the_local_stack(tmp_path):
    """Both example models, with the local stack's rendered configs (CPU instances, warmup, batching), load and
    answer in the real tritonserver installed by scripts/install_triton.sh."""
    import subprocess

    from modelfleet.triton.config import build_repository
    from modelfleet.triton.runtime import TritonNotInstalled, TritonServer, find_install, free_ports

    try:
        install = find_install()
    except TritonNotInstalled as error:
        pytest.fail(str(error), pytrace=False)
    artefacts = tmp_path / "artefacts"
    # The artefacts need onnx, which lives with the toolchain (protobuf 6), not in this venv.
    subprocess.run([str(install.prefix / "bin" / "python"), str(ROOT / "examples" / "build_models.py"), str(artefacts)],
                   check=True, capture_output=True, timeout=300)

    plan = build_plan(load_fleet(ROOT, "local"))
    configs = model_configs(plan)
    repository = build_repository(tmp_path / "repository", [
        (model, configs[(model.name, "cpu")], artefacts / model.name) for model in plan.models])
    ports = free_ports(3)
    with TritonServer(repository, *ports, install=install) as server:
        import urllib.request
        for model in plan.models:
            with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model.name}/config") as response:
                served = response.read().decode()
            assert f'"name":"{model.name}"' in served and '"kind":"KIND_CPU"' in served
        assert not server.log_errors()
