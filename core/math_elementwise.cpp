// Elementwise math: unary, binary (broadcasting), ternary (where), scalar forms, in-place updates.
// One strided loop (core/strided.h) serves all; inner runs with unit or zero strides are written
// as plain loops the compiler vectorises.
#include <cmath>

#include "core/math.h"
#include "core/strided.h"

namespace lowbit::math {
namespace {

void check_float_pair(const Tensor& a, const Tensor& b, const char* op) {
  LOWBIT_CHECK(a.defined() && b.defined(), op, ": undefined tensor");
  LOWBIT_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch, ", dtype_name(a.dtype()), " ", shape_str(a.shape()),
               " vs ", dtype_name(b.dtype()), " ", shape_str(b.shape()));
  LOWBIT_CHECK(is_floating(a.dtype()), op, ": expected floating tensors, got ", dtype_name(a.dtype()));
}

// Output for operands of `shape`: keeps a shared dense layout, else row-major.
Tensor make_output(const Shape& shape, DType dtype, std::initializer_list<const Tensor*> operands) {
  const Tensor* first = *operands.begin();
  bool same_layout = first->shape() == shape && first->is_dense();
  for (const Tensor* t : operands) same_layout = same_layout && t->shape() == shape && t->strides() == first->strides();
  return same_layout ? Tensor::empty_like(*first, dtype) : Tensor::empty(shape, dtype);
}

template <class F>
Tensor unary(const Tensor& a, const char* op, F f) {
  LOWBIT_CHECK(a.defined(), op, ": undefined tensor");
  Tensor out = make_output(a.shape(), a.dtype(), {&a});
  auto plan = detail::make_plan<2>(a.shape(), {out.strides(), a.strides()});
  LOWBIT_DISPATCH_FLOAT(a.dtype(), op, [&] {
    scalar_t* po = out.data<scalar_t>();
    const scalar_t* pa = a.data<scalar_t>();
    detail::plan_for_each(plan, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
      scalar_t* o = po + off[0];
      const scalar_t* x = pa + off[1];
      if (st[0] == 1 && st[1] == 1) {
        for (int64_t i = 0; i < n; ++i) o[i] = f(x[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(x[i * st[1]]);
      }
    });
  });
  return out;
}

template <class F>
Tensor binary(const Tensor& a, const Tensor& b, const char* op, F f) {
  check_float_pair(a, b, op);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor out = make_output(shape, a.dtype(), {&a, &b});
  auto plan = detail::make_plan<3>(
      shape, {out.strides(), detail::broadcast_strides(a, shape), detail::broadcast_strides(b, shape)});
  LOWBIT_DISPATCH_FLOAT(a.dtype(), op, [&] {
    scalar_t* po = out.data<scalar_t>();
    const scalar_t* pa = a.data<scalar_t>();
    const scalar_t* pb = b.data<scalar_t>();
    detail::plan_for_each(plan, [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) {
      scalar_t* o = po + off[0];
      const scalar_t* x = pa + off[1];
      const scalar_t* y = pb + off[2];
      if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
        for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
      } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
        const scalar_t yv = *y;
        for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], yv);
      } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
        const scalar_t xv = *x;
        for (int64_t i = 0; i < n; ++i) o[i] = f(xv, y[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(x[i * st[1]], y[i * st[2]]);
      }
    });
  });
  return out;
}

template <class T>
T sigmoid_scalar(T x) {
  // Stable for large |x|.
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

template <class T>
T sign_scalar(T x) {
  return static_cast<T>((x > T(0)) - (x < T(0)));
}

}  // namespace

