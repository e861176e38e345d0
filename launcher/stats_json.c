// stats_json: collective counts in the JSON reports.
#include "stats_json.h"

void json_add_comm_stats(cJSON *o, const session *s, const engine_stats *st) {
    const int tp = s->comm ? comm_size(s->comm) : 1;
    const int n_layers = s->m ? s->m->cfg.n_layers : 0;
    cJSON_AddNumberToObject(o, "tp", tp);
    if (s->comm) cJSON_AddStringToObject(o, "comm", comm_device_note(s->comm));
    cJSON *c = cJSON_AddObjectToObject(o, "collectives");
    if (!c) return;
    cJSON_AddNumberToObject(c, "prefill_allreduce_calls", (double)st->prefill_allreduce_calls);
    cJSON_AddNumberToObject(c, "prefill_allreduce_bytes", (double)st->prefill_allreduce_bytes);
    cJSON_AddNumberToObject(c, "decode_allreduce_calls", (double)st->decode_allreduce_calls);
    cJSON_AddNumberToObject(c, "decode_allreduce_bytes", (double)st->decode_allreduce_bytes);
    cJSON_AddNumberToObject(c, "decode_steps", st->decode_steps);
    if (st->decode_steps > 0 && n_layers > 0) {
        cJSON_AddNumberToObject(c, "allreduce_per_layer_per_token",
                                (double)st->decode_allreduce_calls / st->decode_steps / n_layers);
        cJSON_AddNumberToObject(c, "allreduce_bytes_per_token",
                                (double)st->decode_allreduce_bytes / st->decode_steps);
    }
}
