// Quantization-aware training in `lowbit train` / `bench` / `eval`: the --quant/--reg options, the
// quantizers attached to the model (quant/qconfig.h), the SinReQ/WaveQ regularizer on the weight
// group (quant/regularize.h) with WaveQ's per-layer beta in its own optimizer group, the per-epoch
// layer table, and the end-of-run report (learned bits, memory, FP32 vs quantized accuracy,
// report.html).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/options.h"
#include "cli/run_common.h"
#include "optim/optimizer.h"

namespace lowbit::cli {

std::vector<OptionSpec> quant_option_specs();

class QuantSetup {
 public:
  virtual ~QuantSetup() = default;
  // Parameters the setup created (beta, step sizes, PACT alpha): they go in the setup's own groups.
  virtual bool owns_parameter(const std::string& full_name) const = 0;
  // Attaches the regularizer to groups[0] (the weights) and appends the setup's own groups.
  virtual void add_groups(std::vector<optim::ParamGroup>& groups) = 0;
  virtual void set_epoch(int64_t epoch, int64_t total_epochs) = 0;
  virtual void set_position(double t, double total_epochs) = 0;  // fractional epochs, each step
  virtual void after_step() = 0;                                 // beta clamping
  // History kept for the report (curves, beta trajectories, first histograms), resumed exactly.
  virtual std::map<std::string, Tensor> state_dict() const = 0;
  virtual void load_state_dict(const std::map<std::string, Tensor>& state) = 0;
  virtual void print_config(Module& model) = 0;
  virtual std::string epoch_json(Module& model) = 0;  // ", \"layers\": [...]"
  virtual void end_epoch(Module& model, int64_t epoch, double train_loss, double train_acc, double test_loss,
                         double test_acc) = 0;
  virtual void final_report(Module& model, data::DataLoader& test, const EvalResult& last, const std::string& out) = 0;
  // `lowbit eval`: the final bits per regularized layer, and the test accuracy with float (shadow)
  // weights and with the weights quantized at those bits (learned ones for WaveQ). post_training:
  // the quantization config was given to `eval`, not trained with (the weights are simply rounded).
  virtual void eval_report(Module& model, data::DataLoader& test, bool post_training) = 0;
  virtual std::string describe() const = 0;  // "dorefa w4/a4 + waveq"
};

// nullptr when neither --quant nor --reg asks for anything.
std::unique_ptr<QuantSetup> make_quant(const Options& opts, Module& model);

}  // namespace lowbit::cli
