# mpi_env.sh: sourced by the multi-rank tests. Sets mpi_flags for a one-host run in
# a container (cluster/README.md explains each):
#  --oversubscribe      more ranks than cores (CI machines have 2)
#  --bind-to none       oversubscribed ranks must not be pinned to the same core
#  pml ob1, btl self,vader: shared memory only; skips UCX/openib/ofi probing, which
#                       prints warnings (or hangs) where no network device exists
#  btl_vader_single_copy_mechanism none: CMA needs ptrace rights many containers lack
#  --allow-run-as-root  containers often run as root; Open MPI refuses otherwise
#  OMPI_MCA_plm_rsh_agent= (empty): one host needs no ssh; containers often lack it
mpi_flags=(--oversubscribe --bind-to none --mca pml ob1 --mca btl self,vader
    --mca btl_vader_single_copy_mechanism none)
[ "$(id -u)" = 0 ] && mpi_flags+=(--allow-run-as-root)
export OMPI_MCA_plm_rsh_agent=
