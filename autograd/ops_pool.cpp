// Pooling. All pooling maps are linear in their input once the max-pool argmax is fixed, so each
// op's backward is its adjoint, recorded as an op whose own backward is the original map.
#include "autograd/kink_tape.h"
#include "autograd/ops.h"
#include "autograd/ops_nn.h"
#include "core/kernels/pool.h"
#include "core/parallel.h"

namespace lowbit {
namespace {

kernels::Pool2dGeometry geometry(const Shape& x, const Pool2dOptions& o, const char* op) {
  LOWBIT_CHECK(x.size() == 4, op, ": expected input [N, C, H, W], got ", shape_str(x));
  kernels::Pool2dGeometry g;
  g.N = x[0], g.C = x[1], g.H = x[2], g.W = x[3];
  g.R = o.kernel[0], g.S = o.kernel[1];
  g.stride_h = o.stride[0] == 0 ? g.R : o.stride[0];
  g.stride_w = o.stride[1] == 0 ? g.S : o.stride[1];
  g.pad_h = o.padding[0], g.pad_w = o.padding[1];
  g.ceil_mode = o.ceil_mode;
  LOWBIT_CHECK(g.R >= 1 && g.S >= 1 && g.stride_h >= 1 && g.stride_w >= 1, op, ": kernel and stride must be >= 1");
  LOWBIT_CHECK(g.pad_h <= g.R / 2 && g.pad_w <= g.S / 2 && g.pad_h >= 0 && g.pad_w >= 0, op, ": padding ", g.pad_h, "x",
               g.pad_w, " must be at most half the kernel ", g.R, "x", g.S);
  LOWBIT_CHECK(g.P() >= 1 && g.Q() >= 1, op, ": input ", shape_str(x), " is smaller than the window ", g.R, "x", g.S);
  return g;
}

Tensor channels_last(const Tensor& t) { return t.contiguous(MemoryFormat::channels_last); }

Variable max_pool_scatter(const Variable& gy, const Tensor& argmax, const kernels::Pool2dGeometry& g);

// y[n,c,p,q] = x[n,c,argmax]: the forward of max pooling once the winners are known.
Variable max_pool_gather(const Variable& x, const Tensor& argmax, const kernels::Pool2dGeometry& g) {
  const Tensor xc = channels_last(x.data());
  Tensor y = Tensor::empty({g.N, g.C, g.P(), g.Q()}, xc.dtype(), MemoryFormat::channels_last);
  const int32_t* idx = argmax.data<int32_t>();
  const int64_t PQ = g.P() * g.Q(), HW = g.H * g.W, C = g.C;
  LOWBIT_DISPATCH_FLOAT(xc.dtype(), "max_pool2d", [&] {
    const scalar_t* px = xc.data<scalar_t>();
    scalar_t* py = y.data<scalar_t>();
    parallel_for(0, g.N * PQ, 256, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const int64_t n = r / PQ;
        for (int64_t c = 0; c < C; ++c) py[r * C + c] = px[(n * HW + idx[r * C + c]) * C + c];
      }
    });
  });
  return make_result(y, "max_pool2d_gather", {x}, [argmax, g](const Variable& gg, const Variable&) {
    return std::vector<Variable>{max_pool_scatter(gg, argmax, g)};
  });
}

// dx = sum of dy routed to the argmax positions (the adjoint of max_pool_gather).
Variable max_pool_scatter(const Variable& gy, const Tensor& argmax, const kernels::Pool2dGeometry& g) {
  const Tensor dy = channels_last(gy.data());
  Tensor dx = Tensor::empty({g.N, g.C, g.H, g.W}, dy.dtype(), MemoryFormat::channels_last);
  LOWBIT_DISPATCH_FLOAT(dy.dtype(), "max_pool2d_backward", [&] {
    kernels::max_pool2d_backward(g, dy.data<scalar_t>(), argmax.data<int32_t>(), dx.data<scalar_t>());
  });
  return make_result(dx, "max_pool2d_scatter", {gy}, [argmax, g](const Variable& gg, const Variable&) {
    return std::vector<Variable>{max_pool_gather(gg, argmax, g)};
  });
}

Variable avg_pool_adjoint(const Variable& gy, const kernels::Pool2dGeometry& g, bool count_include_pad);