// ---- binary ----
Tensor add(const Tensor& a, const Tensor& b) {
  return binary(a, b, "add", [](auto x, auto y) { return x + y; });
}
Tensor sub(const Tensor& a, const Tensor& b) {
  return binary(a, b, "sub", [](auto x, auto y) { return x - y; });
}
Tensor mul(const Tensor& a, const Tensor& b) {
  return binary(a, b, "mul", [](auto x, auto y) { return x * y; });
}
Tensor div(const Tensor& a, const Tensor& b) {
  return binary(a, b, "div", [](auto x, auto y) { return x / y; });
}
Tensor pow(const Tensor& a, const Tensor& b) {
  return binary(a, b, "pow", [](auto x, auto y) { return std::pow(x, y); });
}
// NaN propagates as in torch.maximum/minimum.
Tensor maximum(const Tensor& a, const Tensor& b) {
  return binary(a, b, "maximum", [](auto x, auto y) { return (x != x || x > y) ? x : y; });
}
Tensor minimum(const Tensor& a, const Tensor& b) {
  return binary(a, b, "minimum", [](auto x, auto y) { return (x != x || x < y) ? x : y; });
}
Tensor gt(const Tensor& a, const Tensor& b) {
  return binary(a, b, "gt", [](auto x, auto y) { return decltype(x)(x > y); });
}
Tensor ge(const Tensor& a, const Tensor& b) {
  return binary(a, b, "ge", [](auto x, auto y) { return decltype(x)(x >= y); });
}
Tensor lt(const Tensor& a, const Tensor& b) {
  return binary(a, b, "lt", [](auto x, auto y) { return decltype(x)(x < y); });
}
Tensor le(const Tensor& a, const Tensor& b) {
  return binary(a, b, "le", [](auto x, auto y) { return decltype(x)(x <= y); });
}
Tensor eq(const Tensor& a, const Tensor& b) {
  return binary(a, b, "eq", [](auto x, auto y) { return decltype(x)(x == y); });
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_float_pair(a, b, "where");
  LOWBIT_CHECK(cond.defined(), "where: undefined condition");
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  // The condition is read as float/double 0 or non-zero: convert once.
  const Tensor c = cond.dtype() == a.dtype() ? cond : cond.to(a.dtype());
  Tensor out = Tensor::empty(shape, a.dtype());
  auto plan = detail::make_plan<4>(shape, {out.strides(), detail::broadcast_strides(c, shape),
                                           detail::broadcast_strides(a, shape), detail::broadcast_strides(b, shape)});
  LOWBIT_DISPATCH_FLOAT(a.dtype(), "where", [&] {
    scalar_t* po = out.data<scalar_t>();
    const scalar_t* pc = c.data<scalar_t>();
    const scalar_t* pa = a.data<scalar_t>();
    const scalar_t* pb = b.data<scalar_t>();
    detail::plan_for_each(plan, [&](const std::array<int64_t, 4>& off, int64_t n, const std::array<int64_t, 4>& st) {
      for (int64_t i = 0; i < n; ++i)
        po[off[0] + i * st[0]] =
            pc[off[1] + i * st[1]] != scalar_t(0) ? pa[off[2] + i * st[2]] : pb[off[3] + i * st[3]];
    });
  });
  return out;
}

// ---- scalar forms ----
Tensor add(const Tensor& a, double s) {
  return unary(a, "add", [s](auto x) { return x + decltype(x)(s); });
}
Tensor mul(const Tensor& a, double s) {
  return unary(a, "mul", [s](auto x) { return x * decltype(x)(s); });
}
Tensor rsub(const Tensor& a, double s) {
  return unary(a, "rsub", [s](auto x) { return decltype(x)(s) - x; });
}
Tensor rdiv(const Tensor& a, double s) {
  return unary(a, "rdiv", [s](auto x) { return decltype(x)(s) / x; });
}
Tensor pow(const Tensor& a, double e) {
  if (e == 2) return unary(a, "pow", [](auto x) { return x * x; });
  if (e == 1) return unary(a, "pow", [](auto x) { return x; });
  if (e == 0.5) return unary(a, "pow", [](auto x) { return std::sqrt(x); });
  return unary(a, "pow", [e](auto x) { return std::pow(x, decltype(x)(e)); });
}
Tensor gt(const Tensor& a, double s) {
  return unary(a, "gt", [s](auto x) { return decltype(x)(x > decltype(x)(s)); });
}
Tensor lt(const Tensor& a, double s) {
  return unary(a, "lt", [s](auto x) { return decltype(x)(x < decltype(x)(s)); });
}
Tensor ge(const Tensor& a, double s) {
  return unary(a, "ge", [s](auto x) { return decltype(x)(x >= decltype(x)(s)); });
}
Tensor le(const Tensor& a, double s) {
  return unary(a, "le", [s](auto x) { return decltype(x)(x <= decltype(x)(s)); });
}
Tensor clamp(const Tensor& a, double lo, double hi) {
  LOWBIT_CHECK(lo <= hi, "clamp: lower bound ", lo, " exceeds upper bound ", hi);
  return unary(a, "clamp", [lo, hi](auto x) {
    using T = decltype(x);
    return x < T(lo) ? T(lo) : (x > T(hi) ? T(hi) : x);
  });
}

