// Evaluation of a classifier over a data loader: mean cross-entropy and accuracy, optionally each
// image's prediction.
#pragma once

#include <cstdint>
#include <vector>

#include "data/loader.h"
#include "layers/module.h"

namespace lowbit::train {

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

// Number of rows of logits [B, classes] whose arg-max equals the label (labels int32 [B]).
int64_t count_correct(const Tensor& logits, const Tensor& labels);

}  // namespace lowbit::train
