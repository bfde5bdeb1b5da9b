#!/usr/bin/env bash
# A real cluster scheduler, on one machine: install Debian's slurm-wlm and munge when
# missing, start a single-node Slurm (munged, slurmctld, slurmd started directly: there is
# no systemd), run a sweep preset as a Slurm job array of shards (`sbatch --array`), merge
# the shards with `lab merge`, run the same sweep on this machine alone, and check that the
# two result directories are identical byte for byte (merge's promise: results.jsonl,
# meta.json, summaries, plots and page; scenarios/sweep/merge.ts).
#
# Everything Slurm and munge need lives in a private state directory (--state): its
# slurm.conf (SLURM_CONF points there, /etc is not touched), munge key and socket, spool,
# state, pid and log files. Daemons of that state directory that are already running are
# reused; the ones this run starts are stopped at the end unless --keep.
#
# Not part of .ci/run: it installs packages and runs daemons as root.
# Exit: 0 PASS, 1 FAIL (or Slurm could not be set up), 2 bad arguments.
# Progress on stderr; the PASS/FAIL line on stdout.
set -uo pipefail

PROG=slurm-local.sh
USAGE="usage: $PROG [--state DIR] [--out DIR] [--spec NAME] [--shards N] [--keep] [--timeout SECONDS]"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

STATE=${TMPDIR:-/tmp}/notifier-lab-slurm
OUT=''
SPEC=batching
SHARDS=4
KEEP=0
TIMEOUT=60

bad() {
  echo "$PROG: $1; $USAGE" >&2
  exit 2
}
needs_value() { [ $# -ge 2 ] && [ -n "$2" ] || bad "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --state) needs_value "$@"; STATE=$2; shift 2 ;;
    --state=*) STATE=${1#*=}; [ -n "$STATE" ] || bad "--state needs a value"; shift ;;
    --out) needs_value "$@"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; [ -n "$OUT" ] || bad "--out needs a value"; shift ;;
    --spec) needs_value "$@"; SPEC=$2; shift 2 ;;
    --spec=*) SPEC=${1#*=}; [ -n "$SPEC" ] || bad "--spec needs a value"; shift ;;
    --shards) needs_value "$@"; SHARDS=$2; shift 2 ;;
    --shards=*) SHARDS=${1#*=}; shift ;;
    --timeout) needs_value "$@"; TIMEOUT=$2; shift 2 ;;
    --timeout=*) TIMEOUT=${1#*=}; shift ;;
    --keep) KEEP=1; shift ;;
    -h | --help)
      cat <<EOF
$USAGE

Run the sweep SPEC (default batching) as a Slurm job array of N shards (default 4) on a
single-node Slurm of this machine, merge the shards, run the same sweep here alone, and
check both are identical byte for byte. Installs slurm-wlm and munge when missing (root).

  --state DIR       Slurm and munge state: slurm.conf, munge key, spool, logs
                    (default \${TMPDIR:-/tmp}/notifier-lab-slurm); daemons of DIR that
                    are running are reused
  --out DIR         where the shards, the merge and the single-machine run go; must be
                    new or empty (default DIR/runs/<UTC time>)
  --spec NAME       a sweep preset or spec .json (default batching)
  --shards N        array tasks, 1 to 64 (default 4)
  --keep            leave the daemons running (the next run reuses them)
  --timeout SECONDS how long to wait for the node to come up (default 60)
EOF
      exit 0 ;;
    *) bad "unknown argument '$1'" ;;
  esac
