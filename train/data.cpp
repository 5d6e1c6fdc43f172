#include "train/data.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "models/zoo.h"

namespace lowbit::train {
namespace {

data::ImageDataset limit(const data::ImageDataset& d, int64_t n) {
  if (n <= 0) return d;
  return d.subset(0, std::min(n, d.size()));
}

std::string augment_spec(const std::string& augment, const std::string& kind, int64_t size) {
  if (augment != "auto") return augment == "none" ? "" : augment;
  if (kind == "cifar10" || kind == "cifar100" || kind == "cifar100-coarse")
    return detail::concat("crop:", size, ":4,flip");
  if (kind == "svhn" || kind == "svhn+extra") return detail::concat("crop:", size, ":2");
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

TrainData load_data(const DataConfig& cfg) {
  LOWBIT_CHECK(cfg.batch >= 1, "load_data: batch must be >= 1, got ", cfg.batch);
  TrainData s;
  s.kind = cfg.dataset.substr(0, cfg.dataset.find(':'));
  data::DataSplits splits = data::load_dataset(cfg.dataset);
  if (!cfg.test_file.empty()) {
    LOWBIT_CHECK(s.kind == "cifar10" || s.kind == "cifar100" || s.kind == "cifar100-coarse",
                 "--test-file takes a CIFAR binary batch; the data set is ", s.kind);
    splits.test = s.kind == "cifar10" ? data::read_cifar10({cfg.test_file})
                                      : data::read_cifar100(cfg.test_file, s.kind == "cifar100");
  }
  s.train = limit(splits.train, cfg.limit_train);
  s.test = limit(splits.test, cfg.limit_test);
  LOWBIT_CHECK(s.train.size() > 0 && s.test.size() > 0, "data set ", cfg.dataset, " has no images");

  const std::string normalize = normalize_spec(s.train);
  {  // the values as the transform reads them back from the spec
    const std::string spec = normalize.substr(normalize.find(':') + 1);
    const std::string means = spec.substr(0, spec.find(':')), stds = spec.substr(spec.find(':') + 1);
    auto split = [](const std::string& list) {
      std::vector<double> v;
      size_t start = 0;
      while (start <= list.size()) {
        const size_t end = std::min(list.find('/', start), list.size());
        v.push_back(std::stod(list.substr(start, end - start)));
        start = end + 1;
      }
      return v;
    };
    s.mean = split(means), s.std = split(stds);
  }
  const std::string aug = augment_spec(cfg.augment, s.kind, s.train.height());

  data::LoaderOptions train_opt;
  train_opt.batch_size = cfg.batch;
  train_opt.shuffle = true;
  train_opt.seed = cfg.seed;
  train_opt.drop_last = false;
  train_opt.transforms = data::parse_transforms(aug.empty() ? normalize : aug + "," + normalize);
  s.train_loader = std::make_unique<data::DataLoader>(s.train, train_opt);

  data::LoaderOptions test_opt;
  test_opt.batch_size = std::max<int64_t>(cfg.batch, 256);
  test_opt.shuffle = false;
  test_opt.seed = cfg.seed;
  test_opt.transforms = data::parse_transforms(normalize);
  s.test_loader = std::make_unique<data::DataLoader>(s.test, test_opt);
  return s;
}

std::shared_ptr<Module> create_model(const std::string& name, const TrainData& data, double width_mult,
                                     const std::string& variant) {
  models::ModelOptions mo;
  mo.num_classes = data.train.num_classes;
  mo.in_channels = data.train.channels();
  mo.image_size = data.train.height();
  mo.width_mult = width_mult;
  mo.variant = variant;
  return models::create_model(name, mo);
}

}  // namespace lowbit::train
