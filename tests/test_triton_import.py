"""Real-world Triton configs (tests/corpus/triton, each naming the Triton example or tutorial it comes from) are
imported into specs, validated, rendered back and compared with the original as protobuf messages after Triton's
normalisation; what the spec cannot say is reported by model and field."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfleet.cli import app
from modelfleet.loader import load_fleet, load_model
from modelfleet.plan import build_plan
from modelfleet.render import render
from modelfleet.spec import DNS_LABEL, ModelSpec, kube_name
from modelfleet.triton.config import build_config, mc, parse_config, render_config, validate_config
from modelfleet.triton.importer import ImportOptions, import_model, model_folders, read_original, spec_text
from modelfleet.triton.normalise import differences, normalise

CORPUS = Path(__file__).parent / "corpus" / "triton"
UNSUPPORTED = Path(__file__).parent / "corpus" / "triton-unsupported"
FOLDERS = model_folders(CORPUS)
OPTIONS = ImportOptions(source_prefix="s3://modelfleet-model-repository/imported", owner="ml@example.com", p99_ms=80)


def test_the_corpus_covers_every_feature_the_issue_names():
    configs = [read_original(f)[0] for f in FOLDERS]
    assert len(configs) == len(FOLDERS) == 23
    seen = set()
    for c in configs:
        seen.add(c.backend or c.platform)
        names = [t.name for t in [*c.input, *c.output]]
        if any(re.search(r"[./:]|^\d", n) for n in names):
            seen.add("exported tensor names")
        if "_" in c.name:
            seen.add("underscore model name")
        for t in c.input:
            seen |= {k for k, v in (("optional", t.optional), ("format", t.format), ("ragged", t.allow_ragged_batch),
                                    ("-1 dims", -1 in t.dims)) if v}
        for t in [*c.input, *c.output]:
            seen |= {k for k, v in (("reshape", t.HasField("reshape")), ("labels", bool(getattr(t, "label_filename", ""))))
                     if v}
        seen |= {k for k, v in (
            ("batch 0", c.max_batch_size == 0), ("BYTES", any(t.data_type == mc.TYPE_STRING for t in c.input)),
            ("parameters", bool(c.parameters)), ("accelerators", c.optimization.HasField("execution_accelerators")),
            ("graph level", c.optimization.HasField("graph")), ("cuda graphs", c.optimization.cuda.graphs),
            ("decoupled", c.model_transaction_policy.decoupled), ("response cache", c.response_cache.enable),
            ("direct", c.sequence_batching.HasField("direct")), ("oldest", c.sequence_batching.HasField("oldest")),
            ("control inputs", bool(c.sequence_batching.control_input)), ("state", bool(c.sequence_batching.state)),
            ("priority levels", c.dynamic_batching.priority_levels > 0),
            ("timeout override", c.dynamic_batching.default_queue_policy.allow_timeout_override),
            ("priority queue policy", bool(c.dynamic_batching.priority_queue_policy)),
            ("several groups", len(c.instance_group) > 1), ("KIND_MODEL", any(g.kind == mc.ModelInstanceGroup.KIND_MODEL
                                                                             for g in c.instance_group)),
            ("gpus", any(g.gpus for g in c.instance_group)), ("profile", any(g.profile for g in c.instance_group)),
            ("rate limiter", any(g.HasField("rate_limiter") for g in c.instance_group)),
            ("warmup", bool(c.model_warmup)), ("no declared tensors", not c.input),
        ) if v}
    expected = {"onnxruntime", "onnxruntime_onnx", "tensorflow_graphdef", "tensorflow_savedmodel", "pytorch_libtorch",
                "tensorrt_plan", "openvino", "python", "identity", "vllm", "tensorrtllm", "ensemble",
                "exported tensor names", "underscore model name", "optional", "format", "ragged", "-1 dims", "reshape",
                "labels", "batch 0", "BYTES", "parameters", "accelerators", "graph level", "cuda graphs", "decoupled",
                "response cache", "direct", "oldest", "control inputs", "state", "priority levels", "timeout override",
                "priority queue policy", "several groups", "KIND_MODEL", "gpus", "profile", "rate limiter", "warmup",
                "no declared tensors"}
    assert expected <= seen, sorted(expected - seen)


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_import_validate_render_is_the_original_after_normalisation(folder, tmp_path):
    item = import_model(folder, OPTIONS)
    assert item.differences == []
    # The written file is a valid spec on its own, loaded like any models/*.yaml.
    path = tmp_path / f"{item.name}.yaml"
    path.write_text(spec_text(item, OPTIONS))
    spec = load_model(path)
    assert spec == item.spec
    text = render_config(spec, spec.hardware.gpu_class, where=str(path))
    raw, _ = read_original(folder)
    hardware = spec.hardware.gpu_class
    assert normalise(parse_config(text, "x"), hardware) == normalise(raw, hardware)


def test_the_comparison_sees_a_field_the_spec_changed():
    item = import_model(CORPUS / "vllm_model", OPTIONS)
    data = item.spec.model_dump(by_alias=True, exclude_unset=True)
    data["triton"] = {**data["triton"], "parameters": {"model": "facebook/opt-125m"}}
    changed = ModelSpec.model_validate(data)
    found = differences(item.original, normalise(build_config(changed, changed.hardware.gpu_class),
                                                  changed.hardware.gpu_class))
    assert [d.split(":")[0] for d in found] == ["parameters.disable_log_requests", "parameters.gpu_memory_utilization"]


def test_a_config_less_model_gets_its_backend_from_the_file_and_no_tensors():
    item = import_model(CORPUS / "text_detection_configless", OPTIONS)
    assert item.configless and item.spec.backend == "onnxruntime" and not item.spec.inputs
    assert "no config.pbtxt" in spec_text(item, OPTIONS)


def test_specs_say_what_triton_configs_say():
    vllm = import_model(CORPUS / "vllm_model", OPTIONS).spec
    assert vllm.triton.decoupled and vllm.triton.warmup == "off" and not vllm.triton.warmup_requests
    assert [(g.kind, g.count) for g in vllm.triton.instance_groups] == [("MODEL", 1)]
    assert [t.name for t in vllm.inputs if t.optional] == ["stream", "sampling_parameters"]
    trt = import_model(CORPUS / "text_recognition_ort_trt", OPTIONS).spec  # no group, a TensorRT GPU accelerator
    assert trt.hardware.is_gpu and [(g.kind, g.count) for g in trt.triton.instance_groups] == [("GPU", 1)]
    limited = import_model(CORPUS / "rate_limited", OPTIONS).spec
    assert limited.hardware.is_gpu and limited.triton.instance_groups[0].rate_limiter.resources[1].shared
    queues = import_model(CORPUS / "priority_queues", OPTIONS).spec
    assert (queues.batching.priority_levels, queues.batching.default_priority_level) == (3, 2)
    assert queues.batching.queue_policy.allow_timeout_override
    assert queues.source.aws == "s3://modelfleet-model-repository/imported/priority_queues"


# --- warmup: configurable or off, never a default that breaks loading -------------------------------------------

@pytest.mark.parametrize("folder,expected", [("repeat_decoupled", 0), ("sequence_accumulate", 0), ("text_pipeline", 0),
                                             ("identity_bytes", 1)])
def test_the_automatic_warmup_is_left_out_where_triton_cannot_run_it(folder, expected):
    spec = import_model(CORPUS / folder, OPTIONS).spec
    data = spec.model_dump(by_alias=True, exclude_unset=True)
    data["triton"] = {**data["triton"], "warmup": "auto"}
    auto = ModelSpec.model_validate(data)
    assert len(build_config(auto, "cpu").model_warmup) == expected


def test_a_warmup_shape_must_give_sizes_for_variable_dims():
    data = import_model(CORPUS / "warmup_random", OPTIONS).spec.model_dump(by_alias=True, exclude_unset=True)
    data["triton"]["warmup_requests"][0]["inputs"]["tokens"]["dims"] = [16, 2]
    with pytest.raises(ValueError, match=r"triton.warmup_requests\[0\].inputs: input 'tokens' needs concrete sizes for its dims \[-1\]"):
        ModelSpec.model_validate(data)


# --- the commands -----------------------------------------------------------------------------------------------

def test_import_command_writes_specs_that_render_the_originals(tmp_path):
    out = tmp_path / "models"
    result = CliRunner().invoke(app, ["import", str(CORPUS), "--out", str(out), "--source-prefix",
                                      "gs://modelfleet-model-repository/imported"])
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in out.glob("*.yaml")) == sorted(f.name for f in FOLDERS)
    assert result.output.count(": equivalent") == len(FOLDERS)
    rendered = tmp_path / "rendered"
    for spec_file in sorted(out.glob("*.yaml")):
        result = CliRunner().invoke(app, ["render", "--model", str(spec_file), "--out", str(rendered)])
        assert result.exit_code == 0, result.output
        spec = load_model(spec_file)
        text = (rendered / spec.name / "config.pbtxt").read_text()
        validate_config(text, str(spec_file), expected_name=spec.name)
        raw, _ = read_original(CORPUS / spec.name)
        hw = spec.hardware.gpu_class
        assert normalise(parse_config(text, "x"), hw) == normalise(raw, hw)
    again = CliRunner().invoke(app, ["import", str(CORPUS), "--out", str(out)])
    assert again.exit_code == 2 and "already exists; pass --force" in again.output


def test_import_reports_what_it_cannot_express_by_model_and_field(tmp_path):
    result = CliRunner().invoke(app, ["import", str(UNSUPPORTED), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "batch_inputs: batch_input: [{'kind': 'BATCH_ACCUMULATED_ELEMENT_COUNT'" in result.output
    header = (tmp_path / "batch_inputs.yaml").read_text()
    assert "# NOT equivalent to the original" in header and "#   batch_input:" in header


def test_import_refuses_a_config_named_unlike_its_folder(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(CORPUS / "identity_fp32", repo / "other_name")
    result = CliRunner().invoke(app, ["import", str(repo), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "name: 'identity_fp32' differs from its folder 'other_name'" in result.output


def test_render_model_names_a_bad_spec(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("name: m\nowner: x\nsource: {local: x}\nbackend: pytorch\nslo: {p99_ms: 5}\n")
    result = CliRunner().invoke(app, ["render", "--model", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "inputs: the pytorch backend does not fill in its inputs itself" in result.output


# --- Kubernetes names apart from Triton names --------------------------------------------------------------------

def test_kubernetes_names_are_dns_labels_stable_and_distinct():
    names = ["fraud-detector", "text_recognition", "Text_Recognition", "text.recognition", "text-recognition",
             "308", "_private", "a" * 128, "a" * 127 + "b"]
    kube = [kube_name(n) for n in names]
    assert all(re.fullmatch(DNS_LABEL, k) and len(k) <= 40 for k in kube), kube
    assert len(set(kube)) == len(names)
    assert kube[0] == "fraud-detector" and kube[4] == "text-recognition"  # DNS names stay as they are
    assert kube_name("text_recognition") == kube[1]  # stable: a function of the name alone


def test_imported_models_deploy_under_dns_names_loading_their_triton_names(project_copy):
    out = project_copy / "models"
    for name in ("identity_bytes", "upper_bytes", "text_pipeline"):
        item = import_model(CORPUS / name, ImportOptions(source_prefix="s3://modelfleet-model-repository"))
        (out / f"{name}.yaml").write_text(spec_text(item, OPTIONS))
    stack = project_copy / "stacks" / "Pulumi.dev.yaml"
    stack.write_text(stack.read_text().replace("[fraud-detector, sentiment]",
                                               "[fraud-detector, sentiment, identity_bytes, upper_bytes, text_pipeline]"))
    plan = build_plan(load_fleet(project_copy, "dev"))
    files = render(plan, project_copy / "out")
    deployments = {}
    for f in files:
        obj = yaml.safe_load(f.read_text()) if f.suffix == ".yaml" else None
        if obj and obj.get("kind") == "Deployment":
            deployments[obj["metadata"]["name"]] = obj["spec"]["template"]["spec"]["containers"][0]["args"]
    pipeline = f"triton-{kube_name('text_pipeline')}"
    assert set(deployments) == {"triton-fraud-detector", "triton-sentiment", f"triton-{kube_name('identity_bytes')}",
                                f"triton-{kube_name('upper_bytes')}", pipeline}
    # The ensemble's Triton loads its steps' models too, and the response cache one of them enables.
    loads = [a for a in deployments[pipeline] if a.startswith("--load-model=")]
    assert loads == ["--load-model=text_pipeline", "--load-model=upper_bytes", "--load-model=identity_bytes"]
    assert any(a.startswith("--cache-config=local,size=") for a in deployments[pipeline])
    assert not any(a.startswith("--cache-config") for a in deployments["triton-fraud-detector"])


def test_an_ensemble_step_must_be_a_model_of_the_stack(project_copy):
    item = import_model(CORPUS / "text_pipeline", ImportOptions(source_prefix="s3://modelfleet-model-repository"))
    (project_copy / "models" / "text_pipeline.yaml").write_text(spec_text(item, OPTIONS))
    stack = project_copy / "stacks" / "Pulumi.dev.yaml"
    stack.write_text(stack.read_text().replace("[fraud-detector, sentiment]", "[fraud-detector, text_pipeline]"))
    result = CliRunner().invoke(app, ["validate", "--root", str(project_copy), "--stack", "dev"])
    assert result.exit_code == 2
    assert "triton.ensemble[0].model: step model 'upper_bytes' (no models/upper_bytes.yaml) is not in the stack's " \
           "models; add it" in result.output


def test_an_ensemble_step_maps_only_tensors_its_model_has(project_copy):
    for name in ("identity_bytes", "upper_bytes", "text_pipeline"):
        item = import_model(CORPUS / name, ImportOptions(source_prefix="s3://modelfleet-model-repository"))
        text = spec_text(item, OPTIONS)
        if name == "text_pipeline":
            text = text.replace("INPUT0: upper_text", "INPUT9: upper_text")
        (project_copy / "models" / f"{name}.yaml").write_text(text)
    stack = project_copy / "stacks" / "Pulumi.dev.yaml"
    stack.write_text(stack.read_text().replace("[fraud-detector, sentiment]",
                                               "[identity_bytes, upper_bytes, text_pipeline]"))
    result = CliRunner().invoke(app, ["validate", "--root", str(project_copy), "--stack", "dev"])
    assert result.exit_code == 2
    assert "triton.ensemble[1].input_map: identity_bytes has no input 'INPUT9'; its inputs: INPUT0" in result.output


def test_a_tuning_record_sets_the_count_of_a_single_group_only():
    from modelfleet.triton.config import TunedSettings

    one = import_model(CORPUS / "priority_queues", OPTIONS).spec  # one CPU group of 2
    assert [g.count for g in build_config(one, "cpu", TunedSettings(instance_count=3)).instance_group] == [3]
    several = import_model(CORPUS / "rate_limited", OPTIONS).spec  # two GPU groups: not what Model Analyzer measured
    assert [g.count for g in build_config(several, "nvidia-l4", TunedSettings(instance_count=3)).instance_group] == [1, 2]
