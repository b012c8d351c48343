#!/usr/bin/env bash
# Build the openscene-ray image (one image for head + CPU/GPU workers) and push it.
#
#   REGISTRY=123456789012.dkr.ecr.us-west-2.amazonaws.com cluster/docker/build_push.sh
#   REGISTRY=ghcr.io/my-org PUSH=0 cluster/docker/build_push.sh        # build only
#
# Environment:
#   REGISTRY     registry/namespace to push to (required unless PUSH=0)
#   IMAGE_NAME   repository name                       (default: openscene-ray)
#   TAG          image tag                             (default: short git sha, "-dirty" if the
#                                                       tree has uncommitted changes)
#   PUSH         1 = push after building, 0 = build only (default: 1)
#   PLATFORM     docker --platform                     (default: linux/amd64; spconv/cumm wheels are x86_64)
#   EXTRA_TAGS   space-separated additional tags, e.g. "latest ray-2.60.0"
#
# The tag it built is printed on the last line (IMAGE=...): put that into cluster/aws/cluster.yaml
# (docker.image) and cluster/k8s/*.yaml (image:) so every node runs exactly this build.
# For ECR, log in first:
#   aws ecr get-login-password | docker login --username AWS --password-stdin "$REGISTRY"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

IMAGE_NAME="${IMAGE_NAME:-openscene-ray}"
PUSH="${PUSH:-1}"
PLATFORM="${PLATFORM:-linux/amd64}"

if [[ -z "${TAG:-}" ]]; then
    TAG="$(git rev-parse --short=12 HEAD)"
    if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
        TAG="${TAG}-dirty"
    fi
fi

if [[ "$PUSH" == "1" && -z "${REGISTRY:-}" ]]; then
    echo "build_push.sh: set REGISTRY (e.g. <acct>.dkr.ecr.<region>.amazonaws.com) or PUSH=0" >&2
    exit 2
fi
REF="${REGISTRY:+${REGISTRY%/}/}${IMAGE_NAME}:${TAG}"

RAY_VERSION="$(sed -n 's/^ARG RAY_VERSION=//p' cluster/docker/Dockerfile)"
echo "building ${REF} (ray ${RAY_VERSION}, platform ${PLATFORM})" >&2

DOCKER_BUILDKIT=1 docker build \
    --platform "$PLATFORM" \
    --file cluster/docker/Dockerfile \
    --build-arg "RAY_VERSION=${RAY_VERSION}" \
    --label "org.opencontainers.image.revision=$(git rev-parse HEAD)" \
    --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --tag "$REF" \
    .

for extra in ${EXTRA_TAGS:-}; do
    docker tag "$REF" "${REF%:*}:${extra}"
done

if [[ "$PUSH" == "1" ]]; then
    docker push "$REF"
    for extra in ${EXTRA_TAGS:-}; do
        docker push "${REF%:*}:${extra}"
    done
fi

echo "IMAGE=${REF}"
