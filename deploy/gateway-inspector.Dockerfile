# The gateway's inspection service in the cloud: modelfleet.gateway.run_service (role extproc), the same code and
# specs as the local stack's. Built by the release step from the commit it deploys, pushed by digest to each
# region's registry (ECR modelfleet/gateway-inspector, Artifact Registry <region>-docker.pkg.dev/<project>/
# modelfleet/gateway-inspector); the stack names that digest in modelfleet:gateway.inspector_image_digest.
# README, "The gateway in the cloud", has the commands. Pin the base image by digest when you first build it.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY modelfleet ./modelfleet
COPY components ./components
COPY models ./models
COPY stacks ./stacks
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin inspector
USER 10001
ENV PYTHONDONTWRITEBYTECODE=1
ENTRYPOINT []
