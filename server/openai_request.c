// openai_request: the OpenAI request body, with cJSON.
#include "openai_request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// bad: the error for field `param` (a 400 invalid_request_error).
static snp_status bad(api_error *err, const char *param, const char *msg) {
    err->http_status = 400;
    err->type = "invalid_request_error";
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    return snp_fail(SNP_ERR_ARGUMENT, "%s", msg);
}

static snp_status badf(api_error *err, const char *param, const char *fmt, const char *a) {
    char msg[256];
    snprintf(msg, sizeof msg, fmt, a);
    return bad(err, param, msg);
}

static char *dup_string(const cJSON *v) {
    const char *s = cJSON_GetStringValue(v);
    return s ? strdup(s) : NULL;
}

// get_number: an optional number field in [lo, hi]; *out untouched when absent or null.
static snp_status get_number(const cJSON *o, const char *name, double lo, double hi, double *out,
                             api_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v)) return SNP_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return badf(err, name, "'%s' must be a number", name);
    if (v->valuedouble < lo || v->valuedouble > hi) {
        char msg[192];
        snprintf(msg, sizeof msg, "'%s' is %g; it must be between %g and %g", name, v->valuedouble,
                 lo, hi);
        return bad(err, name, msg);
    }
    *out = v->valuedouble;
    return SNP_OK;
}

// get_int: an optional integer field in [lo, hi].
static snp_status get_int(const cJSON *o, const char *name, double lo, double hi, int *out,
                          api_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v)) return SNP_OK;
    double d = 0;
    TRY(get_number(o, name, lo, hi, &d, err));
    if (d != floor(d)) return badf(err, name, "'%s' must be an integer", name);
    *out = (int)d;
    return SNP_OK;
}

static snp_status get_bool(const cJSON *o, const char *name, int *out, api_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v)) return SNP_OK;
    if (!cJSON_IsBool(v)) return badf(err, name, "'%s' must be true or false", name);
    *out = cJSON_IsTrue(v);
    return SNP_OK;
}

static snp_status get_string(const cJSON *o, const char *name, char **out, api_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v)) return SNP_OK;
    if (!cJSON_IsString(v)) return badf(err, name, "'%s' must be a string", name);
    if (!(*out = dup_string(v))) return snp_fail(SNP_ERR_MEMORY, "out of memory");
    return SNP_OK;
}

static snp_status parse_stop(const cJSON *o, api_request *r, api_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "stop");
    if (!v || cJSON_IsNull(v)) return SNP_OK;
    if (cJSON_IsString(v)) {
        if (v->valuestring[0] == '\0') return bad(err, "stop", "'stop' strings must not be empty");
        if (!(r->stop[r->n_stop++] = strdup(v->valuestring)))
            return snp_fail(SNP_ERR_MEMORY, "out of memory");
        return SNP_OK;
    }
    if (!cJSON_IsArray(v)) return bad(err, "stop", "'stop' must be a string or an array of strings");
    if (cJSON_GetArraySize(v) > API_MAX_STOP)
        return bad(err, "stop", "'stop' holds more than 4 strings");
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e) || e->valuestring[0] == '\0')
            return bad(err, "stop", "'stop' must be an array of non-empty strings");
        if (!(r->stop[r->n_stop++] = strdup(e->valuestring)))
            return snp_fail(SNP_ERR_MEMORY, "out of memory");
    }
    return SNP_OK;
}

// parse_prompt: completions' `prompt`: a string, an array of one string, or an array
// of token ids (what benchmark clients send to skip tokenization differences).
static snp_status parse_prompt(const cJSON *o, api_request *r, api_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    if (!v || cJSON_IsNull(v)) return bad(err, "prompt", "'prompt' is required");
    if (cJSON_IsString(v)) {
        if (!(r->prompt = dup_string(v))) return snp_fail(SNP_ERR_MEMORY, "out of memory");
        return SNP_OK;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return bad(err, "prompt", "'prompt' must be a string or a non-empty array");
    const cJSON *first = cJSON_GetArrayItem(v, 0);
    if (cJSON_IsString(first)) {
        if (cJSON_GetArraySize(v) != 1)
            return bad(err, "prompt", "'prompt' with several strings (a batch) is not supported: "
                                      "send one request per prompt");
        if (!(r->prompt = dup_string(first))) return snp_fail(SNP_ERR_MEMORY, "out of memory");
        return SNP_OK;
    }
    const int n = cJSON_GetArraySize(v);
    if (!(r->prompt_ids = malloc(sizeof(int32_t) * (size_t)n)))
        return snp_fail(SNP_ERR_MEMORY, "out of memory");
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > INT32_MAX ||
            e->valuedouble != floor(e->valuedouble))
            return bad(err, "prompt", "'prompt' as an array must hold token ids (integers >= 0)");
        r->prompt_ids[r->n_prompt_ids++] = (int32_t)e->valuedouble;
    }
    return SNP_OK;
}

