// stats_json: the fields every --json report shares: tensor-parallel size and the
// collectives a rank made (all-reduces per layer per decode step, bytes per token).
#ifndef SNAPTP_STATS_JSON_H
#define SNAPTP_STATS_JSON_H

#include <cjson/cJSON.h>

#include "../runtime/engine.h"
#include "session.h"

void json_add_comm_stats(cJSON *o, const session *s, const engine_stats *st);

#endif
