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

// Re-estimates the running statistics of every BatchNorm in `model` (e.g. after stitching DCQ's
// sections, whose batch norms saw the teacher's features, not the student's): reset, then the
// cumulative mean of the batch statistics (mean, unbiased variance) of the first `batches` batches of
// `loader` (all if it has fewer), each batch weighted equally (PyTorch's momentum=None). Only the
// batch norms run in training mode (dropout off, quantizers as in evaluation); no gradients, no
// parameter changes; the model's train/eval mode and the momenta are restored. Returns the number of
// batch norms with running statistics (0: the loader is not read). batches >= 1.
int64_t recalibrate_batch_norm(Module& model, data::DataLoader& loader, int64_t batches);

// Arg-max class of each row of logits [B, classes].
std::vector<int32_t> argmax_rows(const Tensor& logits);

// Number of rows of logits [B, classes] whose arg-max equals the label (labels int32 [B]).
int64_t count_correct(const Tensor& logits, const Tensor& labels);

}  // namespace lowbit::train
