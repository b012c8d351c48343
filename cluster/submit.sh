#!/usr/bin/env bash
# Submit one openscene-ray stage to a running Ray cluster as a Ray job.
#
#   uv run cluster/submit.sh STAGE --config CONFIG [--set KEY=VALUE]... [options] [-- JOB_ARGS...]
#
#   STAGE      fuse | distill | evaluate | query      (runs jobs/STAGE.py on the cluster)
#   --config   the stage's YAML config: a path inside this repo (uploaded with the code) or a
#              storage URI (s3://bucket/key.yaml)
#   --set      KEY=VALUE config override, repeatable (passed through to the job)
#   --address  job server URL; default $RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS, then
#              http://127.0.0.1:8265 (what `ray dashboard cluster/aws/cluster.yaml` or
#              `kubectl port-forward svc/openscene-head-svc 8265:8265` exposes)
#   --no-wait  return after submission instead of following the logs
#   --dry-run  print the `ray job submit` command instead of running it
#
# It runs, from the repository root:
#   ray job submit --address ADDR --submission-id STAGE-GITSHA-YYYYmmdd-HHMMSS \
#       --working-dir . --runtime-env cluster/runtime_env.yaml --metadata-json {...} \
#       -- python jobs/STAGE.py --config CONFIG [--set KEY=VALUE ...] [JOB_ARGS...]
# The code goes up as the job's working_dir (see excludes in cluster/runtime_env.yaml); the
# heavy dependencies are already in the cluster's image. Run it through `uv run` so the client
# is the project's Ray (2.60.0, the same version as the cluster).
#
# Token authentication (Ray >= 2.52; on by default for local clusters since 2.59): a cluster
# started with RAY_AUTH_MODE=token rejects job submissions without its token ("Missing
# authentication token"). The Ray CLI sends the token only when RAY_AUTH_MODE=token is set in
# the client's environment too, and reads it from, in order:
#   RAY_AUTH_TOKEN        the token itself
#   RAY_AUTH_TOKEN_PATH   a file containing it
#   ~/.ray/auth_token     the default file (`ray get-auth-token --generate` writes it; the AWS
#                         cluster.yaml copies this file to every node)
# KubeRay (authOptions.mode: token) keeps it in a Secret named after the RayCluster:
#   export RAY_AUTH_TOKEN=$(kubectl get secret openscene -o jsonpath='{.data.auth_token}' | base64 -d)
# This script exports RAY_AUTH_MODE=token when any of the three is present and RAY_AUTH_MODE is
# unset; set RAY_AUTH_MODE=disabled to opt out. Never pass the token through runtime_env or
# --set: Ray stores and displays both.
set -euo pipefail

readonly RAY_VERSION_PINNED="2.60.0"
readonly STAGES=(fuse distill evaluate query)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG="cluster/submit.sh"

usage() {
    sed -n '4,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {
    echo "${PROG}: $*" >&2
    exit 2
}

add_set() {
    [[ "$1" == ?*=* ]] || die "--set expects KEY=VALUE, got '$1'"
    SETS+=(--set "$1")
}

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case "$1" in
    -h|--help) usage; exit 0 ;;
esac

STAGE="$1"
shift
known=0
for s in "${STAGES[@]}"; do
    [[ "$STAGE" == "$s" ]] && known=1
done
if [[ $known -ne 1 ]]; then
    die "unknown stage '${STAGE}'; expected one of: ${STAGES[*]}"
fi

CONFIG=""
ADDRESS="${RAY_API_SERVER_ADDRESS:-${RAY_ADDRESS:-http://127.0.0.1:8265}}"
NO_WAIT=0
DRY_RUN=0
SETS=()
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --config) [[ $# -ge 2 ]] || die "--config needs a value"; CONFIG="$2"; shift 2 ;;
        --config=*) CONFIG="${1#*=}"; shift ;;
        --set) [[ $# -ge 2 ]] || die "--set needs KEY=VALUE"; add_set "$2"; shift 2 ;;
        --set=*) add_set "${1#*=}"; shift ;;
        --address) [[ $# -ge 2 ]] || die "--address needs a URL"; ADDRESS="$2"; shift 2 ;;
        --address=*) ADDRESS="${1#*=}"; shift ;;
        --no-wait) NO_WAIT=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown option '$1' (job arguments go after --)" ;;
    esac
