"""The release: what each model's bucket must hold for Triton to load it, as the program uploads it.

Per model repository (`source.aws` of each AWS region, `source.gcp`): `<prefix>/config.pbtxt` with exactly the
text `modelfleet render` writes (its sha256 is the Deployment's `modelfleet.io/config-sha256` annotation), and every
file of `source.local/<version>/` under `<prefix>/<version>/`; with a canary also `<prefix>/configs/canary.pbtxt` and
`<prefix>/<canary_version>/` (modelfleet.canary). `components/release.py` declares them as bucket
objects, and each Triton Deployment waits for its model's objects, so `pulumi up` never starts a pod on an empty
or stale repository.

Pure apart from reading the local artefacts (their names and hashes): the same project gives the same release.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from modelfleet import canary
from modelfleet.plan import FleetPlan, Placement, RegionPlan
from modelfleet.render import cloud_configs
from modelfleet.triton.config import ArtefactMissingError, check_artefacts, local_source

CONFIG_FILE = "config.pbtxt"


class ReleaseError(ValueError):
    """A model's artefacts cannot be released; `str()` names the model, the folder and the fix."""


@dataclass(frozen=True)
class ReleaseObject:
    """One object in one bucket. Exactly one of `content` (the config text) and `path` (a local file) is set."""

    cloud: str
    writer: str  # the region key whose provider writes it: the first region of the stack reading that bucket
    model: str
    bucket: str
    key: str
    sha256: str
    content: str | None = None
    path: str | None = None  # relative to the project root when inside it

    @property
    def uri(self) -> str:
        return f"{'s3' if self.cloud == 'aws' else 'gs'}://{self.bucket}/{self.key}"


def _bucket_and_prefix(source: str) -> tuple[str, str]:
    bucket, _, prefix = source.split("://", 1)[1].partition("/")
    return bucket, prefix.strip("/")


def release_objects(plan: FleetPlan, root: Path) -> tuple[ReleaseObject, ...]:
    """Every object of the stack's model repositories, each once (regions sharing a GCS bucket share it)."""
    configs = cloud_configs(plan)
    artefacts: dict[str, list[tuple[str, Path, str]]] = {}
    out: dict[tuple[str, str], ReleaseObject] = {}
    for region in plan.regions:
        for placement in region.placements:
            model = plan.model(placement.model)
            bucket, prefix = _bucket_and_prefix(placement.source)
            if model.name not in artefacts:
                artefacts[model.name] = _artefacts(model, root)
                if model.rollout.canary_version is not None:
                    # The canary's version directory beside the stable's, and its config (modelfleet.canary).
                    artefacts[model.name] += _artefacts(canary.canary_spec(model), root, canary=True)
            config = configs[model.name]
            entries = [ReleaseObject(region.cloud, region.key, model.name, bucket, f"{prefix}/{CONFIG_FILE}",
                                     hashlib.sha256(config.encode()).hexdigest(), content=config)]
            if canary.config_key(model.name) in configs:
                text = configs[canary.config_key(model.name)]
                entries.append(ReleaseObject(region.cloud, region.key, model.name, bucket,
                                             f"{prefix}/{canary.CONFIG_KEY}", hashlib.sha256(text.encode()).hexdigest(),
                                             content=text))
            entries += [ReleaseObject(region.cloud, region.key, model.name, bucket, f"{prefix}/{relative}", digest,
                                      path=str(path)) for relative, path, digest in artefacts[model.name]]
            for entry in entries:
                out.setdefault((entry.bucket, entry.key), entry)
    return tuple(sorted(out.values(), key=lambda o: (o.bucket, o.key)))


def objects_read_by(release: tuple[ReleaseObject, ...], region: RegionPlan, placement: Placement
                    ) -> list[ReleaseObject]:
    """The objects Triton reads for `placement` in `region`: everything under its repository prefix."""
    bucket, prefix = _bucket_and_prefix(placement.source)
    return [o for o in release if o.bucket == bucket and o.key.startswith(f"{prefix}/")]


def _artefacts(model, root: Path, canary: bool = False) -> list[tuple[str, Path, str]]:
    """(key relative to the model's prefix, absolute path, sha256) of each file of `source.local/<version>/`."""
    try:
        source = local_source(model, root)
        check_artefacts(model, source)
    except ArtefactMissingError as exc:
        field = " (rollout.canary_version: build or copy that version there, or fix the number)" if canary else ""
        raise ReleaseError(f"{exc}; the release uploads the model's artefacts from source.local{field}") from None
    version_dir = source / str(model.version)
    files = sorted(p for p in version_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [(f"{model.version}/{p.relative_to(version_dir).as_posix()}", _portable(p, root),
             hashlib.sha256(p.read_bytes()).hexdigest()) for p in files]


def _portable(path: Path, root: Path) -> Path:
    """Relative to the project when inside it: Pulumi resolves asset paths against the program's directory, and
    the state (and the plan's JSON) should not carry one machine's absolute paths."""
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return path.resolve()
