# Shared by the experiment scripts (source it): their input checks and their two-worker queue.

# Exits with a message naming the script when the kd binary or the teacher is missing.
require_kd_and_teacher() {  # script kd teacher
  [ -x "$2" ] || { echo "$1: no kd binary at $2 (build it, or set KD_BIN)" >&2; exit 2; }
  [ -f "$3" ] || { echo "$1: no teacher at $3 (run tools/run_demo.sh, or set KD_TEACHER)" >&2; exit 2; }
}

# Runs `fn WORD...` for each job (a line of words) on two background workers, for two runs at a
# time with one thread each on 2 cores: the jobs alternate between the workers in the order
# given (<out>/queue.0 and queue.1 keep the split). Returns when both are done.
run_on_two_workers() {  # fn out job...
  local fn=$1 out=$2 q
  shift 2
  printf '%s\n' "$@" | awk 'NR % 2 == 1' > "$out/queue.0"
  printf '%s\n' "$@" | awk 'NR % 2 == 0' > "$out/queue.1"
  for q in 0 1; do
    (while read -r -a job; do [ ${#job[@]} -gt 0 ] && "$fn" "${job[@]}"; done < "$out/queue.$q") &
  done
  wait
}
