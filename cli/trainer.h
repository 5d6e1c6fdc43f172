// `lowbit train`: the options, mapped onto the library's fit loop (train/fit.h) and quantization
// context (train/quant_context.h); this file parses and prints, the library trains.
//
// Run folder (--out DIR): config.txt (every option, a valid --config file), checkpoint.ckpt,
// metrics.jsonl, report.html (quantized runs); see train/fit.h. --resume continues bit-identically.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cli/options.h"
#include "optim/optimizer.h"
#include "train/data.h"
#include "train/fit.h"
#include "train/quant_context.h"

namespace lowbit::cli {

// Option table of `lowbit train` (also read by `eval` for a run's stored config).
std::vector<OptionSpec> train_option_specs();

// The data set and loaders of a run's options (--data, --batch, --seed, --augment, --limit-*, --test-file).
train::DataConfig data_config(const Options& opts, int64_t batch);

// Runs `lowbit train`; returns the process exit code.
int run_train(Options& opts, int argc, char** argv);
// Runs `body` (a training command) as one process, or as a rank of an mpirun job: MPI started, the
// standard output of ranks > 0 silenced, an error on any rank ending the whole job (exit 1).
int run_data_parallel(const char* command, const std::function<int()>& body);

// ---- the pieces of run_train that other training commands (lowbit dcq) share ----
std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& kind, std::vector<optim::ParamGroup> groups);
// --init: model weights from a training checkpoint, matched by name; prints what was loaded. Errors
// name the file as given by `option`. (lowbit train loads in two passes, around the quantization
// context, so that the quantizers' learned parameters come from the checkpoint too.)
void load_init(Module& model, const std::string& path, const std::string& model_name,
               const std::string& option = "--init");
// --checkpoint-every: "N" batches or "N[smh]" of training time; "0" off.
void parse_checkpoint_every(const std::string& v, train::FitOptions& fo);
// --resume: replaces opts by the checkpoint's stored config with this command's flags on top; returns
// the checkpoint's path ("" without --resume).
std::string apply_resume(Options& opts, int argc, char** argv);
// The fit loop's options of a run (--epochs, --schedule, --clip-grad, --out, --checkpoint-every, ...).
train::FitOptions fit_options(const Options& opts, const std::string& resume_path);
// The run's quantization, checked on a model built without the data; null without quantization.
std::unique_ptr<train::QuantSpec> checked_quant_spec(const Options& opts);
// The weights' parameter group (--lr, --momentum, --nesterov, --wd), without parameters.
optim::ParamGroup base_group(const Options& opts);
// "model M: P parameters; data D: ...; T threads".
void print_run_header(const Options& opts, const Module& model, const train::TrainData& data);

}  // namespace lowbit::cli
