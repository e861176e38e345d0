// fuzz_config: the two JSON configs on arbitrary bytes: a runtime preset
// (run_config_load, configs/*.json) when the first byte is even, a Hugging Face
// config.json (model_config_from_json + model_config_validate, then the RoPE
// frequencies of a config that passed) when it is odd.
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_support.h"
#include "runtime/model_config.h"
#include "runtime/run_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if ((data[0] & 1) == 0) {
        run_config cfg = run_config_defaults();
        (void)run_config_load(fuzz_file("preset.json", data + 1, size - 1), &cfg);
        run_config_free(&cfg);
        return 0;
    }
    model_config cfg;
    if (model_config_from_json(fuzz_file("config.json", data + 1, size - 1), &cfg) != SNP_OK)
        return 0;
    if (model_config_validate(&cfg, "fuzz") != SNP_OK) return 0;
    if (cfg.head_dim > 0 && cfg.head_dim <= 65536) {
        float *inv_freq = malloc(sizeof(float) * (size_t)(cfg.head_dim / 2 + 1));
        if (inv_freq) model_config_inv_freq(&cfg, inv_freq);
        free(inv_freq);
    }
    return 0;
}
