// Normalisation layers.
//   BatchNorm1d: x [N, C] or [N, C, L]; BatchNorm2d: x [N, C, H, W]. y = gamma (x - mu) / sqrt(var + eps) + beta
//     per channel. Training: batch statistics (biased variance) normalise and the buffers running_mean /
//     running_var move by `momentum` (PyTorch convention: r <- (1 - m) r + m batch_stat, unbiased
//     variance; TF's "momentum 0.9" is m = 0.1). Eval: the running statistics normalise.
//     Parameters weight (gamma, init 1) and bias (beta, init 0) when affine.
//   LocalResponseNorm (PyTorch semantics, Krizhevsky et al. 2012):
//     b_c = a_c / (k + alpha / n * sum_{c' = c - n/2}^{c + (n-1)/2} a_{c'}^2)^beta, channels out of range are 0,
//     composed from differentiable ops (square, pad over channels, avg_pool2d, pow), so gradients follow.
#pragma once

#include <vector>

#include "layers/module.h"

namespace lowbit {

struct BatchNormOptions {
  double eps = 1e-5;
  double momentum = 0.1;
  bool affine = true;
  bool track_running_stats = true;
};

class BatchNormBase : public Module {
 public:
  BatchNormBase(int64_t num_features, BatchNormOptions opt);
  std::string extra_repr() const override;
  int64_t num_features() const { return c_; }
  const BatchNormOptions& options() const { return opt_; }
  void reset_running_stats();
  // The running statistics' momentum from the next training forward on (in [0, 1]; 1/t at the t-th
  // batch after reset_running_stats gives their cumulative mean, PyTorch's momentum=None).
  void set_momentum(double momentum);
  // Eval mode's per-channel factor gamma_k / sqrt(running_var_k + eps) (gamma = 1 without affine): what
  // folding this batch norm into the layer before it multiplies that layer's weights by.
  std::vector<double> eval_scale();

  // relu(operator()(x)) for this batch norm followed by `relu` (a ReLU module), with the ReLU fused
  // into the batch-norm kernels when this module has no output hook (else the two calls as
  // written); relu's output hook (e.g. an activation quantizer) applies to the result either way.
  // Containers and blocks call this for BatchNorm -> ReLU pairs.
  Variable forward_with_relu(const Variable& x, Module& relu);

  // Synchronized batch norm (data parallelism): in training, statistics over every rank's share of the
  // batch (sync_batch_norm in autograd/ops_nn.h); off by default. The fit loop sets it (--sync-bn).
  void set_sync(bool on) { sync_ = on; }
  bool sync() const { return sync_; }

 protected:
  // Checks x (dims of the concrete layer) and returns it as the [N, C, ...] input of batch_norm.
  virtual Variable check_input(const Variable& x) const = 0;
  // Back to the layer's input shape (BatchNorm1d's [N, C, L] runs as [N, C, L, 1]).
  virtual Variable restore_shape(const Variable& y) const { return y; }
  Variable normalize(const Variable& x, bool relu = false);

 private:
  int64_t c_;
  BatchNormOptions opt_;
  bool sync_ = false;
};

// Every BatchNorm of `model` synchronized or not (BatchNormBase::set_sync); returns how many there are.
int64_t set_sync_batch_norm(Module& model, bool on);

class BatchNorm1d : public BatchNormBase {
 public:
  explicit BatchNorm1d(int64_t num_features, BatchNormOptions opt = {}) : BatchNormBase(num_features, opt) {}
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "BatchNorm1d"; }

 protected:
  Variable check_input(const Variable& x) const override;
  Variable restore_shape(const Variable& y) const override;
};

class BatchNorm2d : public BatchNormBase {
 public:
  explicit BatchNorm2d(int64_t num_features, BatchNormOptions opt = {}) : BatchNormBase(num_features, opt) {}
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "BatchNorm2d"; }

 protected:
  Variable check_input(const Variable& x) const override;
};

class LocalResponseNorm : public Module {
 public:
  explicit LocalResponseNorm(int64_t size, double alpha = 1e-4, double beta = 0.75, double k = 1.0);
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "LocalResponseNorm"; }
  std::string extra_repr() const override;

 private:
  int64_t size_;
  double alpha_, beta_, k_;
};

}  // namespace lowbit
