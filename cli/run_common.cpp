#include "cli/run_common.h"

#include <cmath>

#include "autograd/ops.h"
#include "core/serialize.h"
#include "models/zoo.h"

namespace lowbit::cli {
namespace {

// The kind of a data-set spec: "cifar10:DIR" -> "cifar10".
std::string data_kind(const std::string& spec) { return spec.substr(0, spec.find(':')); }

data::ImageDataset limit(const data::ImageDataset& d, const Options& opts, const char* key) {
  if (!opts.has(key)) return d;
  const int64_t n = opts.integer(key);
  LOWBIT_CHECK(n >= 1, "lowbit: --", key, " must be >= 1");
  return d.subset(0, std::min(n, d.size()));
}

std::string augment_spec(const Options& opts, const std::string& kind, int64_t size) {
  std::string a = opts.str("augment");
  if (a != "auto") return a == "none" ? "" : a;
  if (kind == "cifar10" || kind == "cifar100" || kind == "cifar100-coarse")
    return detail::concat("crop:", size, ":4,flip");
  if (kind == "svhn") return detail::concat("crop:", size, ":2");
  return "";
}

// Per-channel mean and standard deviation of the training pixels, in [0, 1] units, as the
// "normalize:M1/M2/..:S1/S2/.." transform spec (accumulated in double: exact for any thread count).
std::string normalize_spec(const data::ImageDataset& d) {
  const int64_t C = d.channels(), n = d.images.numel();
  const Tensor pixels = d.images.contiguous();
  const uint8_t* p = pixels.data<uint8_t>();
  std::vector<double> sum(C, 0), sq(C, 0);
  for (int64_t i = 0; i < n; ++i) {
    const double v = p[i] / 255.0;
    sum[i % C] += v, sq[i % C] += v * v;
  }
  std::string means, stds;
  const double count = double(n / C);
  for (int64_t c = 0; c < C; ++c) {
    const double m = sum[c] / count, var = std::max(sq[c] / count - m * m, 1e-12);
    means += detail::concat(c ? "/" : "", m);
    stds += detail::concat(c ? "/" : "", std::sqrt(var));
  }
  return "normalize:" + means + ":" + stds;
}

}  // namespace

DataSetup make_data(const Options& opts, int64_t batch, uint64_t seed) {
  DataSetup s;
  s.name = data_kind(opts.str("data"));
  data::DataSplits splits = data::load_dataset(opts.str("data"));
  if (opts.has("test-file")) {
    const std::string file = opts.str("test-file");
    LOWBIT_CHECK(s.name == "cifar10" || s.name == "cifar100" || s.name == "cifar100-coarse",
                 "lowbit: --test-file takes a CIFAR binary batch; the data set is ", s.name);
    splits.test = s.name == "cifar10" ? data::read_cifar10({file}) : data::read_cifar100(file, s.name == "cifar100");
  }
  s.train = limit(splits.train, opts, "limit-train");
  s.test = limit(splits.test, opts, "limit-test");
  LOWBIT_CHECK(s.train.size() > 0 && s.test.size() > 0, "lowbit: data set ", opts.str("data"), " has no images");

  const std::string normalize = normalize_spec(s.train);
  const std::string aug = augment_spec(opts, s.name, s.train.height());

  data::LoaderOptions train_opt;
  train_opt.batch_size = batch;
  train_opt.shuffle = true;
  train_opt.seed = seed;
  train_opt.drop_last = false;
  train_opt.transforms = data::parse_transforms(aug.empty() ? normalize : aug + "," + normalize);
  s.train_loader = std::make_unique<data::DataLoader>(s.train, train_opt);

  data::LoaderOptions test_opt;
  test_opt.batch_size = std::max<int64_t>(batch, 256);
  test_opt.shuffle = false;
  test_opt.seed = seed;
  test_opt.transforms = data::parse_transforms(normalize);
  s.test_loader = std::make_unique<data::DataLoader>(s.test, test_opt);
  return s;
}

std::shared_ptr<Module> make_model(const Options& opts, const DataSetup& data) {
  models::ModelOptions mo;
  mo.num_classes = data.train.num_classes;
  mo.in_channels = data.train.channels();
  mo.image_size = data.train.height();
  mo.width_mult = opts.real("width");
  mo.variant = opts.str("variant");
  return models::create_model(opts.str("model"), mo);
}

std::vector<int32_t> argmax_rows(const Tensor& logits_in) {
  const Tensor logits = logits_in.to(DType::f32).contiguous();
  const int64_t B = logits.size(0), classes = logits.size(1);
  const float* p = logits.data<float>();
  std::vector<int32_t> arg(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) {
    const float* row = p + i * classes;
    arg[size_t(i)] = static_cast<int32_t>(std::max_element(row, row + classes) - row);
  }
  return arg;
}

int64_t count_correct(const Tensor& logits, const Tensor& labels_in) {
  const Tensor labels = labels_in.contiguous();
  const int32_t* y = labels.data<int32_t>();
  const std::vector<int32_t> arg = argmax_rows(logits);
  int64_t correct = 0;
  for (size_t i = 0; i < arg.size(); ++i) correct += arg[i] == y[i];
  return correct;
}

EvalResult evaluate(Module& model, data::DataLoader& loader, std::vector<Prediction>* predictions) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  loader.begin_epoch(0, 0);
  data::Batch b;
  while (loader.next(b)) {
    Variable logits = model(Variable(b.images));
    const int64_t n = b.labels.numel();
    loss_sum += cross_entropy(logits, b.labels).item() * double(n);
    const Tensor labels = b.labels.contiguous();
    const int32_t* y = labels.data<int32_t>();
    const std::vector<int32_t> arg = argmax_rows(logits.data());
    for (int64_t i = 0; i < n; ++i) {
      correct += arg[size_t(i)] == y[i];
      if (predictions) predictions->push_back({y[i], arg[size_t(i)]});
    }
    r.images += n;
  }
  model.train(was_training);
  r.loss = r.images ? loss_sum / double(r.images) : 0;
  r.accuracy = r.images ? double(correct) / double(r.images) : 0;
  return r;
}

void write_text_file(const std::string& path, const std::string& text) { write_file_atomic(path, text); }

}  // namespace lowbit::cli
