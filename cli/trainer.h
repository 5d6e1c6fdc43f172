// `lowbit train`: the options, mapped onto the library's fit loop (train/fit.h) and quantization
// context (train/quant_context.h); this file parses and prints, the library trains.
//
// Run folder (--out DIR): config.txt (every option, a valid --config file), checkpoint.ckpt,
// metrics.jsonl, report.html (quantized runs); see train/fit.h. --resume continues bit-identically.
#pragma once

#include <string>
#include <vector>

#include "cli/options.h"
#include "train/data.h"

namespace lowbit::cli {

// Option table of `lowbit train` (also read by `eval` for a run's stored config).
std::vector<OptionSpec> train_option_specs();

// The data set and loaders of a run's options (--data, --batch, --seed, --augment, --limit-*, --test-file).
train::DataConfig data_config(const Options& opts, int64_t batch);

// Runs `lowbit train`; returns the process exit code.
int run_train(Options& opts, int argc, char** argv);

}  // namespace lowbit::cli
