// Batch normalisation (training: batch statistics; eval: running statistics).
#include <cmath>

#include "autograd/ops.h"
#include "autograd/ops_nn.h"
#include "core/kernels/batchnorm.h"
#include "core/math.h"

namespace lowbit {
namespace {

// Dims reduced over and the broadcast shape of per-channel tensors.
std::vector<int64_t> stat_dims(int64_t nd) { return nd == 2 ? std::vector<int64_t>{0} : std::vector<int64_t>{0, 2, 3}; }
Shape channel_shape(int64_t nd, int64_t C) { return nd == 2 ? Shape{1, C} : Shape{1, C, 1, 1}; }

// x in [rows][C] memory order: row-major for 2-d, channels-last for 4-d.
Tensor rows_by_channels(const Tensor& x) {
  return x.dim() == 2 ? x.contiguous() : x.contiguous(MemoryFormat::channels_last);
}
Tensor empty_rows_by_channels(const Shape& s, DType t) {
  return s.size() == 2 ? Tensor::empty(s, t) : Tensor::empty(s, t, MemoryFormat::channels_last);
}

// The training-mode gradients composed from primitive ops (recorded for double backward):
//   xhat = (x - mean) * invstd,  dxhat = g * gamma,
//   dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
//   dgamma = sum(g * xhat),  dbeta = sum(g).
std::vector<Variable> train_backward_composed(const Variable& g, const Variable& x, const Variable& gamma,
                                              const Variable& beta, double eps) {
  const auto dims = stat_dims(x.dim());
  const Shape cs = channel_shape(x.dim(), x.size(1));
  const Variable centered = sub(x, mean(x, dims, true));
  const Variable invstd = pow(add(mean(mul(centered, centered), dims, true), eps), -0.5);
  const Variable xhat = mul(centered, invstd);
  const Variable dxhat = gamma.defined() ? mul(g, reshape(gamma, cs)) : g;
  const Variable dx =
      mul(invstd, sub(sub(dxhat, mean(dxhat, dims, true)), mul(xhat, mean(mul(dxhat, xhat), dims, true))));
  return {x.requires_grad() ? dx : Variable(), gamma.requires_grad() ? sum(mul(g, xhat), dims) : Variable(),
          beta.requires_grad() ? sum(g, dims) : Variable()};
}

// g masked by a fused ReLU's output (out > 0), recorded so double backward sees the mask.
Variable relu_masked(const Variable& g, const Variable& out) { return mul_mask(g, math::gt(out.data(), 0.0)); }

Variable batch_norm_impl(const Variable& x, const Variable& gamma, const Variable& beta, Tensor running_mean,
                         Tensor running_var, bool training, double momentum, double eps, bool relu) {
  LOWBIT_CHECK(x.dim() == 2 || x.dim() == 4, "batch_norm: expected input [N, C] or [N, C, H, W], got ",
               shape_str(x.shape()));
  LOWBIT_CHECK(is_floating(x.dtype()), "batch_norm: expected a floating input");
  const int64_t C = x.size(1), rows = x.numel() / std::max<int64_t>(C, 1);
  for (const Variable* p : {&gamma, &beta})
    LOWBIT_CHECK(!p->defined() || (p->shape() == Shape{C} && p->dtype() == x.dtype()), "batch_norm: affine parameter ",
                 p->defined() ? shape_str(p->shape()) : "", " for ", C, " channels");
  for (const Tensor* t : {&running_mean, &running_var})
    LOWBIT_CHECK(!t->defined() || (t->shape() == Shape{C} && t->dtype() == x.dtype() && t->is_contiguous()),
                 "batch_norm: running statistic of shape ", t->defined() ? shape_str(t->shape()) : "", " for ", C,
                 " channels");
  const Tensor xc = rows_by_channels(x.data());
  const Tensor gm = gamma.defined() ? gamma.data().contiguous() : Tensor();
  const Tensor bt = beta.defined() ? beta.data().contiguous() : Tensor();
  Tensor y = empty_rows_by_channels(x.shape(), x.dtype());

  if (!training) {
    LOWBIT_CHECK(running_mean.defined() && running_var.defined(),
                 "batch_norm: eval mode needs running statistics (track_running_stats)");
    LOWBIT_DISPATCH_FLOAT(x.dtype(), "batch_norm", [&] {
      kernels::batchnorm_forward_eval(rows, C, xc.data<scalar_t>(), running_mean.data<scalar_t>(),
                                      running_var.data<scalar_t>(), gm.defined() ? gm.data<scalar_t>() : nullptr,
                                      bt.defined() ? bt.data<scalar_t>() : nullptr, eps, y.data<scalar_t>(), relu);
    });
    const Shape cs = channel_shape(x.dim(), C);
    const Tensor inv = math::rdiv(math::sqrt(math::add(running_var, eps)), 1.0).reshape(cs);
    const Tensor rmean = running_mean.reshape(cs);
    return make_result(
        y, relu ? "batch_norm_relu_eval" : "batch_norm_eval", {x, gamma, beta},
        [x, gamma, beta, inv, rmean, cs, relu](const Variable& g_out, const Variable& out) {
          const Variable g = relu ? relu_masked(g_out, out) : g_out;
          const auto dims = stat_dims(x.dim());
          const Variable inv_v(inv);
          const Variable scale = gamma.defined() ? mul(reshape(gamma, cs), inv_v) : inv_v;
          return std::vector<Variable>{
              x.requires_grad() ? mul(g, scale) : Variable(),
              gamma.requires_grad() ? sum(mul(g, mul(sub(x, Variable(rmean)), inv_v)), dims) : Variable(),
              beta.requires_grad() ? sum(g, dims) : Variable()};
        },
        relu);
  }

  LOWBIT_CHECK(rows > 1, "batch_norm: training needs more than one value per channel, got input ",
               shape_str(x.shape()));
  Tensor save_mean = Tensor::empty({C}, x.dtype()), save_invstd = Tensor::empty({C}, x.dtype());
  Tensor var_unbiased = Tensor::empty({C}, x.dtype());
  // Fused ReLU: the per-channel affine (scale, shift) the forward applied, for the backward's mask.
  Tensor relu_affine = relu ? Tensor::empty({2 * C}, x.dtype()) : Tensor();
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "batch_norm", [&] {
    kernels::batchnorm_forward_train(rows, C, xc.data<scalar_t>(), gm.defined() ? gm.data<scalar_t>() : nullptr,
                                     bt.defined() ? bt.data<scalar_t>() : nullptr, eps, y.data<scalar_t>(),
                                     save_mean.data<scalar_t>(), save_invstd.data<scalar_t>(),
                                     var_unbiased.data<scalar_t>(), relu ? relu_affine.data<scalar_t>() : nullptr);
    if (running_mean.defined() && running_var.defined())
      kernels::batchnorm_update_running_stats(C, momentum, save_mean.data<scalar_t>(), var_unbiased.data<scalar_t>(),
                                              running_mean.data<scalar_t>(), running_var.data<scalar_t>());
  });
  return make_result(
      y, relu ? "batch_norm_relu" : "batch_norm", {x, gamma, beta},
      [x, gamma, beta, save_mean, save_invstd, relu_affine, eps, rows, C](const Variable& g, const Variable& out) {
        if (GradMode::enabled())
          return train_backward_composed(relu_affine.defined() ? relu_masked(g, out) : g, x, gamma, beta, eps);
        // Not recorded: one fused pass.
        const Tensor xr = rows_by_channels(x.data()), dy = rows_by_channels(g.data());
        Tensor dx = x.requires_grad() ? empty_rows_by_channels(x.shape(), x.dtype()) : Tensor();
        Tensor dgamma = gamma.requires_grad() ? Tensor::empty({C}, x.dtype()) : Tensor();
        Tensor dbeta = beta.requires_grad() ? Tensor::empty({C}, x.dtype()) : Tensor();
        LOWBIT_DISPATCH_FLOAT(x.dtype(), "batch_norm_backward", [&] {
          auto ptr = [](Tensor& t) { return t.defined() ? t.data<scalar_t>() : nullptr; };
          kernels::batchnorm_backward(
              rows, C, xr.data<scalar_t>(), dy.data<scalar_t>(), save_mean.data<scalar_t>(),
              save_invstd.data<scalar_t>(), gamma.defined() ? gamma.data().contiguous().data<scalar_t>() : nullptr,
              ptr(dx), ptr(dgamma), ptr(dbeta), relu_affine.defined() ? relu_affine.data<scalar_t>() : nullptr);
        });
        auto wrap = [](const Tensor& t) { return t.defined() ? Variable(t) : Variable(); };
        return std::vector<Variable>{wrap(dx), wrap(dgamma), wrap(dbeta)};
      },
      relu);
}

}  // namespace

