#!/usr/bin/env bash
# Analyse a corpus on a Slurm cluster: an N-task job array (task i analyses shard i/N into DIR/shards/i) and a merge
# job that runs when every task has succeeded (DIR/merged). See docs/scale.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: analyze-array.sh --tasks N --out DIR [--partition P] [--gpus-per-task G] [--time T] [--cpus-per-task C]
                        [--tool CMD] [--wait] -- <analyze options>

  --tasks N          shards, one array task each (task i writes DIR/shards/i; a retried task replaces its own shard)
  --out DIR          shards in DIR/shards, the merged analysis in DIR/merged, job logs in DIR/logs
  --partition P      Slurm partition (default: the cluster's default)
  --gpus-per-task G  GPUs for each task; each task then analyses with --device cuda:all (every GPU Slurm gave it,
                     its batches dealt to them) unless the analyze options name a --device
  --time T           time limit of each task (Slurm's format, e.g. 02:00:00)
  --cpus-per-task C  CPU cores of each task (analyze's --threads defaults to all it sees)
  --tool CMD         how to run relu-sparsity on the nodes (default: $RELU_SPARSITY or relu-sparsity)
  --wait             block until the merge ends; exit with its status
  <analyze options>  passed to every task, e.g. --model M.onnx --corpus C --tokenizer SPEC --seq-len 128;
                     not --shard or --out (the script sets them)

Prints the array's and the merge's job ids. The merge runs only if every task succeeded (afterok) and is cancelled
otherwise; merge refuses a missing shard.
EOF
}

tasks="" out="" partition="" gpus="" time_limit="" cpus="" wait=0 tool="${RELU_SPARSITY:-relu-sparsity}"
fail() { echo "error: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tasks) tasks="${2:-}"; shift 2 ;;
    --out) out="${2:-}"; shift 2 ;;
    --partition) partition="${2:-}"; shift 2 ;;
    --gpus-per-task) gpus="${2:-}"; shift 2 ;;
    --time) time_limit="${2:-}"; shift 2 ;;
    --cpus-per-task) cpus="${2:-}"; shift 2 ;;
    --tool) tool="${2:-}"; shift 2 ;;
    --wait) wait=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) fail "unknown option $1 (analyze options go after --; see --help)" ;;
  esac
done
[[ "$tasks" =~ ^[1-9][0-9]*$ ]] || fail "--tasks N is required: the number of shards, at least 1."
[[ -n "$out" ]] || fail "--out DIR is required."
[[ $# -gt 0 ]] || fail "give the analyze options after --, e.g. -- --model M.onnx --corpus C --tokenizer SPEC --seq-len 128."
for a in "$@"; do
  case "$a" in --shard|--shard=*|--shard-count|--out|--out=*) fail "do not pass $a after --: each task gets --shard auto and --out DIR/shards/<i>." ;; esac
done
command -v sbatch >/dev/null || fail "sbatch is not on PATH: run this on a Slurm login node."
# Every task and the merge run $tool: one that does not start here (nodes share the login node's software) would fail
# every task and cancel the merge, so it is tried before anything is submitted or created.
bash -c "$tool --version" >/dev/null 2>&1 ||
  fail "'$tool --version' does not run here: put relu-sparsity on the nodes' PATH, set RELU_SPARSITY, or pass --tool CMD (e.g. --tool 'dotnet /shared/relu-sparsity/relu-sparsity.dll'); nothing was submitted."

# A task's GPUs are the ones Slurm makes visible to it (CUDA_VISIBLE_DEVICES): cuda:all uses them all.
if [[ -n "$gpus" ]]; then
  [[ "$gpus" =~ ^[1-9][0-9]*$ ]] || fail "--gpus-per-task G: a count of GPUs, at least 1."
  device_given=0
  for a in "$@"; do case "$a" in --device|--device=*) device_given=1 ;; esac; done
  [[ $device_given == 1 ]] || set -- "$@" --device cuda:all
fi

out="$(mkdir -p "$out" && cd "$out" && pwd)"
mkdir -p "$out/shards" "$out/logs" "$out/jobs"
analyze_args="$(printf '%q ' "$@")"

# Each task: its shard from SLURM_ARRAY_TASK_ID (--shard auto), written beside DIR/shards/<i> and swapped in.
cat > "$out/jobs/analyze.sbatch" <<EOF
#!/usr/bin/env bash
set -euo pipefail
exec $tool analyze $analyze_args--shard auto --out "$out/shards/\${SLURM_ARRAY_TASK_ID}"
EOF
inputs=""
for ((i = 0; i < tasks; i++)); do inputs+=" $(printf '%q' "$out/shards/$i")"; done
cat > "$out/jobs/merge.sbatch" <<EOF
#!/usr/bin/env bash
set -euo pipefail
exec $tool merge --inputs$inputs --out "$out/merged"
EOF

common=(--parsable)
[[ -n "$partition" ]] && common+=(--partition "$partition")
[[ -n "$time_limit" ]] && common+=(--time "$time_limit")
array=("${common[@]}" --job-name relu-sparsity-analyze --array "0-$((tasks - 1))" --output "$out/logs/analyze-%A_%a.out")
[[ -n "$gpus" ]] && array+=(--gpus-per-task "$gpus")
[[ -n "$cpus" ]] && array+=(--cpus-per-task "$cpus")

array_id="$(sbatch "${array[@]}" "$out/jobs/analyze.sbatch")"
array_id="${array_id%%;*}"
merge_id="$(sbatch "${common[@]}" --job-name relu-sparsity-merge --dependency "afterok:$array_id" --kill-on-invalid-dep=yes \
  --output "$out/logs/merge-%j.out" "$out/jobs/merge.sbatch")"
merge_id="${merge_id%%;*}"
echo "Submitted job array $array_id ($tasks tasks: $out/shards/0..$((tasks - 1))) and merge job $merge_id (after all succeed: $out/merged)."
echo "Logs: $out/logs"
[[ "$wait" == 1 ]] || exit 0

# Wait for the merge: it ends COMPLETED, FAILED, or CANCELLED when a task failed (its dependency can never be met).
while true; do
  state="$(scontrol show job "$merge_id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)"
  case "$state" in
    COMPLETED) echo "Merge job $merge_id completed: $out/merged/stats.json"; exit 0 ;;
    FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)
      echo "error: merge job $merge_id ended $state; see $out/logs (a failed task cancels the merge)." >&2; exit 1 ;;
    "") echo "error: Slurm no longer knows merge job $merge_id; see $out/logs." >&2; exit 1 ;;
  esac
  sleep 2
done
