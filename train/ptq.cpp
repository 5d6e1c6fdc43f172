// The post-training quantization sweep (ptq.h) over quant::PostTrainingQuantizer.
#include "train/ptq.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "autograd/variable.h"
#include "core/error.h"

namespace lowbit::train {
namespace {

bool valid_bits(long bits) { return bits == 32 || (bits >= 2 && bits <= 16); }

std::string describe(const PtqSweep& s) {
  const PtqOptions& o = s.options;
  std::string first_last = o.first_last_bits ? detail::concat("first and last layers at ", o.first_last_bits, " bits")
                                             : std::string("every layer at the setting's bits (first and last too)");
  return detail::concat(
      "post-training quantization (range-linear, spec §8.7): weights ", quant::range_mode_name(o.weight_mode),
      o.per_channel ? " per output channel" : " per tensor", o.fold_bn ? " with batch norm folded" : "",
      ", activations ", quant::range_mode_name(o.activation_mode), " per tensor from their min/max over ",
      s.calib_batches, " training batches (", s.calib_images, " images, no augmentation); ", first_last);
}

}  // namespace

std::string PtqSetting::label() const { return detail::concat(weight_bits, "/", activation_bits); }
std::string PtqSetting::tag() const { return detail::concat("w", weight_bits, "a", activation_bits); }

std::vector<PtqSetting> parse_ptq_settings(const std::string& spec, const std::string& option) {
  std::vector<PtqSetting> out;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t end = std::min(spec.find(',', start), spec.size());
    const std::string item = spec.substr(start, end - start);
    start = end + 1;
    if (item.empty() && end == spec.size() && !out.empty()) break;  // a trailing comma
    const size_t slash = item.find('/');
    auto number = [&](const std::string& s, long& v) {
      if (s.empty() || s.size() > 3) return false;
      for (char c : s)
        if (c < '0' || c > '9') return false;
      v = std::stol(s);
      return true;
    };
    long w = 0, a = 0;
    LOWBIT_CHECK(slash != std::string::npos && number(item.substr(0, slash), w) && number(item.substr(slash + 1), a),
                 option, " '", item, "': expected W/A bits, e.g. 8/8,6/6,4/4");
    LOWBIT_CHECK(valid_bits(w) && valid_bits(a), option, " '", item,
                 "': bits must be 2..16 (32: float, not quantized), got ", w, "/", a);
    out.push_back({int(w), int(a)});
  }
  LOWBIT_CHECK(!out.empty(), option, " '", spec, "': no setting");
  return out;
}

std::unique_ptr<data::DataLoader> calibration_loader(const TrainData& data, int64_t batch, uint64_t seed) {
  LOWBIT_CHECK(data.test_loader, "calibration_loader: the data has no test loader (its normalization)");
  LOWBIT_CHECK(batch >= 1, "calibration_loader: batch must be >= 1, got ", batch);
  data::LoaderOptions o = data.test_loader->options();  // normalization only: no augmentation
  o.batch_size = batch;
  o.shuffle = true;
  o.seed = seed;
  o.drop_last = false;
  return std::make_unique<data::DataLoader>(data.train, o);
}

