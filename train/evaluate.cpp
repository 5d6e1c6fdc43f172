#include "train/evaluate.h"

#include <algorithm>

#include "autograd/ops.h"
#include "layers/norm.h"

namespace lowbit::train {

namespace {

// The precision of the model's parameters (float32 without any). A model in another precision than
// the loader's images (eval --double) gets them converted.
DType model_dtype(Module& model) {
  const std::vector<Variable> params = model.parameters();
  return params.empty() ? DType::f32 : params.front().dtype();
}

Variable model_input(const Tensor& images, DType dtype) {
  return Variable(images.dtype() == dtype ? images : images.to(dtype));
}

}  // namespace

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
  const DType dtype = model_dtype(model);
  while (loader.next(b)) {
    if (b.labels.numel() == 0) continue;  // a shard's empty part of a short last batch
    Variable logits = model(model_input(b.images, dtype));
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

int64_t recalibrate_batch_norm(Module& model, data::DataLoader& loader, int64_t batches) {
  LOWBIT_CHECK(batches >= 1, "batch-norm recalibration: batches must be >= 1, got ", batches);
  std::vector<std::pair<BatchNormBase*, double>> norms;  // each with its momentum
  for (auto& [name, m] : model.named_modules())
    if (auto* bn = dynamic_cast<BatchNormBase*>(m.get()); bn && bn->options().track_running_stats)
      norms.emplace_back(bn, bn->options().momentum);
  if (norms.empty()) return 0;
  const bool was_training = model.is_training();
  model.eval();
  for (auto& [bn, momentum] : norms) {
    bn->reset_running_stats();
    bn->train(true);
  }
  NoGradGuard no_grad;
  const DType dtype = model_dtype(model);
  loader.begin_epoch(0, 0);
  data::Batch b;
  for (int64_t t = 1; t <= batches && loader.next(b);) {
    if (b.labels.numel() == 0) continue;
    for (auto& [bn, momentum] : norms) bn->set_momentum(1.0 / double(t));
    model(model_input(b.images, dtype));
    ++t;
  }
  for (auto& [bn, momentum] : norms) bn->set_momentum(momentum);
  model.train(was_training);
  return int64_t(norms.size());
}

}  // namespace lowbit::train
