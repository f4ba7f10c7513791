"""The release: each model repository holds exactly what `modelfleet render` writes and the local artefacts, and
Triton's pods start only once it does.

Checked on the declared bucket objects (the offline nearest to an upload: the real provider writes `content` or the
file's bytes as the object). Expectations come from independent sources: the files `render` writes, the artefact
files on disk, and the Deployments' own annotations and arguments.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pulumi
import pytest

from modelfleet.loader import load_fleet
from modelfleet.offline import evaluate
from modelfleet.plan import build_plan
from modelfleet.render import render

PROJECT = Path(__file__).resolve().parent.parent
OBJECT_TYPES = {"aws:s3/bucketObjectv2:BucketObjectv2": "key", "gcp:storage/bucketObject:BucketObject": "name"}
CONFIG_ANNOTATION = "modelfleet.io/config-sha256"


def _objects(resources) -> dict[tuple[str, str], object]:
    found = {}
    for r in resources:
        if r.type in OBJECT_TYPES:
            where = (r.inputs["bucket"], r.inputs[OBJECT_TYPES[r.type]])
            assert where not in found, f"{where} is written twice"
            found[where] = r
    return found


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_deployment_waits_for_its_repository_which_holds_what_render_wrote(stack, evaluated, tmp_path):
    resources = evaluated(stack).resources
    objects = _objects(resources)
    plan = build_plan(load_fleet(PROJECT, stack))
    render(plan, tmp_path)
    deployments = [r for r in resources if r.type == "kubernetes:apps/v1:Deployment"
                   and r.inputs["metadata"]["labels"]["app.kubernetes.io/name"] == "triton"]  # not the inspector
    assert len(deployments) == sum(len(r.placements) for r in plan.regions)
    for deployment in deployments:
        spec = deployment.inputs["spec"]["template"]
        (container,) = spec["spec"]["containers"]
        model = next(a for a in container["args"] if a.startswith("--load-model=")).split("=", 1)[1]
        repository = next(a for a in container["args"] if a.startswith("--model-repository=")).split("=", 1)[1]
        bucket, _, prefix = repository.split("://", 1)[1].partition("/")
        folder = f"{prefix}/{model}".strip("/")
        # What Triton lists under the model's folder: the config and every local artefact file, nothing else.
        version_dir = PROJECT / "build" / "model-artifacts" / model / "1"
        local = {f"{folder}/1/{p.name}": p for p in version_dir.iterdir() if p.is_file()}
        mine = {key: r for (b, key), r in objects.items() if b == bucket and key.startswith(f"{folder}/")}
        assert set(mine) == {f"{folder}/config.pbtxt", *local}, deployment.name
        assert {r.urn for r in mine.values()} <= set(deployment.dependencies), deployment.name

        config = mine[f"{folder}/config.pbtxt"]
        rendered = (tmp_path / "models" / model / "config.pbtxt").read_bytes()
        annotation = spec["metadata"]["annotations"][CONFIG_ANNOTATION]
        assert annotation == _sha(rendered) == config.inputs["metadata"]["sha256"]
        if config.type.startswith("aws:"):
            assert config.inputs["content"].encode() == rendered
        else:
            assert config.inputs["content"] == "[secret]"  # the GCP schema marks content secret; the hash stands in
        for key, path in local.items():
            obj = mine[key]
            assert obj.inputs["source"]["asset"] == "file"
            assert (PROJECT / obj.inputs["source"]["path"]).read_bytes() == path.read_bytes()
            assert obj.inputs["metadata"]["sha256"] == _sha(path.read_bytes())


def test_each_bucket_is_written_by_its_region_and_a_shared_bucket_once(evaluated):
    resources = evaluated("prod").resources
    objects = _objects(resources)
    by_provider: dict[str, set[str]] = {}
    for (bucket, _), obj in objects.items():
        by_provider.setdefault(obj.provider, set()).add(bucket)
    # The S3 bucket of each AWS region through that region's provider; the one GCS bucket through one provider.
    assert by_provider == {"aws-us-east-1": {"modelfleet-models-us-east-1"},
                           "aws-eu-west-1": {"modelfleet-models-eu-west-1"},
                           "gcp-us-central1": {"modelfleet-model-repository"}}
    # 2 models x (config + model.py + model.npz) per bucket.
    assert len(objects) == 3 * 2 * 3


def test_missing_artefacts_stop_the_program_before_anything_is_declared(project_copy):
    shutil.rmtree(project_copy / "build")
    with pytest.raises(pulumi.RunError) as raised:
        evaluate(project_copy, "dev")
    message = str(raised.value)
    assert "the release cannot be built" in message and "models/fraud-detector.yaml" in message
    assert "build/model-artifacts/fraud-detector" in message


def test_plan_reports_missing_artefacts_as_a_clear_error(project_copy):
    from typer.testing import CliRunner

    from modelfleet.cli import app

    shutil.rmtree(project_copy / "build")
    result = CliRunner().invoke(app, ["plan", "--stack", "dev", "--root", str(project_copy)])
    assert result.exit_code == 2, result.output
    assert "the release cannot be built" in result.output and "Traceback" not in result.output