done
[[ $SHARDS =~ ^[0-9]+$ ]] && [ "$SHARDS" -ge 1 ] && [ "$SHARDS" -le 64 ] || bad "--shards must be an integer from 1 to 64, got '$SHARDS'"
[[ $TIMEOUT =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -ge 1 ] || bad "--timeout must be a whole number of seconds >= 1, got '$TIMEOUT'"
STATE=$(realpath -m -- "$STATE")
[ ! -e "$STATE" ] || [ -d "$STATE" ] || bad "--state $STATE is not a directory"
if [ -z "$OUT" ]; then OUT=$STATE/runs/$(date -u +%Y%m%dT%H%M%SZ)-$$; fi
OUT=$(realpath -m -- "$OUT")
if [ -e "$OUT" ]; then
  [ -d "$OUT" ] || bad "--out $OUT is not a directory"
  [ -z "$(ls -A -- "$OUT")" ] || bad "--out $OUT is not empty (choose a new directory)"
fi

say() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
fail() {
  echo "FAIL: $*"
  exit 1
}

[ "$(id -u)" = 0 ] || fail "$PROG needs root (it installs packages and runs slurmd, which starts jobs as their user)"
NODE=$(command -v node) || fail "node is not on PATH"
T0=$(now)

# ---------------------------------------------------------------- state directory
mkdir -p "$STATE/munge" "$STATE/ctld" "$STATE/spool" "$STATE/log" || fail "cannot create --state $STATE"
# munged wants its socket's directories searchable by all (the key itself is 0400).
chmod 0711 "$STATE" "$STATE/munge"

# ---------------------------------------------------------------- packages
missing=()
for bin in munged; do command -v "$bin" >/dev/null || missing+=(munge); done
for bin in slurmctld slurmd sbatch sinfo squeue scancel; do
  command -v "$bin" >/dev/null || { missing+=(slurm-wlm); break; }
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$STATE/log/apt.log" 2>&1; then
    apt-get update -q >>"$STATE/log/apt.log" 2>&1
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$STATE/log/apt.log" 2>&1 ||
      fail "apt-get install ${missing[*]} failed (log: $STATE/log/apt.log)"
  fi
fi

export SLURM_CONF=$STATE/slurm.conf

# A pid file whose process is alive and runs `name`.
running() {
  local pidfile=$1 name=$2 pid
  [ -s "$pidfile" ] || return 1
  pid=$(tr -dc 0-9 <"$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}
pid_of() { tr -dc 0-9 <"$1"; }

STARTED=()   # "name pidfile" of the daemons this run started, in start order
JOB=''
# SIGTERM the daemon of a pid file and wait (at most 10 s) until it is gone.
stop_daemon() {
  local name=$1 pidfile=$2 pid n
  running "$pidfile" "$name" || return 0
  pid=$(pid_of "$pidfile")
  kill "$pid" 2>/dev/null
  for ((n = 0; n < 100; n++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then say "$name (pid $pid) is still running 10 s after SIGTERM"; else say "stopped $name (pid $pid)"; fi
}
stop_started() {
  local i name pidfile
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    read -r name pidfile <<<"${STARTED[$i]}"
    stop_daemon "$name" "$pidfile"
  done
}
cleanup() {
  local rc=$?
  if [ -n "$JOB" ] && [ "$rc" -ne 0 ]; then scancel "$JOB" 2>/dev/null; fi
  if [ "$KEEP" = 1 ]; then
    [ ${#STARTED[@]} -eq 0 ] || say "--keep: leaving the daemons running (SLURM_CONF=$SLURM_CONF)"
  else
    stop_started
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- munge
MUNGE_KEY=$STATE/munge/munge.key
MUNGE_SOCKET=$STATE/munge/munge.socket
MUNGE_PID=$STATE/munge/munged.pid
if [ ! -s "$MUNGE_KEY" ]; then
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$MUNGE_KEY" >/dev/null 2>&1 || fail "mungekey could not create $MUNGE_KEY"
  else
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none || fail "cannot create $MUNGE_KEY"
  fi
  say "created the munge key $MUNGE_KEY"
fi
chmod 0400 "$MUNGE_KEY"
if running "$MUNGE_PID" munged; then
  say "munged is running (pid $(pid_of "$MUNGE_PID")), reused"
else
  # --force: munged refuses to run as root otherwise; everything it owns is in $STATE/munge.
  munged --force --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PID" \
    --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed" >>"$STATE/log/munged.log" 2>&1 ||
    fail "munged did not start: $(tail -n 3 "$STATE/log/munged.log" | tr '\n' ' ')"
  for ((n = 0; n < 50; n++)); do running "$MUNGE_PID" munged && [ -S "$MUNGE_SOCKET" ] && break; sleep 0.1; done
  running "$MUNGE_PID" munged || fail "munged did not start: $(tail -n 3 "$STATE/log/munged.log" | tr '\n' ' ')"
  STARTED+=("munged $MUNGE_PID")
  say "started munged (pid $(pid_of "$MUNGE_PID"), socket $MUNGE_SOCKET)"
fi
echo probe | munge --socket="$MUNGE_SOCKET" | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1 ||
  fail "munge cannot encode and decode a credential on $MUNGE_SOCKET (log: $STATE/log/munged.log)"

# ---------------------------------------------------------------- slurm.conf
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.95 }' /proc/meminfo)
CTLD_PID=$STATE/slurmctld.pid
SLURMD_PID=$STATE/slurmd.pid
CONF_TEXT="# Written by scenarios/sweep/slurm-local.sh: a single-node Slurm for the sweep check.
ClusterName=notifierlab
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups, no accounting: processes are tracked through /proc, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=lab Nodes=$HOST Default=YES MaxTime=INFINITE State=UP"
if [ ! -f "$SLURM_CONF" ] || [ "$(cat "$SLURM_CONF")" != "$CONF_TEXT" ]; then
  # A changed configuration: daemons of this state directory still on the old one restart.
  if running "$SLURMD_PID" slurmd || running "$CTLD_PID" slurmctld; then
    say "slurm.conf changed: restarting the daemons of $STATE"
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
  fi
  printf '%s\n' "$CONF_TEXT" >"$SLURM_CONF"
  say "wrote $SLURM_CONF (node $HOST: $CPUS CPUs, $MEM MB)"
fi
say "$(sinfo --version), $(munged --version 2>&1 | awk '{ print $1; exit }')"

# ---------------------------------------------------------------- slurmctld, slurmd
start_daemon() {
  local name=$1 pidfile=$2 log=$3 n
  shift 3
  if running "$pidfile" "$name"; then
    say "$name is running (pid $(pid_of "$pidfile")), reused"
    return
  fi
  "$@" >>"$log" 2>&1 || fail "$name did not start: $(tail -n 3 "$log" | tr '\n' ' ')"
  for ((n = 0; n < 100; n++)); do running "$pidfile" "$name" && break; sleep 0.1; done
  running "$pidfile" "$name" || fail "$name did not start: $(tail -n 3 "$log" | tr '\n' ' ')"
  STARTED+=("$name $pidfile")
  say "started $name (pid $(pid_of "$pidfile"))"
}
# -c: a controller this script starts has no jobs worth keeping (the state directory is private).
start_daemon slurmctld "$CTLD_PID" "$STATE/log/slurmctld.log" slurmctld -c
start_daemon slurmd "$SLURMD_PID" "$STATE/log/slurmd.log" slurmd -N "$HOST"

say "waiting for node $HOST to be idle (at most $TIMEOUT s)"
deadline=$((SECONDS + TIMEOUT))
state=''
while :; do
  state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1)
  case "$state" in idle | mixed | allocated) break ;; esac
  if [ $SECONDS -ge $deadline ]; then
    reason=$(scontrol show node "$HOST" 2>/dev/null | grep -o 'Reason=.*')
    fail "node $HOST is '${state:-not reported}' after $TIMEOUT s ${reason:+($reason) }(logs: $STATE/log/slurmctld.log, $STATE/log/slurmd.log)"
  fi
  sleep 1
done
say "node $HOST is $state ($(since "$T0") s since start)"

# ---------------------------------------------------------------- the job array
mkdir -p "$OUT"
BATCH=$OUT/shard.sbatch
cat >"$BATCH" <<EOF
#!/bin/sh
# One shard of the sweep per array task; --resume continues a requeued task.
exec "$NODE" bin/lab.js sweep "$SPEC" --jobs 1 --shard "\$SLURM_ARRAY_TASK_ID/$SHARDS" \\
  --out "$OUT/shard-\$SLURM_ARRAY_TASK_ID" --resume --quiet
EOF
LAST=$((SHARDS - 1))
say "sbatch --array=0-$LAST: sweep $SPEC in $SHARDS shards (one CPU each) -> $OUT/shard-*"
T1=$(now)
stdbuf -oL sbatch --parsable --wait --array="0-$LAST" --job-name=lab-sweep --chdir="$REPO" --cpus-per-task=1 \
  --output="$OUT/slurm-%A_%a.out" "$BATCH" >"$OUT/sbatch.out" 2>"$OUT/sbatch.err" &
SBATCH=$!
while [ -z "$JOB" ] && kill -0 "$SBATCH" 2>/dev/null; do
  JOB=$(cut -d';' -f1 "$OUT/sbatch.out" 2>/dev/null)
  sleep 0.2
done
[ -n "$JOB" ] || JOB=$(cut -d';' -f1 "$OUT/sbatch.out" 2>/dev/null)
say "submitted job $JOB"
while kill -0 "$SBATCH" 2>/dev/null; do
  for ((n = 0; n < 15; n++)); do kill -0 "$SBATCH" 2>/dev/null || break 2; sleep 1; done
  done_points=$(cat "$OUT"/shard-*/results.jsonl 2>/dev/null | wc -l)
  tasks=$(squeue -h -j "$JOB" -o %T 2>/dev/null | sort | uniq -c | awk '{ printf "%s%s %s", s, $1, tolower($2); s = ", " }')
  # sbatch --wait polls the controller at growing intervals (2, 8, then every 32 s).
  say "job $JOB: ${tasks:-every task ended, sbatch --wait has yet to poll}; ${done_points} points written"
done
wait "$SBATCH"
rc=$?
SLURM_S=$(since "$T1")
if [ "$rc" -ne 0 ]; then
  cat "$OUT/sbatch.err" >&2
  for f in "$OUT"/slurm-*.out; do [ -s "$f" ] && { echo "--- $f" >&2; tail -n 5 "$f" >&2; }; done
  fail "the job array $JOB failed (sbatch exit $rc after $SLURM_S s; task logs $OUT/slurm-*.out)"
fi
# The array's own span, from the controller (submission to the last task's end, 1 s resolution).
span=$(scontrol -o show job "$JOB" 2>/dev/null | tr ' ' '\n' | awk -F= '
  $1 == "SubmitTime" && (s == "" || $2 < s) { s = $2 }
  $1 == "EndTime" && $2 > e { e = $2 }
  END { if (s != "" && e != "") print s, e }')
ARRAY_S=''
if [ -n "$span" ]; then
  read -r submitted ended <<<"$span"
  ARRAY_S=$(($(date -d "$ended" +%s) - $(date -d "$submitted" +%s)))
fi
say "job $JOB done: tasks ended ${ARRAY_S:-?} s after submission, sbatch --wait returned after $SLURM_S s; $(for ((i = 0; i < SHARDS; i++)); do printf '%s ' "$(wc -l <"$OUT/shard-$i/results.jsonl")"; done)points per shard"

# ---------------------------------------------------------------- merge, single run, compare
shards=()
for ((i = 0; i < SHARDS; i++)); do shards+=("$OUT/shard-$i"); done
"$NODE" "$REPO/bin/lab.js" merge "${shards[@]}" --out "$OUT/merged" >&2 || fail "lab merge failed"

say "the same sweep on this machine alone: lab sweep $SPEC --jobs $CPUS -> $OUT/single"
T2=$(now)
(cd "$REPO" && "$NODE" bin/lab.js sweep "$SPEC" --jobs "$CPUS" --out "$OUT/single" --quiet) >&2 || fail "the single-machine sweep failed"
SINGLE_S=$(since "$T2")
say "single-machine run done in $SINGLE_S s"

files=$(cd "$OUT/single" && find . -type f | sed 's|^\./||' | sort)
nfiles=$(printf '%s\n' "$files" | wc -l)
points=$(wc -l <"$OUT/single/results.jsonl")
if diff -r -q "$OUT/single" "$OUT/merged" >&2; then
  echo "PASS: sweep $SPEC, $points points as a Slurm job array of $SHARDS shards (${ARRAY_S:-?} s) then lab merge, is byte-identical to one machine (${SINGLE_S} s): $nfiles files ($(printf '%s\n' "$files" | tr '\n' ' ' | sed 's/ $//'))"
  say "total $(since "$T0") s; results in $OUT"
  exit 0
fi
fail "the merged shards differ from the single-machine run (diff -r $OUT/single $OUT/merged)"