// ---- unary ----
Tensor neg(const Tensor& a) {
  return unary(a, "neg", [](auto x) { return -x; });
}
Tensor exp(const Tensor& a) {
  return unary(a, "exp", [](auto x) { return std::exp(x); });
}
Tensor log(const Tensor& a) {
  return unary(a, "log", [](auto x) { return std::log(x); });
}
Tensor sqrt(const Tensor& a) {
  return unary(a, "sqrt", [](auto x) { return std::sqrt(x); });
}
Tensor abs(const Tensor& a) {
  return unary(a, "abs", [](auto x) { return std::abs(x); });
}
Tensor sign(const Tensor& a) {
  return unary(a, "sign", [](auto x) { return sign_scalar(x); });
}
Tensor sin(const Tensor& a) {
  return unary(a, "sin", [](auto x) { return std::sin(x); });
}
Tensor cos(const Tensor& a) {
  return unary(a, "cos", [](auto x) { return std::cos(x); });
}
Tensor tanh(const Tensor& a) {
  return unary(a, "tanh", [](auto x) { return std::tanh(x); });
}
Tensor sigmoid(const Tensor& a) {
  return unary(a, "sigmoid", [](auto x) { return sigmoid_scalar(x); });
}
Tensor relu(const Tensor& a) {
  return unary(a, "relu", [](auto x) { return x > decltype(x)(0) ? x : decltype(x)(0); });
}
Tensor add_relu(const Tensor& a, const Tensor& b) {
  return binary(a, b, "add_relu", [](auto x, auto y) {
    const auto z = x + y;
    return z > decltype(z)(0) ? z : decltype(z)(0);
  });
}
Tensor floor(const Tensor& a) {
  return unary(a, "floor", [](auto x) { return std::floor(x); });
}
Tensor round(const Tensor& a) {
  return unary(a, "round", [](auto x) { return std::nearbyint(x); });
}

// ---- in place ----
void add_(Tensor& dst, const Tensor& src, double alpha) {
  check_float_pair(dst, src, "add_");
  LOWBIT_CHECK(broadcast_shapes(dst.shape(), src.shape(), "add_") == dst.shape(), "add_: source of shape ",
               shape_str(src.shape()), " does not broadcast to destination shape ", shape_str(dst.shape()));
  auto plan = detail::make_plan<2>(dst.shape(), {dst.strides(), detail::broadcast_strides(src, dst.shape())});
  LOWBIT_DISPATCH_FLOAT(dst.dtype(), "add_", [&] {
    scalar_t* pd = dst.data<scalar_t>();
    const scalar_t* ps = src.data<scalar_t>();
    const scalar_t al = static_cast<scalar_t>(alpha);
    detail::plan_for_each(plan, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
      scalar_t* d = pd + off[0];
      const scalar_t* s = ps + off[1];
      if (st[0] == 1 && st[1] == 1) {
        for (int64_t i = 0; i < n; ++i) d[i] += al * s[i];
      } else {
        for (int64_t i = 0; i < n; ++i) d[i * st[0]] += al * s[i * st[1]];
      }
    });
  });
}

void mul_(Tensor& dst, double s) {
  LOWBIT_CHECK(dst.defined() && is_floating(dst.dtype()), "mul_: expected a floating tensor");
  auto plan = detail::make_plan<1>(dst.shape(), {dst.strides()});
  LOWBIT_DISPATCH_FLOAT(dst.dtype(), "mul_", [&] {
    scalar_t* pd = dst.data<scalar_t>();
    const scalar_t sv = static_cast<scalar_t>(s);
    detail::plan_for_each(plan, [&](const std::array<int64_t, 1>& off, int64_t n, const std::array<int64_t, 1>& st) {
      for (int64_t i = 0; i < n; ++i) pd[off[0] + i * st[0]] *= sv;
    });
  });
}

}  // namespace lowbit::math
