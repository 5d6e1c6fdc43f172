// The training loop behind `lowbit train`: model from the zoo, data from a named data set, SGD/Adam
// with a learning-rate schedule, optional quantization (quantizers + sinusoidal regularizers),
// live progress, per-epoch metrics, atomic checkpoints and exact resume.
//
// Run folder (--out DIR):
//   config.txt        every option of the run, `key = value` (a valid --config file)
//   checkpoint.ckpt   written atomically after every epoch and on Ctrl-C: model, optimizer, position
//                     (epoch, batch), RNG states, partial-epoch sums
//   metrics.jsonl     one JSON object per epoch
//   report.html       the quantization report (quantized runs)
// Resume (--resume, or --resume PATH) continues bit-identically: the data order and augmentation
// are functions of (seed, epoch, index), the schedule a function of the position, and every other
// piece of state is in the checkpoint.
#pragma once

#include <memory>
#include <string>

#include "cli/options.h"

namespace lowbit::cli {

// Option table of `lowbit train` (also used by `eval` and `bench` for the shared keys).
std::vector<OptionSpec> train_option_specs();

// Runs `lowbit train`; returns the process exit code.
int run_train(Options& opts, int argc, char** argv);

}  // namespace lowbit::cli
