// Batch normalisation (training: batch statistics; eval: running statistics).
#include <array>
#include <cmath>
#include <memory>

#include "autograd/kink_tape.h"
#include "autograd/ops.h"
#include "autograd/ops_nn.h"
#include "core/distributed.h"
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

// g masked by a fused ReLU's output (out > 0), recorded so double backward sees the mask (eval mode).
Variable relu_masked(const Variable& g, const Variable& out) { return mul_mask(g, math::gt(out.data(), 0.0)); }

// What the training-mode backward kernels read, kept by the forward's backward function.
struct TrainSaved {
  Variable x, gamma;
  Tensor save_mean, save_invstd, relu_affine;  // relu_affine defined: the fused ReLU's forward affine
  Tensor relu_out;                             // the fused ReLU's output: mask out > 0 for the compositions
  double eps = 0;
  int64_t rows = 0, C = 0;
};

// The fused ReLU's gradient mask (out > 0) as a constant for mul_mask; undefined without the ReLU.
Tensor relu_mask(const TrainSaved& s) { return s.relu_out.defined() ? math::gt(s.relu_out, 0.0) : Tensor(); }

// The fused first-order kernel: dx, dgamma, dbeta of g = dy (masked by the fused ReLU), each only if wanted.
std::array<Tensor, 3> fused_backward(const TrainSaved& s, const Tensor& dy_in, bool want_dx, bool want_dgamma,
                                     bool want_dbeta) {
  const Tensor xr = rows_by_channels(s.x.data()), dy = rows_by_channels(dy_in);
  Tensor dx = want_dx ? empty_rows_by_channels(s.x.shape(), s.x.dtype()) : Tensor();
  Tensor dgamma = want_dgamma ? Tensor::empty({s.C}, s.x.dtype()) : Tensor();
  Tensor dbeta = want_dbeta ? Tensor::empty({s.C}, s.x.dtype()) : Tensor();
  LOWBIT_DISPATCH_FLOAT(s.x.dtype(), "batch_norm_backward", [&] {
    auto ptr = [](Tensor& t) { return t.defined() ? t.data<scalar_t>() : nullptr; };
    kernels::batchnorm_backward(
        s.rows, s.C, xr.data<scalar_t>(), dy.data<scalar_t>(), s.save_mean.data<scalar_t>(),
        s.save_invstd.data<scalar_t>(), s.gamma.defined() ? s.gamma.data().contiguous().data<scalar_t>() : nullptr,
        ptr(dx), ptr(dgamma), ptr(dbeta), s.relu_affine.defined() ? s.relu_affine.data<scalar_t>() : nullptr);
  });
  return {dx, dgamma, dbeta};
}

// Derivatives of dx = batch_norm_backward(dy, x, gamma) given u = dP/d(dx), composed from primitive ops
// (recorded: third derivatives). The formulas of kernels::batchnorm_backward_backward.
std::vector<Variable> double_backward_composed(const TrainSaved& s, const Variable& dy, const Variable& u) {
  const auto dims = stat_dims(s.x.dim());
  const Shape cs = channel_shape(s.x.dim(), s.C);
  const Variable& x = s.x;
  const Tensor mask = relu_mask(s);
  const Variable g = mask.defined() ? mul_mask(dy, mask) : dy;
  const Variable centered = sub(x, mean(x, dims, true));
  const Variable invstd = pow(add(mean(mul(centered, centered), dims, true), s.eps), -0.5);
  const Variable xhat = mul(centered, invstd);
  const Variable A = mean(g, dims, true), B = mean(mul(g, xhat), dims, true);
  const Variable U = mean(u, dims, true), Ux = mean(mul(u, xhat), dims, true);
  const Variable Ug = sub(mean(mul(u, g), dims, true), mul(U, A));
  const Variable gr = s.gamma.defined() ? mul(reshape(s.gamma, cs), invstd) : invstd;
  const Variable u_c = sub(u, U), g_c = sub(g, A);
  Variable ddy, ddx, dgamma;
  if (dy.requires_grad()) {
    ddy = mul(gr, sub(u_c, mul(xhat, Ux)));
    if (mask.defined()) ddy = mul_mask(ddy, mask);
  }
  if (x.requires_grad())
    ddx = mul(mul(gr, invstd), add(neg(add(mul(B, u_c), mul(Ux, g_c))), mul(xhat, sub(mul(mul(B, Ux), 3.0), Ug))));
  if (s.gamma.requires_grad()) dgamma = sum(mul(invstd, mul(u, sub(g_c, mul(xhat, B)))), dims);
  return {ddy, ddx, dgamma};
}

