// A data set ready for training: the named data set (data/dataset.h), optionally cut to its first
// images, with a training loader (augmentation, shuffled by the seed) and a test loader (in order).
// Both normalise with the training set's per-channel mean and standard deviation.
//
//   TrainData d = train::load_data({.dataset = "fashion-mnist", .batch = 128});
//   auto model = train::create_model("lenet5", d);     // sized for its channels, image size, classes
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "layers/module.h"

namespace lowbit::train {

struct DataConfig {
  std::string dataset = "fashion-mnist";  // data::load_dataset's spec: fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, ...
  int64_t batch = 128;
  uint64_t seed = 1;             // data order and augmentation
  std::string augment = "auto";  // auto (crop+flip for CIFAR, crop for SVHN, none else) | none | a transform list
  int64_t limit_train = 0;       // > 0: only the first N training images
  int64_t limit_test = 0;        // > 0: only the first N test images
  std::string test_file{};       // a CIFAR-10/100 binary batch to test on instead of the test split
};

struct TrainData {
  data::ImageDataset train, test;
  std::string kind;  // "cifar10", "fashion-mnist", ... (the spec before ':')
  std::unique_ptr<data::DataLoader> train_loader, test_loader;
  // The normalization both loaders apply, (x/255 - mean_c)/std_c, per channel, as the transform
  // parsed it (the training images' statistics).
  std::vector<double> mean, std;
};

TrainData load_data(const DataConfig& config);

// A model of the zoo (models/zoo.h) sized for the data: input channels, image size, classes.
std::shared_ptr<Module> create_model(const std::string& name, const TrainData& data, double width_mult = 1.0,
                                     const std::string& variant = "");

}  // namespace lowbit::train