// message_text: a message's content: a string, or an array of {"type": "text"} parts.
static snp_status message_text(const cJSON *m, char **out, api_error *err) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (cJSON_IsString(c)) {
        if (!(*out = dup_string(c))) return snp_fail(SNP_ERR_MEMORY, "out of memory");
        return SNP_OK;
    }
    if (!cJSON_IsArray(c))
        return bad(err, "messages", "a message's 'content' must be a string or an array of parts");
    size_t n = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 || !cJSON_IsString(text))
            return bad(err, "messages", "only text content parts are supported");
        n += strlen(text->valuestring);
    }
    char *s = malloc(n + 1);
    if (!s) return snp_fail(SNP_ERR_MEMORY, "out of memory");
    size_t at = 0;
    cJSON_ArrayForEach(p, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        memcpy(s + at, t, strlen(t));
        at += strlen(t);
    }
    s[at] = '\0';
    *out = s;
    return SNP_OK;
}

// parse_messages: chat's `messages`: an optional system (or developer) message, then
// one user message. snaptp's chat templates render one exchange (chat_template.h).
static snp_status parse_messages(const cJSON *o, api_request *r, api_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "messages");
    if (!v || cJSON_IsNull(v)) return bad(err, "messages", "'messages' is required");
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return bad(err, "messages", "'messages' must be a non-empty array");
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role))
            return bad(err, "messages", "each message must be an object with a string 'role'");
        const char *rs = role->valuestring;
        if (strcmp(rs, "system") == 0 || strcmp(rs, "developer") == 0) {
            if (r->system || r->user)
                return bad(err, "messages", "one system message is supported, before the user's");
            TRY(message_text(m, &r->system, err));
        } else if (strcmp(rs, "user") == 0) {
            if (r->user)
                return bad(err, "messages",
                           "multi-turn conversations are not supported: snaptp's chat templates "
                           "render one system and one user message");
            TRY(message_text(m, &r->user, err));
        } else if (strcmp(rs, "assistant") == 0 || strcmp(rs, "tool") == 0) {
            return badf(err, "messages",
                        "'%s' messages are not supported: snaptp's chat templates render one "
                        "system and one user message",
                        rs);
        } else {
            return badf(err, "messages", "unknown message role '%s'", rs);
        }
    }
    if (!r->user) return bad(err, "messages", "'messages' has no user message");
    return SNP_OK;
}

// refuse_unsupported: fields whose non-default value would change the output in a
// way snaptp does not implement: an error rather than a silently different answer.
static snp_status refuse_unsupported(const cJSON *o, api_error *err) {
    double x = 0;
    int n = 1;
    TRY(get_int(o, "n", 1, 1e9, &n, err));
    if (n != 1) return bad(err, "n", "'n' must be 1: one choice per request");
    TRY(get_int(o, "best_of", 1, 1e9, &n, err));
    if (n != 1) return bad(err, "best_of", "'best_of' must be 1");
    const char *zero[] = {"presence_penalty", "frequency_penalty"};
    for (size_t i = 0; i < 2; i++) {
        x = 0;
        TRY(get_number(o, zero[i], -2, 2, &x, err));
        if (x != 0) return badf(err, zero[i], "'%s' is not supported (0 only)", zero[i]);
    }
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(o, "logprobs");
    if (lp && !cJSON_IsNull(lp) && !cJSON_IsFalse(lp))
        return bad(err, "logprobs", "'logprobs' is not supported");
    const cJSON *echo = cJSON_GetObjectItemCaseSensitive(o, "echo");
    if (cJSON_IsTrue(echo)) return bad(err, "echo", "'echo' is not supported");
    return SNP_OK;
}