// The training-mode backward recorded for double backward (create_graph): the fused kernel computes
// dx, dgamma and dbeta, and each becomes a node whose own backward is the fused double-backward kernel
// (dx) or a cheap composition (dgamma, dbeta); when that second backward is itself recorded (third
// derivatives) it is composed from primitive ops.
std::vector<Variable> train_backward_recorded(const std::shared_ptr<TrainSaved>& s, const Variable& dy,
                                              const Variable& beta) {
  const bool want_dx = s->x.requires_grad(), want_dgamma = s->gamma.requires_grad(), want_dbeta = beta.requires_grad();
  const auto [dx_t, dgamma_t, dbeta_t] = fused_backward(*s, dy.data(), want_dx, want_dgamma, want_dbeta);
  const auto dims = stat_dims(s->x.dim());
  const Shape cs = channel_shape(s->x.dim(), s->C);
  Variable dx, dgamma, dbeta;
  if (want_dx)
    dx = make_result(dx_t, "batch_norm_backward", {dy, s->x, s->gamma}, [s, dy](const Variable& u, const Variable&) {
      if (GradMode::enabled()) return double_backward_composed(*s, dy, u);
      const Variable& x = s->x;
      const Tensor xr = rows_by_channels(x.data()), dyr = rows_by_channels(dy.data()), ur = rows_by_channels(u.data());
      Tensor ddy = dy.requires_grad() ? empty_rows_by_channels(x.shape(), x.dtype()) : Tensor();
      Tensor ddx = x.requires_grad() ? empty_rows_by_channels(x.shape(), x.dtype()) : Tensor();
      Tensor dgamma2 = s->gamma.requires_grad() ? Tensor::empty({s->C}, x.dtype()) : Tensor();
      LOWBIT_DISPATCH_FLOAT(x.dtype(), "batch_norm_double_backward", [&] {
        auto ptr = [](Tensor& t) { return t.defined() ? t.data<scalar_t>() : nullptr; };
        kernels::batchnorm_backward_backward(
            s->rows, s->C, xr.data<scalar_t>(), dyr.data<scalar_t>(), s->save_mean.data<scalar_t>(),
            s->save_invstd.data<scalar_t>(),
            s->gamma.defined() ? s->gamma.data().contiguous().data<scalar_t>() : nullptr,
            s->relu_affine.defined() ? s->relu_affine.data<scalar_t>() : nullptr, ur.data<scalar_t>(), ptr(ddy),
            ptr(ddx), ptr(dgamma2));
      });
      auto wrap = [](const Tensor& t) { return t.defined() ? Variable(t) : Variable(); };
      return std::vector<Variable>{wrap(ddy), wrap(ddx), wrap(dgamma2)};
    });
  if (want_dgamma)
    // dgamma = sum g xhat: d/dg = w xhat; d/dx = w invstd (g - mean g - xhat mean(g xhat)), the batch-norm
    // input gradient with gamma = w (composed; unused by gradient-l1, which reads no dgamma).
    dgamma = make_result(
        dgamma_t, "batch_norm_gamma_grad", {dy, s->x}, [s, dy, dims, cs](const Variable& w, const Variable&) {
          const Variable& x = s->x;
          const Tensor mask = relu_mask(*s);
          const Variable g = mask.defined() ? mul_mask(dy, mask) : dy;
          const Variable centered = sub(x, mean(x, dims, true));
          const Variable invstd = pow(add(mean(mul(centered, centered), dims, true), s->eps), -0.5);
          const Variable xhat = mul(centered, invstd);
          const Variable wc = reshape(w, cs);
          Variable ddy;
          if (dy.requires_grad()) {
            ddy = mul(wc, xhat);
            if (mask.defined()) ddy = mul_mask(ddy, mask);
          }
          Variable ddx;
          if (x.requires_grad()) {
            const Variable dxhat = mul(g, wc);
            ddx = mul(invstd, sub(sub(dxhat, mean(dxhat, dims, true)), mul(xhat, mean(mul(dxhat, xhat), dims, true))));
          }
          return std::vector<Variable>{ddy, ddx};
        });
  if (want_dbeta)
    // dbeta = sum g: d/dg = w, broadcast.
    dbeta = make_result(dbeta_t, "batch_norm_beta_grad", {dy}, [s, dy, cs](const Variable& w, const Variable&) {
      Variable ddy = expand(reshape(w, cs), dy.shape());
      const Tensor mask = relu_mask(*s);
      if (mask.defined()) ddy = mul_mask(ddy, mask);
      return std::vector<Variable>{ddy};
    });
  return {dx, dgamma, dbeta};
}

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
  auto saved =
      std::make_shared<TrainSaved>(TrainSaved{x, gamma, save_mean, save_invstd, relu_affine, Tensor(), eps, rows, C});
  return make_result(
      y, relu ? "batch_norm_relu" : "batch_norm", {x, gamma, beta},
      [saved, beta](const Variable& g, const Variable& out) {
        if (GradMode::enabled()) {
          // Recorded (create_graph): fused kernels both ways (train_backward_recorded).
          if (saved->relu_affine.defined()) saved->relu_out = out.data();
          return train_backward_recorded(saved, g, beta);
        }
        // Not recorded: one fused pass.
        const auto [dx, dgamma, dbeta] = fused_backward(*saved, g.data(), saved->x.requires_grad(),
                                                        saved->gamma.requires_grad(), beta.requires_grad());
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

namespace {

// sync_batch_norm's values composed from primitive ops (per-channel sums, all_reduce_sum, the mean, the
// centred squares): the recorded (create_graph) backward differentiates this.
Variable sync_batch_norm_composed(const Variable& x, const Variable& gamma, const Variable& beta, double eps,
                                  double rows) {
  const auto dims = stat_dims(x.dim());
  const Shape cs = channel_shape(x.dim(), x.size(1));
  const Variable mu = mul(all_reduce_sum(sum(x, dims, true)), 1.0 / rows);
  const Variable centered = sub(x, mu);
  const Variable var = mul(all_reduce_sum(sum(mul(centered, centered), dims, true)), 1.0 / rows);  // biased
  Variable y = mul(centered, pow(add(var, eps), -0.5));
  if (gamma.defined()) y = mul(y, reshape(gamma, cs));
  if (beta.defined()) y = add(y, reshape(beta, cs));
  return y;
}

}  // namespace

// Fused: this rank's per-channel mean and M2 (kernels::batchnorm_stats), summed over the ranks as
// [n mean, M2 + n mean^2, n] in double, then the normalisation pass; backward: this rank's sums of dy
// and dy (x - mean), summed over the ranks, then the dx pass. dgamma and dbeta stay this rank's own (the
// data-parallel gradient all-reduce sums them). Recorded (create_graph): the composed op's gradients.
Variable sync_batch_norm(const Variable& x, const Variable& gamma, const Variable& beta, Tensor running_mean,
                         Tensor running_var, double momentum, double eps) {
  LOWBIT_CHECK(x.dim() == 2 || x.dim() == 4, "sync_batch_norm: expected input [N, C] or [N, C, H, W], got ",
               shape_str(x.shape()));
  LOWBIT_CHECK(is_floating(x.dtype()), "sync_batch_norm: expected a floating input");
  const int64_t C = x.size(1), rows = x.numel() / std::max<int64_t>(C, 1);
  for (const Variable* p : {&gamma, &beta})
    LOWBIT_CHECK(!p->defined() || (p->shape() == Shape{C} && p->dtype() == x.dtype()),
                 "sync_batch_norm: affine parameter ", p->defined() ? shape_str(p->shape()) : "", " for ", C,
                 " channels");
  for (const Tensor* t : {&running_mean, &running_var})
    LOWBIT_CHECK(!t->defined() || (t->shape() == Shape{C} && t->dtype() == x.dtype() && t->is_contiguous()),
                 "sync_batch_norm: running statistic of shape ", t->defined() ? shape_str(t->shape()) : "", " for ", C,
                 " channels");
  const Tensor xc = rows_by_channels(x.data());
  std::vector<double> mean(static_cast<size_t>(C)), m2(static_cast<size_t>(C));
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "sync_batch_norm",
                        [&] { kernels::batchnorm_stats(rows, C, xc.data<scalar_t>(), mean.data(), m2.data()); });
  double total = double(rows);
  if (dist::size() > 1) {  // the global batch's statistics (Chan's merge written as sums)
    std::vector<double> red(static_cast<size_t>(2 * C + 1));
    for (int64_t c = 0; c < C; ++c) {
      red[size_t(c)] = double(rows) * mean[size_t(c)];
      red[size_t(C + c)] = m2[size_t(c)] + double(rows) * mean[size_t(c)] * mean[size_t(c)];
    }
    red[size_t(2 * C)] = double(rows);
    dist::allreduce_sum(red.data(), int64_t(red.size()));
    total = red[size_t(2 * C)];
    for (int64_t c = 0; c < C; ++c) {
      mean[size_t(c)] = red[size_t(c)] / total;
      m2[size_t(c)] = std::max(0.0, red[size_t(C + c)] - total * mean[size_t(c)] * mean[size_t(c)]);
    }
  }
  LOWBIT_CHECK(total > 1, "sync_batch_norm: training needs more than one value per channel, got ", total);
  Tensor save_mean = Tensor::empty({C}, x.dtype()), save_invstd = Tensor::empty({C}, x.dtype());
  Tensor var = Tensor::empty({C}, x.dtype()), var_unbiased = Tensor::empty({C}, x.dtype());
  Tensor y = empty_rows_by_channels(x.shape(), x.dtype());
  const Tensor gm = gamma.defined() ? gamma.data().contiguous() : Tensor();
  const Tensor bt = beta.defined() ? beta.data().contiguous() : Tensor();
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "sync_batch_norm", [&] {
    for (int64_t c = 0; c < C; ++c) {
      const double v = m2[size_t(c)] / total;
      save_mean.data<scalar_t>()[c] = scalar_t(mean[size_t(c)]);
      save_invstd.data<scalar_t>()[c] = scalar_t(1.0 / std::sqrt(v + eps));
      var.data<scalar_t>()[c] = scalar_t(v);
      var_unbiased.data<scalar_t>()[c] = scalar_t(m2[size_t(c)] / (total - 1));
    }
    kernels::batchnorm_forward_eval(rows, C, xc.data<scalar_t>(), save_mean.data<scalar_t>(), var.data<scalar_t>(),
                                    gm.defined() ? gm.data<scalar_t>() : nullptr,
                                    bt.defined() ? bt.data<scalar_t>() : nullptr, eps, y.data<scalar_t>());
    if (running_mean.defined() && running_var.defined())
      kernels::batchnorm_update_running_stats(C, momentum, save_mean.data<scalar_t>(), var_unbiased.data<scalar_t>(),
                                              running_mean.data<scalar_t>(), running_var.data<scalar_t>());
  });
  return make_result(
      y, "sync_batch_norm", {x, gamma, beta},
      [x, gamma, beta, save_mean, save_invstd, total, eps, rows, C](const Variable& g, const Variable&) {
        if (GradMode::enabled()) {  // recorded: the composed op's graph, differentiated
          std::vector<Variable> wrt;
          for (const Variable* v : {&x, &gamma, &beta})
            if (v->defined() && v->requires_grad()) wrt.push_back(*v);
          const Variable yc = sync_batch_norm_composed(x, gamma, beta, eps, total);
          const std::vector<Variable> d = grad({yc}, wrt, {g}, /*retain_graph=*/true, /*create_graph=*/true, true);
          std::vector<Variable> out(3);
          size_t k = 0;
          for (int i = 0; i < 3; ++i) {
            const Variable* v = i == 0 ? &x : i == 1 ? &gamma : &beta;
            if (v->defined() && v->requires_grad()) out[size_t(i)] = d[k++];
          }
          return out;
        }
        const Tensor xr = rows_by_channels(x.data()), dy = rows_by_channels(g.data());
        std::vector<double> sums(static_cast<size_t>(2 * C));
        Tensor dx, dgamma, dbeta;
        LOWBIT_DISPATCH_FLOAT(x.dtype(), "sync_batch_norm_backward", [&] {
          kernels::batchnorm_backward_sums(rows, C, xr.data<scalar_t>(), dy.data<scalar_t>(),
                                           save_mean.data<scalar_t>(), sums.data(), sums.data() + C);
          if (gamma.defined() && gamma.requires_grad()) {  // this rank's own share
            dgamma = Tensor::empty({C}, x.dtype());
            for (int64_t c = 0; c < C; ++c)
              dgamma.data<scalar_t>()[c] = scalar_t(sums[size_t(C + c)] * double(save_invstd.data<scalar_t>()[c]));
          }
          if (beta.defined() && beta.requires_grad()) {
            dbeta = Tensor::empty({C}, x.dtype());
            for (int64_t c = 0; c < C; ++c) dbeta.data<scalar_t>()[c] = scalar_t(sums[size_t(c)]);
          }
          if (!x.requires_grad()) return;
          dist::allreduce_sum(sums.data(), int64_t(sums.size()));  // the global batch's sums
          dx = empty_rows_by_channels(x.shape(), x.dtype());
          kernels::batchnorm_backward_dx(rows, C, xr.data<scalar_t>(), dy.data<scalar_t>(), save_mean.data<scalar_t>(),
                                         save_invstd.data<scalar_t>(),
                                         gamma.defined() ? gamma.data().contiguous().data<scalar_t>() : nullptr,
                                         sums.data(), sums.data() + C, total, dx.data<scalar_t>());
        });
        auto wrap = [](const Tensor& t) { return t.defined() ? Variable(t) : Variable(); };
        return std::vector<Variable>{wrap(dx), wrap(dgamma), wrap(dbeta)};
      });
}

Variable batch_norm_relu(const Variable& x, const Variable& gamma, const Variable& beta, Tensor running_mean,
                         Tensor running_var, bool training, double momentum, double eps) {
  KinkTape* tape = KinkTape::current();
  if (tape && tape->mode() == KinkTape::Mode::replay) {  // the recorded ReLU branch (autograd/kink_tape.h)
    const Variable y = batch_norm_impl(x, gamma, beta, std::move(running_mean), std::move(running_var), training,
                                       momentum, eps, false);
    return mul_mask(y, math::gt(tape->next("batch_norm_relu", y.shape()), 0.0));
  }
  Variable y =
      batch_norm_impl(x, gamma, beta, std::move(running_mean), std::move(running_var), training, momentum, eps, true);
  if (tape) tape->push("batch_norm_relu", y.data());
  return y;
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