Variable batch_norm(const Variable& x, const Variable& gamma, const Variable& beta, Tensor running_mean,
                    Tensor running_var, bool training, double momentum, double eps) {
  return batch_norm_impl(x, gamma, beta, std::move(running_mean), std::move(running_var), training, momentum, eps,
                         false);
}

Variable batch_norm_relu(const Variable& x, const Variable& gamma, const Variable& beta, Tensor running_mean,
                         Tensor running_var, bool training, double momentum, double eps) {
  return batch_norm_impl(x, gamma, beta, std::move(running_mean), std::move(running_var), training, momentum, eps,
                         true);
}

Variable dropout(const Variable& x, double p, bool training, Generator& gen) {
  LOWBIT_CHECK(p >= 0 && p < 1, "dropout: probability must be in [0, 1), got ", p);
  if (!training || p == 0) return x;
  // Random numbers laid out like x, so the mask keeps x's memory format.
  const Tensor r = Tensor::rand({x.numel()}, gen, x.dtype());
  const Tensor u = x.data().is_dense() ? r.as_strided(x.shape(), x.data().strides(), 0) : r.reshape(x.shape());
  const Tensor mask = math::mul(math::ge(u, p), 1.0 / (1.0 - p));
  return mul_mask(x, mask);
}

}  // namespace lowbit