Variable avg_pool_forward(const Variable& x, const kernels::Pool2dGeometry& g, bool count_include_pad) {
  const Tensor xc = channels_last(x.data());
  Tensor y = Tensor::empty({g.N, g.C, g.P(), g.Q()}, xc.dtype(), MemoryFormat::channels_last);
  LOWBIT_DISPATCH_FLOAT(xc.dtype(), "avg_pool2d", [&] {
    kernels::avg_pool2d_forward(g, count_include_pad, xc.data<scalar_t>(), y.data<scalar_t>());
  });
  return make_result(y, "avg_pool2d", {x}, [g, count_include_pad](const Variable& gg, const Variable&) {
    return std::vector<Variable>{avg_pool_adjoint(gg, g, count_include_pad)};
  });
}

Variable avg_pool_adjoint(const Variable& gy, const kernels::Pool2dGeometry& g, bool count_include_pad) {
  const Tensor dy = channels_last(gy.data());
  Tensor dx = Tensor::empty({g.N, g.C, g.H, g.W}, dy.dtype(), MemoryFormat::channels_last);
  LOWBIT_DISPATCH_FLOAT(dy.dtype(), "avg_pool2d_backward", [&] {
    kernels::avg_pool2d_backward(g, count_include_pad, dy.data<scalar_t>(), dx.data<scalar_t>());
  });
  return make_result(dx, "avg_pool2d_backward", {gy}, [g, count_include_pad](const Variable& gg, const Variable&) {
    return std::vector<Variable>{avg_pool_forward(gg, g, count_include_pad)};
  });
}

Variable global_pool_adjoint(const Variable& gy, const Shape& x_shape);

Variable global_pool_forward(const Variable& x) {
  const Shape s = x.shape();
  const Tensor xc = channels_last(x.data());
  Tensor y = Tensor::empty({s[0], s[1]}, xc.dtype());
  LOWBIT_DISPATCH_FLOAT(xc.dtype(), "global_avg_pool2d", [&] {
    kernels::global_avg_pool_forward(s[0], s[2], s[3], s[1], xc.data<scalar_t>(), y.data<scalar_t>());
  });
  return make_result(y, "global_avg_pool2d", {x}, [s](const Variable& gg, const Variable&) {
    return std::vector<Variable>{global_pool_adjoint(gg, s)};
  });
}

Variable global_pool_adjoint(const Variable& gy, const Shape& s) {
  const Tensor dy = gy.data().contiguous();
  Tensor dx = Tensor::empty(s, dy.dtype(), MemoryFormat::channels_last);
  LOWBIT_DISPATCH_FLOAT(dy.dtype(), "global_avg_pool2d_backward", [&] {
    kernels::global_avg_pool_backward(s[0], s[2], s[3], s[1], dy.data<scalar_t>(), dx.data<scalar_t>());
  });
  return make_result(dx, "global_avg_pool2d_backward", {gy}, [](const Variable& gg, const Variable&) {
    return std::vector<Variable>{global_pool_forward(gg)};
  });
}

}  // namespace

Variable max_pool2d(const Variable& x, const Pool2dOptions& opt) {
  const auto g = geometry(x.shape(), opt, "max_pool2d");
  KinkTape* tape = KinkTape::current();  // a replayed pass: the recorded winners (autograd/kink_tape.h)
  if (tape && tape->mode() == KinkTape::Mode::replay)
    return max_pool_gather(x, tape->next("max_pool2d", {g.N, g.P(), g.Q(), g.C}), g);
  const Tensor xc = channels_last(x.data());
  Tensor y = Tensor::empty({g.N, g.C, g.P(), g.Q()}, xc.dtype(), MemoryFormat::channels_last);
  Tensor argmax = Tensor::empty({g.N, g.P(), g.Q(), g.C}, DType::i32);
  LOWBIT_DISPATCH_FLOAT(xc.dtype(), "max_pool2d", [&] {
    kernels::max_pool2d_forward(g, xc.data<scalar_t>(), y.data<scalar_t>(), argmax.data<int32_t>());
  });
  if (tape) tape->push("max_pool2d", argmax);
  return make_result(y, "max_pool2d", {x}, [argmax, g](const Variable& gg, const Variable&) {
    return std::vector<Variable>{max_pool_scatter(gg, argmax, g)};
  });
}

Variable avg_pool2d(const Variable& x, const Pool2dOptions& opt) {
  return avg_pool_forward(x, geometry(x.shape(), opt, "avg_pool2d"), opt.count_include_pad);
}

Variable global_avg_pool2d(const Variable& x) {
  LOWBIT_CHECK(x.dim() == 4, "global_avg_pool2d: expected input [N, C, H, W], got ", shape_str(x.shape()));
  LOWBIT_CHECK(is_floating(x.dtype()), "global_avg_pool2d: expected a floating tensor");
  return global_pool_forward(x);
}

}  // namespace lowbit
