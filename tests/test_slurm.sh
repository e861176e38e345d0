#!/usr/bin/env bash
# test_slurm.sh: cluster/snaptp.sbatch under a real Slurm. Starts a one-node cluster
# of its own (munged, slurmctld and slurmd from Debian's slurm-wlm, on free ports,
# with every file in a temporary directory), submits the README's QA job at 3 tasks
# once through mpirun (the script's default) and once through srun --mpi=pmix, and
# checks each output file: the answer and token counts must be tp = 1's. srun through
# PMI2, which Debian's Open MPI 4.1 does not speak, must fail rather than run three
# jobs of one. Stops the cluster at the end, also on failure.
# Not root: "skipped: <reason>". Slurm that fails to start: the logs, and a failure.
set -uo pipefail
root="${SNAPTP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
bin="${SNAPTP_BIN:-$root/build/snaptp}"
gguf="${SNAPTP_SMOLLM2_GGUF:-}"
[ -x "$bin" ] || { echo "test_slurm.sh: $bin not built" >&2; exit 1; }
[ -n "$gguf" ] || { echo "test_slurm.sh: SNAPTP_SMOLLM2_GGUF is not set" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
    echo "test_slurm.sh: skipped: not root (slurmd starts job steps as their user, munged and"\
         "slurmd need root here)"
    exit 0
fi
for c in munged slurmctld slurmd sbatch sinfo scontrol scancel srun; do
    command -v "$c" >/dev/null 2>&1 ||
        { echo "test_slurm.sh: $c not found: tests/setup.sh installs slurm-wlm and munge" >&2; exit 1; }
done

dir="$(mktemp -d /tmp/snaptp_slurm.XXXXXX)"
chmod 711 "$dir" # munged wants its socket reachable by every user (x for all)
pids=()
cleanup() {
    [ -f "$dir/slurm.conf" ] && SLURM_CONF="$dir/slurm.conf" scancel --full --quiet --user=root \
        2>/dev/null && sleep 1
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
    done
    rm -rf "$dir"
}
trap cleanup EXIT
# An interrupt or SIGTERM exits through the trap too, or munged and the job's
# slurmstepd would outlive the test.
trap 'exit 1' TERM INT HUP

die() {
    echo "FAIL: $*"
    local f
    for f in munged.log slurmctld.log slurmd.log; do
        [ -s "$dir/$f" ] && { echo "---- $f (last 40 lines)"; tail -n 40 "$dir/$f"; }
    done
    exit 1
}

# Two free TCP ports on localhost (the kernel picks them), so that a second cluster,
# or a Slurm the machine already runs, is never in the way.
read -r ctld_port slurmd_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')

# munge: a key of our own and a socket in $dir. --force: munged refuses root and a
# socket directory under /tmp otherwise; nothing else writes this directory (mode 711).
dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge.key"
munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed" ||
    die "munged did not start"
for _ in $(seq 50); do [ -s "$dir/munged.pid" ] && break; sleep 0.1; done
pids+=("$(cat "$dir/munged.pid" 2>/dev/null)")
echo test | munge -S "$dir/munge.socket" | unmunge -S "$dir/munge.socket" >/dev/null 2>&1 ||
    die "munge round trip failed"

host="$(hostname -s)"
cat >"$dir/slurm.conf" <<EOF
ClusterName=snaptptest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: processes are tracked through /proc, tasks not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# The node says it has 4 CPUs whatever the machine has (CI has 2): 3 tasks must fit.
SlurmdParameters=config_overrides
NodeName=snaptp-n0 NodeAddr=127.0.0.1 NodeHostname=$host CPUs=4 RealMemory=2000 State=UNKNOWN
PartitionName=test Nodes=snaptp-n0 Default=YES MaxTime=INFINITE State=UP
EOF
mkdir -p "$dir/state" "$dir/spool"
export SLURM_CONF="$dir/slurm.conf"

slurmctld -D -c -f "$SLURM_CONF" >"$dir/slurmctld.stdout" 2>&1 &
pids+=($!)
slurmd -D -N snaptp-n0 -f "$SLURM_CONF" >"$dir/slurmd.stdout" 2>&1 &
pids+=($!)
state=""
for _ in $(seq 100); do
    state=$(sinfo -h -n snaptp-n0 -o %T 2>/dev/null)
    [ "$state" = idle ] && break
    for p in "${pids[@]:1}"; do
        kill -0 "$p" 2>/dev/null || { cat "$dir"/*.stdout; die "a Slurm daemon exited at start"; }
    done
    sleep 0.2
done
[ "$state" = idle ] || { cat "$dir"/*.stdout; die "node snaptp-n0 is '$state', not idle, after 20 s"; }
echo "slurm: one-node cluster up (slurmctld :$ctld_port, slurmd :$slurmd_port, node $state)"

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }

# The README's QA job (its answer names Ingrid Halvorsen); tp = 1 without any
# launcher is the reference answer.
qa=(qa --config configs/smollm2-135m-cpu.json --model "$gguf" --document examples/kestrel_ridge.md
    --question "Who was the first director of the Kestrel Ridge Observatory?" --max-tokens 24)
cd "$root"
"$bin" "${qa[@]}" >"$dir/tp1.out" 2>"$dir/tp1.err" || { cat "$dir/tp1.err"; die "tp=1 qa failed"; }
answer() { grep -v '^#' "$1" | grep -v '^\[' | sed '/^$/d'; }

# mpirun as root refuses without these; shared memory single copy needs ptrace
# rights a container lacks (cluster/README.md, "In containers and CI").
export SNAPTP="$bin" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    OMPI_MCA_btl_vader_single_copy_mechanism=none SNAPTP_THREADS=1
unset OMPI_MCA_plm_rsh_agent

# submit NAME: sbatch's the QA job at 3 tasks and waits for it (polling: sbatch
# --wait checks only every 30 s or so); sets job, state and job_rc.
submit() {
    local name="$1" t0
    t0=$(date +%s)
    # The script asks for 8 GPUs and 8 CPUs per task, as on a GPU node; this node has
    # neither, so the job's shape is given on the command line, which overrides.
    job=$(sbatch --parsable --job-name="snaptp-$name" --ntasks=3 --ntasks-per-node=3 \
        --cpus-per-task=1 --gpus-per-node=0 --no-requeue \
        --output="$dir/job-$name.out" --error="$dir/job-$name.err" \
        cluster/snaptp.sbatch "${qa[@]}" 2>"$dir/sbatch-$name.err")
    state="" job_rc=""
    [ -n "$job" ] || { state=REFUSED; cat "$dir/sbatch-$name.err"; return; }
    while [ $(($(date +%s) - t0)) -lt 150 ]; do
        local info
        info=$(scontrol -o show job "$job" 2>/dev/null)
        state=$(echo "$info" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
        job_rc=$(echo "$info" | grep -o ' ExitCode=[0-9]*' | cut -d= -f2)
        case "$state" in
        COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL) break ;;
        esac
        sleep 0.5
    done
    job_s=$(($(date +%s) - t0))
    [ -n "$job_rc" ] || { scancel "$job"; state="TIMEOUT(test)"; }
}
stats() { grep -o '# prompt [0-9]* tokens\|decode [0-9]* tokens' "$1"; }

for launch in mpirun srun; do
    SNAPTP_LAUNCH=$launch submit "$launch"
    if [ "$state" = COMPLETED ] && [ "$job_rc" = 0 ] && [ -s "$dir/job-$launch.out" ] &&
        [ "$(answer "$dir/job-$launch.out")" = "$(answer "$dir/tp1.out")" ] &&
        grep -q "Ingrid Halvorsen" "$dir/job-$launch.out" &&
        [ "$(stats "$dir/job-$launch.err")" = "$(stats "$dir/tp1.err")" ] &&
        grep -q "3 ranks on 1 node" "$dir/job-$launch.err"; then
        pass "sbatch job $job ($launch, 3 tasks) completed in $job_s s with tp=1's answer" \
            "'$(answer "$dir/job-$launch.out" | head -c 60)' and $(stats "$dir/job-$launch.err" | tr '\n' ' ')"
    else
        fail "sbatch job '$job' ($launch): state $state, exit $job_rc"
        echo "---- job stdout"; cat "$dir/job-$launch.out" 2>/dev/null
        echo "---- job stderr"; tail -n 40 "$dir/job-$launch.err" 2>/dev/null
        echo "---- tp=1"; answer "$dir/tp1.out"; stats "$dir/tp1.err"
        scontrol show job "$job" 2>/dev/null | head -n 30
    fi
done

# srun through PMI2, which this Open MPI cannot speak (Debian builds it with PMIx
# only): the job must fail with Open MPI's own explanation, not run three jobs of one
# that each print an answer.
SNAPTP_LAUNCH=srun SNAPTP_SRUN_MPI=pmi2 submit pmi2
if [ "$state" = FAILED ] && [ "$job_rc" != 0 ] && grep -q "PMI support" "$dir/job-pmi2.err" &&
    [ -z "$(answer "$dir/job-pmi2.out")" ]; then
    pass "srun --mpi=pmi2 fails (job $job, exit $job_rc, no answer printed):" \
        "$(grep -m1 -o '.*PMI support.*' "$dir/job-pmi2.err")"
else
    fail "srun --mpi=pmi2: state $state, exit $job_rc"
    cat "$dir/job-pmi2.out" 2>/dev/null; tail -n 20 "$dir/job-pmi2.err" 2>/dev/null
fi

# A plugin this Slurm lacks is refused by the script before srun, with the list.
SNAPTP_LAUNCH=srun SNAPTP_SRUN_MPI=pmi9 submit nosuch
if [ "$state" = FAILED ] && [ "$job_rc" = 2 ] &&
    grep -q "this Slurm has no MPI plugin 'pmi9' (srun --mpi=list:.*pmix" "$dir/job-nosuch.err"; then
    pass "SNAPTP_SRUN_MPI=pmi9 refused by the script (exit 2): $(grep -m1 -o 'this Slurm has no MPI plugin .pmi9.' "$dir/job-nosuch.err")"
else
    fail "SNAPTP_SRUN_MPI=pmi9: state $state, exit $job_rc"; cat "$dir/job-nosuch.err" 2>/dev/null
fi

echo "test_slurm.sh: $passed passed, $failed failed"
[ $failed -eq 0 ]
