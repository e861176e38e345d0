// stats_json: the fields every --json report shares: tensor-parallel size and the
// collectives a rank made (all-reduces per layer per decode step, bytes per token).
#ifndef SNAPTP_STATS_JSON_H
#define SNAPTP_STATS_JSON_H

#include <cjson/cJSON.h>

#include "../runtime/engine.h"
#include "session.h"

// json_add_comm_path: "tp"; "allreduce_path", the path the model's all-reduces take:
// "none" (one rank), "mpi" (CPU buffers summed by MPI), "mpi-host-staged" (device
// buffers copied to the host and summed by MPI) or "nccl" (summed on the device);
// and "comm_note", a line for people on why the device side is what it is.
void json_add_comm_path(cJSON *o, const session *s);

// json_add_comm_stats: json_add_comm_path's fields plus "collectives", the counts
// and bytes of this rank's all-reduces in prefill and decode.
void json_add_comm_stats(cJSON *o, const session *s, const engine_stats *st);

#endif
