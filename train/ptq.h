// The post-training quantization sweep: a float model evaluated in float and then at each bit
// setting of the range-linear quantizer of quant/ptq.h (Distiller range-linear, spec §8.7; the
// evaluation of Alizadeh et al., §7.2), its activation ranges calibrated once on training batches.
// `lowbit eval --checkpoint C --ptq 8/8,6/6,4/4` prints format_ptq_table of its result.
//
//   train::TrainData data = train::load_data({.dataset = "cifar10:DIR"});
//   auto calib = train::calibration_loader(data, 128);
//   train::PtqSweep s = train::ptq_sweep(*model, *calib, *data.test_loader,
//                                        train::parse_ptq_settings("8/8,6/6,4/4"), {});
//   std::printf("%s", train::format_ptq_table(s).c_str());   // setting, accuracy, drop from float
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"
#include "layers/module.h"
#include "quant/ptq.h"
#include "train/data.h"
#include "train/evaluate.h"

namespace lowbit::train {

// Weight and activation bits of one setting: 2..16, or 32 (float: that side not quantized).
struct PtqSetting {
  int weight_bits = 8, activation_bits = 8;
  std::string label() const;  // "8/8" (W/A, as --ptq takes it)
  std::string tag() const;    // "w8a8" (in file names)
};

// "8/8,6/6,4/4" -> the settings in order. Throws naming `option` and the item for an item that is
// not W/A with integer bits, and for bits outside 2..16 (32: float); an empty list is an error.
std::vector<PtqSetting> parse_ptq_settings(const std::string& spec, const std::string& option = "--ptq");

struct PtqSweep;

struct PtqOptions {
  int64_t calib_batches = 10;  // the first N batches of the calibration loader's epoch 0 (>= 1)
  bool per_channel = false;    // weights: one range per output channel
  bool fold_bn = false;        // weights: rounded with the batch norm after them folded in (quant::PtqConfig)
  int first_last_bits = 0;     // > 0: the first and last layers at these bits (quant::PtqConfig)
  quant::RangeMode weight_mode = quant::RangeMode::symmetric;
  quant::RangeMode activation_mode = quant::RangeMode::asymmetric;
  bool predictions = false;  // keep each test image's prediction, float and per setting
  // Called once the float model is evaluated and calibrated (rows still empty), then after each
  // setting's row: for printing the table as it comes (format_ptq_head, format_ptq_row).
  std::function<void(const PtqSweep&)> progress{};
};

struct PtqRow {
  PtqSetting setting;
  EvalResult result;  // at this setting
  double float_accuracy = 0;
  double drop() const { return float_accuracy - result.accuracy; }  // > 0: worse than float
  std::vector<Prediction> predictions;                              // with PtqOptions::predictions
};

struct PtqSweep {
  PtqOptions options;
  EvalResult float_result;
  std::vector<Prediction> float_predictions;  // with PtqOptions::predictions
  std::vector<PtqRow> rows;                   // one per setting, in the order given
  // The activations' calibrated ranges and the weights' own (per tensor), in model order.
  std::vector<quant::ObservedRange> activation_ranges, weight_ranges;
  int64_t calib_batches = 0, calib_images = 0;  // what calibration actually saw
};

// Evaluates `model` in float on `test`, calibrates the activation ranges on the first
// options.calib_batches batches of `calib` (all of them if it has fewer; eval mode, no gradients),
// then evaluates at each setting with those ranges. Afterwards the model is as before: its hooks
// are the ones it had, its parameters and buffers were never written, its train/eval mode is
// restored. Throws for bad settings or options before evaluating anything.
PtqSweep ptq_sweep(Module& model, data::DataLoader& calib, data::DataLoader& test,
                   const std::vector<PtqSetting>& settings, const PtqOptions& options = {});

// The calibration images: the training split without augmentation, normalized as the test loader
// (the training set's statistics), shuffled by `seed` (so the first batches are a fixed random
// sample, not the file's first images).
std::unique_ptr<data::DataLoader> calibration_loader(const TrainData& data, int64_t batch, uint64_t seed = 1);

// One table: a header line stating the quantizer and the calibration, then "W/A  accuracy  drop
// loss" with the float row first ("float"), one row per setting; drop in percentage points.
// It is format_ptq_head followed by format_ptq_row of each row.
std::string format_ptq_table(const PtqSweep& sweep);
std::string format_ptq_head(const PtqSweep& sweep);  // the header line, the column names, the float row
std::string format_ptq_row(const PtqRow& row);
// The calibrated activation ranges and the weights' ranges, one line each.
std::string format_ptq_ranges(const PtqSweep& sweep);
// The same as CSV: "kind,name,min,max,passes".
std::string ptq_ranges_csv(const PtqSweep& sweep);

// The per-setting predictions file: the setting's tag inserted before the extension,
// "p.csv" -> "p.w4a4.csv" ("p" -> "p.w4a4").
std::string ptq_predictions_path(const std::string& path, const PtqSetting& setting);

}  // namespace lowbit::train
