"""The model repositories' contents as bucket objects: what `modelfleet render` writes is what Triton reads.

Nothing is decided here: `modelfleet.release` lists the objects (keys, config text, local artefact files, hashes).
Each object is written by the provider of the first region reading its bucket (an S3 bucket per AWS region; one
GCS bucket may serve every GCP region, and is then written once).
"""

from __future__ import annotations

import re

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from modelfleet.release import ReleaseObject
from modelfleet.spec import kube_name


def _name(obj: ReleaseObject) -> str:
    """`aws-us-east-1-fraud-detector-1-model.npz`: the key below the model's folder (the spec names the folder
    after the model), so names stay short and unique per writing region."""
    return f"{obj.writer}-{kube_name(obj.model)}-" + re.sub(r"[^A-Za-z0-9.-]", "-", obj.key.rsplit(f"{obj.model}/", 1)[-1])


def bucket_object(obj: ReleaseObject, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    source = {"content": obj.content} if obj.content is not None else {"source": pulumi.FileAsset(obj.path)}
    # The sha256 rides along as metadata: anyone can compare an object with the plan (and the Deployment's
    # config annotation) from the bucket alone.
    metadata = {"sha256": obj.sha256, "model": obj.model}
    if obj.cloud == "aws":
        return aws.s3.BucketObjectv2(_name(obj), bucket=obj.bucket, key=obj.key, metadata=metadata,
                                     content_type="text/plain" if obj.content is not None else None, opts=opts,
                                     **source)
    return gcp.storage.BucketObject(_name(obj), bucket=obj.bucket, name=obj.key, metadata=metadata,
                                    content_type="text/plain" if obj.content is not None else None, opts=opts,
                                    **source)
