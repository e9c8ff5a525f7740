# Sourced by the sweep scripts: run commands as background jobs, wait for all of them, and leave
# nothing running when one fails or the script is stopped (the EXIT trap kills every job's process
# tree: fairseq-train runs as a child of the job's subshell, so killing the subshell alone would not
# stop it).
#   start_job COMMAND...   (a shell function works too)
#   wait_jobs              (returns the first failure's status as soon as that job ends; under
#                           set -e the script stops, and the trap stops the jobs still running)
# Needs bash >= 5.1 (wait -n -p).
BACKGROUND_PIDS=()
tree_pids() {  # $1 and its descendants, children first
  local child
  for child in $(pgrep -P "$1" || true); do tree_pids "$child"; done
  echo "$1"
}
alive() { ps -o stat= -p "$1" 2>/dev/null | grep -qv Z; }  # running, not a zombie
stop_jobs() {  # TERM every job's tree, wait up to 10 s for all of it to exit, then KILL what is left
  local pids=() pid i left
  for pid in "${BACKGROUND_PIDS[@]}"; do pids+=($(tree_pids "$pid")); done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    left=0
    for pid in "${pids[@]}"; do alive "$pid" && left=1; done
    [[ $left == 1 ]] || return 0
    sleep 0.1
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}
start_job() { "$@" & BACKGROUND_PIDS+=($!); }
wait_jobs() {  # whichever job ends first; a waited job leaves the list (its pid is free for reuse)
  local status finished
  while [[ ${#BACKGROUND_PIDS[@]} -gt 0 ]]; do
    status=0
    wait -n -p finished "${BACKGROUND_PIDS[@]}" || status=$?
    BACKGROUND_PIDS=($(printf '%s\n' "${BACKGROUND_PIDS[@]}" | grep -vx "$finished" || true))
    [[ $status == 0 ]] || return "$status"
  done
}
trap stop_jobs EXIT