static snp_status parse_object(const cJSON *o, api_kind kind, api_request *r, api_error *err) {
    TRY(get_string(o, "model", &r->model, err));
    if (kind == API_COMPLETIONS) TRY(parse_prompt(o, r, err));
    else TRY(parse_messages(o, r, err));
    TRY(get_bool(o, "stream", &r->stream, err));
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(o, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) return bad(err, "stream_options", "'stream_options' must be an object");
        TRY(get_bool(so, "include_usage", &r->include_usage, err));
    }
    // max_completion_tokens is the newer name (chat); either may come.
    TRY(get_int(o, "max_tokens", 1, 1e9, &r->max_tokens, err));
    TRY(get_int(o, "max_completion_tokens", 1, 1e9, &r->max_tokens, err));
    TRY(get_number(o, "temperature", 0, 2, &r->temperature, err));
    TRY(get_number(o, "top_p", 1e-9, 1, &r->top_p, err));
    TRY(get_int(o, "top_k", -1, 1e9, &r->top_k, err));
    TRY(get_number(o, "repetition_penalty", 1e-6, 100, &r->repetition_penalty, err));
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "seed");
    if (seed && !cJSON_IsNull(seed)) {
        double d = 0;
        TRY(get_number(o, "seed", -9.2e18, 1.8e19, &d, err));
        if (d != floor(d)) return bad(err, "seed", "'seed' must be an integer");
        r->has_seed = 1;
        r->seed = d < 0 ? (uint64_t)(int64_t)d : (uint64_t)d;
    }
    TRY(parse_stop(o, r, err));
    TRY(get_bool(o, "ignore_eos", &r->ignore_eos, err));
    TRY(get_string(o, "kv_policy", &r->kv_policy, err));
    if (r->kv_policy && strcmp(r->kv_policy, "full") != 0 && strcmp(r->kv_policy, "snapkv") != 0)
        return bad(err, "kv_policy", "'kv_policy' must be \"full\" or \"snapkv\"");
    // SnapKV settings: flat (snapkv_window, ...) or nested ("snapkv": {"window": ...}).
    const cJSON *snap = cJSON_GetObjectItemCaseSensitive(o, "snapkv");
    if (snap && !cJSON_IsNull(snap) && !cJSON_IsObject(snap))
        return bad(err, "snapkv", "'snapkv' must be an object (window, budget, kernel, pooling)");
    const cJSON *src = snap && cJSON_IsObject(snap) ? snap : o;
    const char *names[2][4] = {{"snapkv_window", "snapkv_budget", "snapkv_kernel", "snapkv_pooling"},
                               {"window", "budget", "kernel", "pooling"}};
    const int nested = src == snap;
    TRY(get_int(src, names[nested][0], 1, 1e7, &r->window, err));
    TRY(get_int(src, names[nested][1], 1, 1e8, &r->budget, err));
    TRY(get_int(src, names[nested][2], 1, 1e5, &r->kernel, err));
    TRY(get_string(src, names[nested][3], &r->pooling, err));
    if (r->pooling && strcmp(r->pooling, "avg") != 0 && strcmp(r->pooling, "max") != 0)
        return bad(err, names[nested][3], "SnapKV pooling must be \"avg\" or \"max\"");
    return refuse_unsupported(o, err);
}

snp_status api_request_parse(const char *body, size_t n, api_kind kind, api_request *out,
                             api_error *err) {
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    out->kind = kind;
    out->max_tokens = -1;
    out->temperature = -1;
    out->top_p = -1;
    out->top_k = -1;
    out->repetition_penalty = -1;
    if (!body || n == 0) return bad(err, NULL, "the request body is empty: expected a JSON object");
    cJSON *o = cJSON_ParseWithLength(body, n);
    if (!o) return bad(err, NULL, "the request body is not valid JSON");
    snp_status st = cJSON_IsObject(o) ? parse_object(o, kind, out, err)
                                      : bad(err, NULL, "the request body must be a JSON object");
    cJSON_Delete(o);
    return st;
}

void api_request_free(api_request *r) {
    free(r->model);
    free(r->prompt);
    free(r->prompt_ids);
    free(r->system);
    free(r->user);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->kv_policy);
    free(r->pooling);
    memset(r, 0, sizeof *r);
}
