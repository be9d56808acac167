# Multi-arch edge images: `docker buildx bake -f deployment/docker-bake.hcl` from the repository root (paths below
# are relative to it). Every image is built for linux/amd64 and linux/arm64 (Raspberry Pi 4/5) and tagged with
# the project version and the git commit. Examples (docs/containers.md):
#   REGISTRY=registry.example:5000/vio-edge GIT_SHA=$(git rev-parse --short HEAD) \
#     docker buildx bake -f deployment/docker-bake.hcl --push
#   docker buildx bake -f deployment/docker-bake.hcl --set '*.platform=linux/amd64' --load   # one arch, local
# Behind a TLS-inspecting proxy add: --set '*.secrets=id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt'

variable "REGISTRY" {
  # Image names are ${REGISTRY}/<service>; docker-compose.yml uses the same (EDGE_REGISTRY).
  default = "vio-edge"
}

variable "VERSION" {
  # The project version: keep equal to pyproject.toml (tests/static/test_packaging.py checks it).
  default = "0.1.0"
}

variable "GIT_SHA" {
  # The commit the images are built from: GIT_SHA=$(git rev-parse --short HEAD).
  default = "dev"
}

variable "BASE_IMAGE" {
  # Debian 12 with Python 3.11 (python3, venv, pip); the same base for the build and the runtime stages.
  default = "python:3.11-slim-bookworm"
}

group "default" {
  targets = ["model-serving", "orchestrator", "interface"]
}

target "_edge" {
  context   = "."
  platforms = ["linux/amd64", "linux/arm64"]
  args = {
    BASE_IMAGE = BASE_IMAGE
    VERSION    = VERSION
    GIT_SHA    = GIT_SHA
  }
  labels = {
    "org.opencontainers.image.version"  = VERSION
    "org.opencontainers.image.revision" = GIT_SHA
  }
}

target "model-serving" {
  inherits   = ["_edge"]
  dockerfile = "deployment/Dockerfile.model-serving"
  tags       = ["${REGISTRY}/model-serving:${VERSION}", "${REGISTRY}/model-serving:${VERSION}-${GIT_SHA}"]
}

target "orchestrator" {
  inherits   = ["_edge"]
  dockerfile = "deployment/Dockerfile.orchestrator"
  tags       = ["${REGISTRY}/orchestrator:${VERSION}", "${REGISTRY}/orchestrator:${VERSION}-${GIT_SHA}"]
}

target "interface" {
  inherits   = ["_edge"]
  dockerfile = "deployment/Dockerfile.interface"
  tags       = ["${REGISTRY}/interface:${VERSION}", "${REGISTRY}/interface:${VERSION}-${GIT_SHA}"]
}
