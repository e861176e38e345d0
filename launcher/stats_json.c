// stats_json: the communicator fields and collective counts of the JSON reports.
#include "stats_json.h"

#include "../runtime/forward.h"

void json_add_comm_path(cJSON *o, const session *s) {
    cJSON_AddNumberToObject(o, "tp", s->comm ? comm_size(s->comm) : 1);
    // A value, for scripts: the path the model's all-reduces take (forward.h).
    const forward_reduce_path path =
        s->be ? forward_reduce_path_for(s->be, s->comm) : FORWARD_REDUCE_NONE;
    cJSON_AddStringToObject(o, "allreduce_path", forward_reduce_path_name(path));
    // Free text, for people: why the device communicator is (not) NCCL.
    if (s->comm) cJSON_AddStringToObject(o, "comm_note", comm_device_note(s->comm));
}

void json_add_comm_stats(cJSON *o, const session *s, const engine_stats *st) {
    const int n_layers = s->m ? s->m->cfg.n_layers : 0;
    json_add_comm_path(o, s);
    cJSON *c = cJSON_AddObjectToObject(o, "collectives");
    if (!c) return;
    cJSON_AddNumberToObject(c, "prefill_allreduce_calls", (double)st->prefill_allreduce_calls);
    cJSON_AddNumberToObject(c, "prefill_allreduce_bytes", (double)st->prefill_allreduce_bytes);
    cJSON_AddNumberToObject(c, "decode_allreduce_calls", (double)st->decode_allreduce_calls);
    cJSON_AddNumberToObject(c, "decode_allreduce_bytes", (double)st->decode_allreduce_bytes);
    // Bytes rank 0 sent over TCP to other hosts inside those all-reduces, as its
    // kernel counted them: 0 when every rank shares one host (comm.h).
    cJSON_AddNumberToObject(c, "prefill_allreduce_net_bytes",
                            (double)st->prefill_allreduce_net_bytes);
    cJSON_AddNumberToObject(c, "decode_allreduce_net_bytes",
                            (double)st->decode_allreduce_net_bytes);
    cJSON_AddNumberToObject(c, "decode_steps", st->decode_steps);
    if (st->decode_allreduce_calls > 0)
        cJSON_AddNumberToObject(c, "allreduce_net_bytes_per_call",
                                (double)st->decode_allreduce_net_bytes /
                                    (double)st->decode_allreduce_calls);
    if (st->decode_steps > 0 && n_layers > 0) {
        cJSON_AddNumberToObject(c, "allreduce_per_layer_per_token",
                                (double)st->decode_allreduce_calls / st->decode_steps / n_layers);
        cJSON_AddNumberToObject(c, "allreduce_bytes_per_token",
                                (double)st->decode_allreduce_bytes / st->decode_steps);
        cJSON_AddNumberToObject(c, "allreduce_net_bytes_per_token",
                                (double)st->decode_allreduce_net_bytes / st->decode_steps);
    }
}
