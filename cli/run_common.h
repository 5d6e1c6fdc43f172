// Pieces shared by the `lowbit` sub-commands: data set + loaders from the options, the model from
// the zoo, evaluation, accuracy counting, small file helpers.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cli/options.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "layers/module.h"

namespace lowbit::cli {

struct DataSetup {
  data::ImageDataset train, test;
  std::string name;  // "cifar10", "fashion-mnist", ... (the spec's kind)
  std::unique_ptr<data::DataLoader> train_loader, test_loader;
};

// Loads --data, applies --limit-train/--limit-test, and builds the loaders: training with the
// --augment pipeline, shuffled by --seed; test in order. Both normalise with the training set's
// per-channel mean and standard deviation.
DataSetup make_data(const Options& opts, int64_t batch, uint64_t seed);

// The --model from the zoo, sized for the data set (channels, image size, classes), --width, --variant.
std::shared_ptr<Module> make_model(const Options& opts, const DataSetup& data);

struct EvalResult {
  double loss = 0, accuracy = 0;
  int64_t images = 0;
};
struct Prediction {
  int32_t label = 0, predicted = 0;
};
// Mean cross-entropy and accuracy over one pass of the loader, in eval mode without gradients;
// restores the model's train/eval mode. With `predictions`, also appends each image's label and
// arg-max class, in the loader's order (the data set's order for a test loader).
EvalResult evaluate(Module& model, data::DataLoader& loader, std::vector<Prediction>* predictions = nullptr);

// Arg-max class of each row of logits [B, classes].
std::vector<int32_t> argmax_rows(const Tensor& logits);

// Number of rows of logits [B, classes] whose arg-max equals the label.
int64_t count_correct(const Tensor& logits, const Tensor& labels);

void write_text_file(const std::string& path, const std::string& text);  // atomic

}  // namespace lowbit::cli
