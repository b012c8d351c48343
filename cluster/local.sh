#!/usr/bin/env bash
# A single-machine Ray "cluster" for openscene-ray: one head, started from the project's venv.
#
#   cluster/local.sh start [--num-gpus N] [--num-cpus N] [-- RAY_START_ARGS...]
#                                                           start the head (GPUs: nvidia-smi count)
#   cluster/local.sh status                                 `ray status` against it
#   cluster/local.sh submit STAGE --config CONFIG [...]     cluster/submit.sh against it
#   cluster/local.sh stop                                   `ray stop` (stops EVERY Ray process
#                                                           of this user on this machine)
#
# Why from the venv: a job's entrypoint (`python jobs/<stage>.py`) runs in the environment of
# the head's raylet. A head started from a system Python makes every job fail with "No module
# named 'ray'" (or runs another Ray/torch than uv.lock pins). `uv run` puts .venv first on PATH
# for `ray start` and therefore for every worker and job it spawns.
#
# Token auth: Ray 2.59+ enables it for new local clusters. This script makes sure a token exists
# (~/.ray/auth_token, `ray get-auth-token --generate`) and starts the head with
# RAY_AUTH_MODE=token, so cluster/submit.sh (which finds the same file) can authenticate.
# Set RAY_AUTH_MODE=disabled to start without it.
#
# The dashboard and job server listen on 127.0.0.1 only (http://127.0.0.1:8265). S3 settings
# (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, ...) are taken from this shell: every worker
# inherits the head's environment, so they never need to go through runtime_env.
#
# Environment: RAY_PORT (6379), DASHBOARD_PORT (8265), OBJECT_STORE_MEMORY (bytes; Ray's default
# is 30% of RAM), RAY_TEMP_DIR (default /tmp/ray).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG="cluster/local.sh"
RAY_PORT="${RAY_PORT:-6379}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8265}"

die() {
    echo "${PROG}: $*" >&2
    exit 2
}

usage() {
    sed -n '4,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

command -v uv >/dev/null 2>&1 || die "uv not found (make uv, or pip install uv)"
cd "$ROOT"

detect_gpus() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | grep -c . || true
    else
        echo 0
    fi
}

cmd_start() {
    local num_gpus="" num_cpus=""
    local extra=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --) shift; extra=("$@"); break ;;
            --num-gpus) [[ $# -ge 2 ]] || die "--num-gpus needs a value"; num_gpus="$2"; shift 2 ;;
            --num-gpus=*) num_gpus="${1#*=}"; shift ;;
            --num-cpus) [[ $# -ge 2 ]] || die "--num-cpus needs a value"; num_cpus="$2"; shift 2 ;;
            --num-cpus=*) num_cpus="${1#*=}"; shift ;;
            *) die "start: unknown option '$1'" ;;
        esac
    done
    if [[ -z "$num_gpus" ]]; then
        num_gpus="$(detect_gpus)"
    fi
    [[ "$num_gpus" =~ ^[0-9]+$ ]] || die "--num-gpus must be a whole number, got '${num_gpus}'"
    [[ -z "$num_cpus" || "$num_cpus" =~ ^[0-9]+$ ]] || die "--num-cpus must be a whole number, got '${num_cpus}'"

    if [[ "${RAY_AUTH_MODE:-token}" == "token" ]]; then
        export RAY_AUTH_MODE=token
        if [[ -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" && ! -f "${HOME}/.ray/auth_token" ]]; then
            uv run --locked ray get-auth-token --generate >/dev/null
        fi
    fi

    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

    local args=(--head
        --port="$RAY_PORT"
        --dashboard-host=127.0.0.1
        --dashboard-port="$DASHBOARD_PORT"
        --num-gpus="$num_gpus"
        --disable-usage-stats)
    if [[ -n "$num_cpus" ]]; then args+=(--num-cpus="$num_cpus"); fi
    if [[ -n "${OBJECT_STORE_MEMORY:-}" ]]; then args+=(--object-store-memory="$OBJECT_STORE_MEMORY"); fi
    if [[ -n "${RAY_TEMP_DIR:-}" ]]; then args+=(--temp-dir="$RAY_TEMP_DIR"); fi
    if [[ ${#extra[@]} -gt 0 ]]; then args+=("${extra[@]}"); fi

    # `uv run --locked` runs from .venv after checking it against uv.lock (an inexact sync: it
    # never removes the test extras a plain `uv sync` would).
    RAY_TRAIN_V2_ENABLED=1 uv run --locked ray start "${args[@]}"
    echo "${PROG}: head up: dashboard/job server http://127.0.0.1:${DASHBOARD_PORT} (auth: ${RAY_AUTH_MODE:-disabled})" >&2
    echo "${PROG}: submit with: ${PROG} submit fuse --config configs/<file>.yaml" >&2
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    status)
        shift
        if [[ "${RAY_AUTH_MODE:-}" == "" && -f "${HOME}/.ray/auth_token" ]]; then
            export RAY_AUTH_MODE=token
        fi
        exec uv run --locked ray status --address="127.0.0.1:${RAY_PORT}" "$@"
        ;;
    submit)
        shift
        RAY_API_SERVER_ADDRESS="http://127.0.0.1:${DASHBOARD_PORT}" exec uv run --locked "$ROOT/cluster/submit.sh" "$@"
        ;;
    stop) shift; exec uv run --locked ray stop "$@" ;;
    -h|--help|help) usage ;;
    "") usage >&2; exit 2 ;;
    *) die "unknown command '$1'; expected start | status | submit | stop" ;;
esac