done

cd "$ROOT"

[[ -n "$CONFIG" ]] || die "--config is required (a YAML under configs/ or an s3:// URI)"
if [[ "$CONFIG" != *://* ]]; then
    # Local configs travel inside working_dir, so they must be repo-relative paths.
    [[ "$CONFIG" != /* ]] || die "--config '${CONFIG}' is absolute; give a path relative to the repo root (it is uploaded with the code) or an s3:// URI"
    [[ -f "$CONFIG" ]] || die "--config '${CONFIG}' not found under ${ROOT}"
fi
ENTRY="jobs/${STAGE}.py"
[[ -f "$ENTRY" ]] || die "entry point ${ENTRY} is missing in ${ROOT}"

# The job server address must be the dashboard's HTTP endpoint, not the GCS port.
case "$ADDRESS" in
    http://*|https://*) ;;
    *) die "address '${ADDRESS}' is not an http(s) job server URL (e.g. http://127.0.0.1:8265)" ;;
esac

if SHA="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null)"; then
    if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
        SHA="${SHA}-dirty"
    fi
else
    SHA="nogit"
fi
SUBMISSION_ID="${STAGE}-${SHA}-$(date -u +%Y%m%d-%H%M%S)"

# Token auth: see the header.
if [[ -z "${RAY_AUTH_MODE:-}" ]]; then
    if [[ -n "${RAY_AUTH_TOKEN:-}" || -n "${RAY_AUTH_TOKEN_PATH:-}" || -f "${HOME}/.ray/auth_token" ]]; then
        export RAY_AUTH_MODE=token
    fi
fi
if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" && ! -f "${RAY_AUTH_TOKEN_PATH}" ]]; then
    die "RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH} does not exist"
fi

META_CONFIG="${CONFIG//[\"\\]/}"
RAY_BIN="${RAY_BIN:-ray}"
command -v "$RAY_BIN" >/dev/null 2>&1 \
    || die "'${RAY_BIN}' not found; run through the project env: uv run ${PROG} ..."

CMD=("$RAY_BIN" job submit
    --address "$ADDRESS"
    --submission-id "$SUBMISSION_ID"
    --working-dir .
    --runtime-env cluster/runtime_env.yaml
    --metadata-json "{\"stage\": \"${STAGE}\", \"git_sha\": \"${SHA}\", \"config\": \"${META_CONFIG}\"}")
if [[ $NO_WAIT -eq 1 ]]; then
    CMD+=(--no-wait)
fi
CMD+=(-- python "$ENTRY" --config "$CONFIG")
if [[ ${#SETS[@]} -gt 0 ]]; then
    CMD+=("${SETS[@]}")
fi
if [[ ${#EXTRA[@]} -gt 0 ]]; then
    CMD+=("${EXTRA[@]}")
fi

if [[ $DRY_RUN -eq 1 ]]; then
    printf '%q ' "${CMD[@]}"
    printf '\n'
    exit 0
fi

client_version="$("$RAY_BIN" --version 2>/dev/null | grep -Eo '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true)"
if [[ "$client_version" != "$RAY_VERSION_PINNED" ]]; then
    echo "${PROG}: warning: client Ray is '${client_version:-unknown}', the project pins ${RAY_VERSION_PINNED}; use 'uv run ${PROG}'" >&2
fi

echo "${PROG}: submitting ${SUBMISSION_ID} to ${ADDRESS} (auth: ${RAY_AUTH_MODE:-disabled})" >&2
exec "${CMD[@]}"
