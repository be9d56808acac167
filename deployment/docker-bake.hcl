# Multi-arch images: `docker buildx bake -f deployment/docker-bake.hcl` from the repository root (paths below are
# relative to it). Every image is built for linux/amd64 and linux/arm64 (Raspberry Pi 4/5) and tagged with the
# project version and the git commit. The default group is what edge devices run; `all` adds the fleet hub, which
# runs on the hub machine (the target `hub` alone builds only it). Examples (docs/containers.md):
#   REGISTRY=registry.example:5000/vio-edge GIT_SHA=$(git rev-parse --short HEAD) \
#     docker buildx bake -f deployment/docker-bake.hcl --push all
#   docker buildx bake -f deployment/docker-bake.hcl hub                                     # the hub alone
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
  # The edge images: what a device pulls.
  targets = ["model-serving", "orchestrator", "interface"]
}

group "all" {
  # No group named "hub": groups and targets share one namespace in bake, and the target already has the name.
  targets = ["model-serving", "orchestrator", "interface", "hub"]
}

target "_image" {
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
  inherits   = ["_image"]
  dockerfile = "deployment/Dockerfile.model-serving"
  tags       = ["${REGISTRY}/model-serving:${VERSION}", "${REGISTRY}/model-serving:${VERSION}-${GIT_SHA}"]
}

target "orchestrator" {
  inherits   = ["_image"]
  dockerfile = "deployment/Dockerfile.orchestrator"
  tags       = ["${REGISTRY}/orchestrator:${VERSION}", "${REGISTRY}/orchestrator:${VERSION}-${GIT_SHA}"]
}

target "interface" {
  inherits   = ["_image"]
  dockerfile = "deployment/Dockerfile.interface"
  tags       = ["${REGISTRY}/interface:${VERSION}", "${REGISTRY}/interface:${VERSION}-${GIT_SHA}"]
}

target "hub" {
  inherits   = ["_image"]
  dockerfile = "deployment/Dockerfile.hub"
  tags       = ["${REGISTRY}/hub:${VERSION}", "${REGISTRY}/hub:${VERSION}-${GIT_SHA}"]
}
