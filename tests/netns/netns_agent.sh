#!/usr/bin/env bash
# netns_agent.sh: Open MPI's launch agent (plm_rsh_agent) for the namespace hosts of
# netns.sh, in place of ssh. mpirun calls it as `agent HOST COMMAND...`, where
# COMMAND is the shell text ssh would run on HOST (it starts an orted). The host's
# name is its namespace's name. The command starts with a clean environment, as
# an ssh login would: what a remote rank needs must come through mpirun's -x.
set -euo pipefail
host="$1"
shift
if ! ip netns list | grep -q "^$host\( \|$\)"; then
    echo "netns_agent: no namespace host '$host' (known: $(ip netns list | tr '\n' ' '))" >&2
    exit 255 # what ssh returns when it cannot reach a host
fi
exec ip netns exec "$host" unshare --uts env -i PATH=/usr/local/bin:/usr/bin:/bin \
    HOME="${HOME:-/root}" sh -c 'hostname "$0" && exec sh -c "$1"' "$host" "$*"
