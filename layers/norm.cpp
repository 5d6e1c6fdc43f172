#include "layers/norm.h"

#include <cmath>

#include "autograd/ops.h"
#include "autograd/ops_nn.h"
#include "layers/activation.h"

namespace lowbit {

BatchNormBase::BatchNormBase(int64_t num_features, BatchNormOptions opt) : c_(num_features), opt_(opt) {
  LOWBIT_CHECK(c_ > 0, "BatchNorm: num_features must be positive, got ", c_);
  LOWBIT_CHECK(opt_.eps > 0 && opt_.momentum >= 0 && opt_.momentum <= 1,
               "BatchNorm: need eps > 0 and momentum in [0, 1], got eps=", opt_.eps, ", momentum=", opt_.momentum);
  if (opt_.affine) {
    register_parameter("weight", Tensor::ones({c_}));
    register_parameter("bias", Tensor::zeros({c_}));
  }
  if (opt_.track_running_stats) {
    register_buffer("running_mean", Tensor::zeros({c_}));
    register_buffer("running_var", Tensor::ones({c_}));
  }
}

void BatchNormBase::set_momentum(double momentum) {
  LOWBIT_CHECK(momentum >= 0 && momentum <= 1, "BatchNorm: momentum must be in [0, 1], got ", momentum);
  opt_.momentum = momentum;
}

void BatchNormBase::reset_running_stats() {
  if (!opt_.track_running_stats) return;
  buffer("running_mean").fill_(0);
  buffer("running_var").fill_(1);
}

std::vector<double> BatchNormBase::eval_scale() {
  std::vector<double> s = buffer("running_var").to_vector();
  const std::vector<double> gamma =
      opt_.affine ? param("weight").data().to_vector() : std::vector<double>(s.size(), 1.0);
  for (size_t k = 0; k < s.size(); ++k) s[k] = gamma[k] / std::sqrt(s[k] + opt_.eps);
  return s;
}

Variable BatchNormBase::normalize(const Variable& x, bool relu) {
  LOWBIT_CHECK(x.size(1) == c_, type_name(), "::forward: expected ", c_, " channels in dim 1, got ",
               shape_str(x.shape()));
  const Variable gamma = opt_.affine ? param("weight") : Variable();
  const Variable beta = opt_.affine ? param("bias") : Variable();
  Tensor rm, rv;
  if (opt_.track_running_stats) rm = buffer("running_mean"), rv = buffer("running_var");
  // Without running statistics batch statistics are used in eval too (PyTorch).
  const bool use_batch_stats = is_training() || !opt_.track_running_stats;
  if (use_batch_stats)
    LOWBIT_CHECK(x.numel() / c_ > 1, type_name(),
                 "::forward: batch statistics need more than one value per channel, got ", shape_str(x.shape()));
  if (sync_ && is_training()) {
    const Variable y = sync_batch_norm(x, gamma, beta, rm, rv, opt_.momentum, opt_.eps);
    return relu ? lowbit::relu(y) : y;
  }
  if (relu) return batch_norm_relu(x, gamma, beta, rm, rv, use_batch_stats, opt_.momentum, opt_.eps);
  return batch_norm(x, gamma, beta, rm, rv, use_batch_stats, opt_.momentum, opt_.eps);
}

Variable BatchNormBase::forward_with_relu(const Variable& x, Module& relu) {
  LOWBIT_CHECK(dynamic_cast<const ReLU*>(&relu) != nullptr, type_name(), "::forward_with_relu: expected a ReLU, got ",
               relu.type_name());
  if (output_hook()) return relu((*this)(x));
  return relu.apply_output_hook(restore_shape(normalize(check_input(x), true)));
}

int64_t set_sync_batch_norm(Module& model, bool on) {
  int64_t n = 0;
  for (auto& [name, m] : model.named_modules())
    if (auto* bn = dynamic_cast<BatchNormBase*>(m.get())) bn->set_sync(on), ++n;
  return n;
}

std::string BatchNormBase::extra_repr() const {
  return detail::concat(c_, ", eps=", opt_.eps, ", momentum=", opt_.momentum,
                        ", affine=", opt_.affine ? "true" : "false",
                        opt_.track_running_stats ? "" : ", track_running_stats=false");
}

Variable BatchNorm1d::check_input(const Variable& x) const {
  LOWBIT_CHECK(x.dim() == 2 || x.dim() == 3, "BatchNorm1d::forward: expected [N, C] or [N, C, L], got ",
               shape_str(x.shape()));
  return x.dim() == 2 ? x : unsqueeze(x, 3);
}
Variable BatchNorm1d::restore_shape(const Variable& y) const { return y.dim() == 4 ? squeeze(y, 3) : y; }
Variable BatchNorm1d::forward(const Variable& x) { return restore_shape(normalize(check_input(x))); }

Variable BatchNorm2d::check_input(const Variable& x) const {
  LOWBIT_CHECK(x.dim() == 4, "BatchNorm2d::forward: expected [N, C, H, W], got ", shape_str(x.shape()));
  return x;
}
Variable BatchNorm2d::forward(const Variable& x) { return normalize(check_input(x)); }

LocalResponseNorm::LocalResponseNorm(int64_t size, double alpha, double beta, double k)
    : size_(size), alpha_(alpha), beta_(beta), k_(k) {
  LOWBIT_CHECK(size_ > 0, "LocalResponseNorm: size must be positive, got ", size_);
}

Variable LocalResponseNorm::forward(const Variable& x) {
  LOWBIT_CHECK(x.dim() == 4, "LocalResponseNorm::forward: expected [N, C, H, W], got ", shape_str(x.shape()));
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  // Squares laid out as a 1-channel image [N, 1, C, H*W]; the channel window is a (size x 1) average pool
  // over the zero-padded channel axis (count_include_pad: divides by size, i.e. alpha / n * sum).
  Variable sq = reshape(contiguous(mul(x, x)), {N, 1, C, H * W});
  sq = pad(sq, {0, 0, size_ / 2, (size_ - 1) / 2});
  Pool2dOptions po;
  po.kernel = {size_, 1};
  po.stride = {1, 1};
  const Variable window_mean = reshape(contiguous(avg_pool2d(sq, po)), {N, C, H, W});
  const Variable div = pow(add(mul(window_mean, alpha_), k_), beta_);
  return x / div;
}

std::string LocalResponseNorm::extra_repr() const {
  return detail::concat(size_, ", alpha=", alpha_, ", beta=", beta_, ", k=", k_);
}

}  // namespace lowbit