PtqSweep ptq_sweep(Module& model, data::DataLoader& calib, data::DataLoader& test,
                   const std::vector<PtqSetting>& settings, const PtqOptions& options) {
  LOWBIT_CHECK(options.calib_batches >= 1, "post-training quantization: calibration batches must be >= 1, got ",
               options.calib_batches);
  LOWBIT_CHECK(options.first_last_bits == 0 || valid_bits(options.first_last_bits),
               "post-training quantization: first/last bits must be 2..16 (32: float), got ", options.first_last_bits);
  for (const auto& s : settings)
    LOWBIT_CHECK(valid_bits(s.weight_bits) && valid_bits(s.activation_bits), "post-training quantization: setting ",
                 s.label(), ": bits must be 2..16 (32: float)");
  PtqSweep sweep;
  sweep.options = options;
  sweep.float_result = evaluate(model, test, options.predictions ? &sweep.float_predictions : nullptr);

  quant::PostTrainingQuantizer ptq(model);  // the model's own hooks come back when it goes
  {                                         // calibration: float forward passes of training batches
    const bool was_training = model.is_training();
    model.eval();
    NoGradGuard no_grad;
    const std::vector<Variable> params = model.parameters();
    const DType dtype = params.empty() ? DType::f32 : params.front().dtype();
    ptq.calibrate();
    calib.begin_epoch(0, 0);
    data::Batch b;
    while (sweep.calib_batches < options.calib_batches && calib.next(b)) {
      model(Variable(b.images.dtype() == dtype ? b.images : b.images.to(dtype)));
      ++sweep.calib_batches, sweep.calib_images += b.labels.numel();
    }
    calib.stop();
    ptq.use_float();
    model.train(was_training);
  }
  LOWBIT_CHECK(sweep.calib_batches > 0, "post-training quantization: the calibration loader gave no batch");
  sweep.activation_ranges = ptq.activation_ranges();
  sweep.weight_ranges = ptq.weight_ranges();
  if (options.progress) options.progress(sweep);
  for (const auto& s : settings) {
    quant::PtqConfig c;
    c.weight_bits = s.weight_bits, c.activation_bits = s.activation_bits;
    c.first_last_bits = options.first_last_bits;
    c.per_channel = options.per_channel, c.fold_bn = options.fold_bn;
    c.weight_mode = options.weight_mode, c.activation_mode = options.activation_mode;
    ptq.quantize(c);
    PtqRow row;
    row.setting = s;
    row.float_accuracy = sweep.float_result.accuracy;
    row.result = evaluate(model, test, options.predictions ? &row.predictions : nullptr);
    sweep.rows.push_back(std::move(row));
    if (options.progress) options.progress(sweep);
  }
  ptq.use_float();
  return sweep;
}

std::string format_ptq_head(const PtqSweep& s) {
  std::string out = describe(s) + "\n";
  char line[160];
  std::snprintf(line, sizeof line, "%-8s %10s %8s %9s\n", "W/A", "accuracy", "drop", "loss");
  out += line;
  std::snprintf(line, sizeof line, "%-8s %9.2f%% %8s %9.4f\n", "float", 100 * s.float_result.accuracy, "-",
                s.float_result.loss);
  return out + line;
}

std::string format_ptq_row(const PtqRow& r) {
  char line[160];
  std::snprintf(line, sizeof line, "%-8s %9.2f%% %8.2f %9.4f\n", r.setting.label().c_str(), 100 * r.result.accuracy,
                100 * r.drop(), r.result.loss);
  return line;
}

std::string format_ptq_table(const PtqSweep& s) {
  std::string out = format_ptq_head(s);
  for (const auto& r : s.rows) out += format_ptq_row(r);
  return out;
}

std::string format_ptq_ranges(const PtqSweep& s) {
  std::string out = detail::concat("calibrated activation ranges (min/max over ", s.calib_batches, " batches, ",
                                   s.calib_images, " training images) and weight ranges:\n");
  char line[256];
  for (const auto* list : {&s.activation_ranges, &s.weight_ranges})
    for (const auto& r : *list) {
      std::snprintf(line, sizeof line, "  %-10s %-28s [%.6g, %.6g]\n", r.weight ? "weight" : "activation",
                    r.name.c_str(), r.min, r.max);
      out += line;
    }
  return out;
}

std::string ptq_ranges_csv(const PtqSweep& s) {
  std::string out = "kind,name,min,max,passes\n";
  char line[256];
  for (const auto* list : {&s.activation_ranges, &s.weight_ranges})
    for (const auto& r : *list) {
      std::snprintf(line, sizeof line, "%s,%s,%.9g,%.9g,%lld\n", r.weight ? "weight" : "activation", r.name.c_str(),
                    r.min, r.max, (long long)r.passes);
      out += line;
    }
  return out;
}

std::string ptq_predictions_path(const std::string& path, const PtqSetting& setting) {
  std::filesystem::path p(path);
  const std::string ext = p.extension().string();
  p.replace_extension();
  std::string suffix = ".";  // (appended piecewise: GCC 12's -Wrestrict misfires on "." + a + b)
  suffix.append(setting.tag()).append(ext);
  p += suffix;
  return p.string();
}

}  // namespace lowbit::train
