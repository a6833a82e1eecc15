#!/usr/bin/env bash
# Start N `zoo train` workers on this machine, one process each, with TF_CONFIG naming all
# of them on 127.0.0.1 (as tests/test_multi_worker.py does). On several machines give every
# worker the same "cluster" list of host:port and its own "task" index (k8s-job.yaml).
#
# usage:  docs/cluster/launch_local.sh N RECIPE [zoo train options...]
#   e.g.  docs/cluster/launch_local.sh 2 dcgan_mnist --logdir runs
#   after a failure, rerun with the same arguments plus --resume (on every worker).
#
# Worker 0 is the chief: it writes the run folder and prints to this terminal; worker i > 0
# logs to $LOGS/worker-<i>.log and writes only a temporary folder, removed at the end.
# data.batch_size is the GLOBAL batch (each worker trains on 1/N of every batch).
#
# environment:
#   ZOO        the zoo command (default: zoo; e.g. ZOO="python -m zoo.cli")
#   BASE_PORT  worker i listens on 127.0.0.1:$((BASE_PORT + i)) (default: 23456)
#   LOGS       folder of the other workers' logs (default: .)
#   DRY_RUN=1  print each worker's TF_CONFIG and command, start nothing
set -euo pipefail

if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
    sed -n '6,8p' "$0" >&2
    exit 2
fi
workers=$1
shift
zoo=${ZOO:-zoo}
base_port=${BASE_PORT:-23456}
logs=${LOGS:-.}

hosts=""
for ((i = 0; i < workers; i++)); do
    hosts+="${hosts:+, }\"127.0.0.1:$((base_port + i))\""
done

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT TERM

for ((i = workers - 1; i >= 0; i--)); do  # the chief last, in the foreground's place
    tf_config="{\"cluster\": {\"worker\": [$hosts]}, \"task\": {\"type\": \"worker\", \"index\": $i}}"
    if [[ -n "${DRY_RUN:-}" ]]; then
        echo "TF_CONFIG='$tf_config' $zoo train $* --strategy multi_worker"
        continue
    fi
    if ((i == 0)); then
        TF_CONFIG=$tf_config $zoo train "$@" --strategy multi_worker &
    else
        mkdir -p "$logs"
        TF_CONFIG=$tf_config $zoo train "$@" --strategy multi_worker >"$logs/worker-$i.log" 2>&1 &
    fi
    pids+=("$!")
done
[[ -n "${DRY_RUN:-}" ]] && exit 0

status=0
for ((k = 0; k < workers; k++)); do
    i=$((workers - 1 - k))
    if ! wait "${pids[$k]}"; then
        status=1
        if ((i > 0)); then echo "worker $i failed; its log: $logs/worker-$i.log" >&2; fi
    fi
done
exit $status
