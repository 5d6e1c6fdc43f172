// Elementwise ops: forward through core/math, backward written in Variable ops (so it can be
// recorded for double backward). g = dL/d(out).
#include "autograd/kink_tape.h"
#include "autograd/ops.h"
#include "core/math.h"
#include "core/strided.h"

namespace lowbit {
namespace {
Variable constant(Tensor t) { return Variable(std::move(t), false); }

// g * T(keep(x)) in one pass: the same values as mul(g, <0/1 mask of x>) without the mask tensor.
// Used when the backward pass is not being recorded; layout as math::mul would give, except that a
// gradient that is not dense (a broadcast, e.g. the backward of a sum) takes the layout of a dense x
// (math::mul would give row-major), so a channels-last input gets a channels-last gradient.
template <class Keep>
Variable masked_grad(const Variable& g, const Variable& x, const char* op, Keep keep) {
  const Tensor& gt = g.data();
  const Tensor& xt = x.data();
  LOWBIT_CHECK(gt.shape() == xt.shape() && gt.dtype() == xt.dtype(), op, ": gradient ", shape_str(gt.shape()),
               " for input ", shape_str(xt.shape()));
  const bool same_layout = gt.is_dense() && gt.strides() == xt.strides();
  Tensor out = same_layout                       ? Tensor::empty_like(gt)
               : !gt.is_dense() && xt.is_dense() ? Tensor::empty_like(xt)
                                                 : Tensor::empty(gt.shape(), gt.dtype());
  auto plan = detail::make_plan<3>(gt.shape(), {out.strides(), gt.strides(), xt.strides()});
  LOWBIT_DISPATCH_FLOAT(gt.dtype(), op, [&] {
    scalar_t* po = out.data<scalar_t>();
    const scalar_t* pg = gt.data<scalar_t>();
    const scalar_t* px = xt.data<scalar_t>();
    detail::plan_for_each(plan, [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) {
      scalar_t* o = po + off[0];
      const scalar_t* a = pg + off[1];
      const scalar_t* b = px + off[2];
      if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
        for (int64_t i = 0; i < n; ++i) o[i] = a[i] * scalar_t(keep(b[i]));
      } else {
        for (int64_t i = 0; i < n; ++i) o[i * st[0]] = a[i * st[1]] * scalar_t(keep(b[i * st[2]]));
      }
    });
  });
  return Variable(std::move(out));
}
// g * [y > 0] for a constant y (a ReLU's input or output): the recorded form of the ReLU's gradient, one
// pass each way and no mask tensor. Linear in g, so its backward is the same masking (recorded again
// when that pass is: any order). Same values as mul_mask(g, math::gt(y, 0)).
Variable positive_masked(const Variable& g, const Tensor& y) {
  const Variable yv(y);
  Tensor out = masked_grad(g, yv, "relu_mask", [](auto v) { return v > decltype(v)(0); }).data();
  return make_result(std::move(out), "relu_mask", {g}, [y](const Variable& gg, const Variable&) {
    return std::vector<Variable>{positive_masked(gg, y)};
  });
}

}  // namespace

// ---- binary ----
Variable add(const Variable& a, const Variable& b) {
  return make_result(math::add(a.data(), b.data()), "add", {a, b}, [a, b](const Variable& g, const Variable&) {
    return std::vector<Variable>{sum_to(g, a.shape()), sum_to(g, b.shape())};
  });
}

Variable sub(const Variable& a, const Variable& b) {
  return make_result(math::sub(a.data(), b.data()), "sub", {a, b}, [a, b](const Variable& g, const Variable&) {
    return std::vector<Variable>{sum_to(g, a.shape()), sum_to(neg(g), b.shape())};
  });
}

Variable mul(const Variable& a, const Variable& b) {
  return make_result(math::mul(a.data(), b.data()), "mul", {a, b}, [a, b](const Variable& g, const Variable&) {
    return std::vector<Variable>{a.requires_grad() ? sum_to(mul(g, b), a.shape()) : Variable(),
                                 b.requires_grad() ? sum_to(mul(g, a), b.shape()) : Variable()};
  });
}

Variable div(const Variable& a, const Variable& b) {
  return make_result(math::div(a.data(), b.data()), "div", {a, b}, [a, b](const Variable& g, const Variable&) {
    // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
    return std::vector<Variable>{a.requires_grad() ? sum_to(div(g, b), a.shape()) : Variable(),
                                 b.requires_grad() ? sum_to(neg(div(mul(g, a), mul(b, b))), b.shape()) : Variable()};
  });
}

Variable pow(const Variable& a, const Variable& b) {
  return make_result(
      math::pow(a.data(), b.data()), "pow", {a, b},
      [a, b](const Variable& g, const Variable& out) {
        // d(a^b)/da = b a^(b-1), d(a^b)/db = a^b ln a
        return std::vector<Variable>{
            a.requires_grad() ? sum_to(mul(g, mul(b, pow(a, sub(b, constant(Tensor::ones({}, b.dtype())))))), a.shape())
                              : Variable(),
            b.requires_grad() ? sum_to(mul(g, mul(out, log(a))), b.shape()) : Variable()};
      },
      true);
}

Variable maximum(const Variable& a, const Variable& b) {
  return make_result(math::maximum(a.data(), b.data()), "maximum", {a, b}, [a, b](const Variable& g, const Variable&) {
    // Ties: half the gradient to each side.
    const Tensor half_tie = math::mul(math::eq(a.data(), b.data()), 0.5);
    const Tensor wa = math::add(math::gt(a.data(), b.data()), half_tie);
    const Tensor wb = math::add(math::lt(a.data(), b.data()), half_tie);
    return std::vector<Variable>{sum_to(mul(g, constant(wa)), a.shape()), sum_to(mul(g, constant(wb)), b.shape())};
  });
}

Variable minimum(const Variable& a, const Variable& b) {
  return make_result(math::minimum(a.data(), b.data()), "minimum", {a, b}, [a, b](const Variable& g, const Variable&) {
    const Tensor half_tie = math::mul(math::eq(a.data(), b.data()), 0.5);
    const Tensor wa = math::add(math::lt(a.data(), b.data()), half_tie);
    const Tensor wb = math::add(math::gt(a.data(), b.data()), half_tie);
    return std::vector<Variable>{sum_to(mul(g, constant(wa)), a.shape()), sum_to(mul(g, constant(wb)), b.shape())};
  });
}

Variable where(const Tensor& cond, const Variable& a, const Variable& b) {
  return make_result(
      math::where(cond, a.data(), b.data()), "where", {a, b}, [cond, a, b](const Variable& g, const Variable&) {
        const Variable zero = constant(Tensor::zeros({}, g.dtype()));
        return std::vector<Variable>{sum_to(where(cond, g, zero), a.shape()), sum_to(where(cond, zero, g), b.shape())};
      });
}

// ---- with a scalar ----
Variable add(const Variable& a, double s) {
  return make_result(math::add(a.data(), s), "add_scalar", {a},
                     [](const Variable& g, const Variable&) { return std::vector<Variable>{g}; });
}

Variable mul(const Variable& a, double s) {
  return make_result(math::mul(a.data(), s), "mul_scalar", {a},
                     [s](const Variable& g, const Variable&) { return std::vector<Variable>{mul(g, s)}; });
}

Variable rsub(const Variable& a, double s) {
  return make_result(math::rsub(a.data(), s), "rsub_scalar", {a},
                     [](const Variable& g, const Variable&) { return std::vector<Variable>{neg(g)}; });
}

Variable rdiv(const Variable& a, double s) {
  return make_result(math::rdiv(a.data(), s), "rdiv_scalar", {a}, [a, s](const Variable& g, const Variable&) {
    return std::vector<Variable>{neg(mul(div(g, mul(a, a)), s))};  // d(s/a)/da = -s/a^2
  });
}

Variable pow(const Variable& a, double e) {
  return make_result(math::pow(a.data(), e), "pow_scalar", {a}, [a, e](const Variable& g, const Variable&) {
    if (e == 0) return std::vector<Variable>{Variable()};
    if (e == 1) return std::vector<Variable>{g};
    if (e == 2) return std::vector<Variable>{mul(g, mul(a, 2.0))};
    return std::vector<Variable>{mul(g, mul(pow(a, e - 1), e))};
  });
}

// ---- unary ----
Variable neg(const Variable& a) {
  return make_result(math::neg(a.data()), "neg", {a},
                     [](const Variable& g, const Variable&) { return std::vector<Variable>{neg(g)}; });
}

Variable exp(const Variable& a) {
  return make_result(
      math::exp(a.data()), "exp", {a},
      [](const Variable& g, const Variable& out) { return std::vector<Variable>{mul(g, out)}; }, true);
}

Variable log(const Variable& a) {
  return make_result(math::log(a.data()), "log", {a},
                     [a](const Variable& g, const Variable&) { return std::vector<Variable>{div(g, a)}; });
}

Variable sqrt(const Variable& a) {
  return make_result(
      math::sqrt(a.data()), "sqrt", {a},
      [](const Variable& g, const Variable& out) { return std::vector<Variable>{div(g, mul(out, 2.0))}; }, true);
}

Variable abs(const Variable& a) {
  return make_result(math::abs(a.data()), "abs", {a}, [a](const Variable& g, const Variable&) {
    // Not recorded: g * sign(a) in one pass (the l1 norms of gradient-l1 training, quant/grad_l1.h).
    if (!GradMode::enabled())
      return std::vector<Variable>{masked_grad(g, a, "abs_backward", [](auto x) {
        using T = decltype(x);
        return T((x > T(0)) - (x < T(0)));
      })};
    return std::vector<Variable>{mul(g, constant(math::sign(a.data())))};
  });
}

Variable sign(const Variable& a) {
  return make_result(math::sign(a.data()), "sign", {a},
                     [](const Variable&, const Variable&) { return std::vector<Variable>{Variable()}; });
}

Variable sin(const Variable& a) {
  return make_result(math::sin(a.data()), "sin", {a},
                     [a](const Variable& g, const Variable&) { return std::vector<Variable>{mul(g, cos(a))}; });
}

Variable cos(const Variable& a) {
  return make_result(math::cos(a.data()), "cos", {a},
                     [a](const Variable& g, const Variable&) { return std::vector<Variable>{neg(mul(g, sin(a)))}; });
}

Variable tanh(const Variable& a) {
  return make_result(
      math::tanh(a.data()), "tanh", {a},
      [](const Variable& g, const Variable& out) {
        return std::vector<Variable>{mul(g, rsub(mul(out, out), 1.0))};  // 1 - tanh^2
      },
      true);
}

Variable sigmoid(const Variable& a) {
  return make_result(
      math::sigmoid(a.data()), "sigmoid", {a},
      [](const Variable& g, const Variable& out) {
        return std::vector<Variable>{mul(g, mul(out, rsub(out, 1.0)))};  // s (1 - s)
      },
      true);
}

Variable relu(const Variable& a) {
  if (KinkTape* tape = KinkTape::current()) {  // a replayed pass: the recorded branch (autograd/kink_tape.h)
    if (tape->mode() == KinkTape::Mode::replay) return mul_mask(a, math::gt(tape->next("relu", a.shape()), 0.0));
    tape->push("relu", a.data());
  }
  return make_result(math::relu(a.data()), "relu", {a}, [a](const Variable& g, const Variable&) {
    if (!GradMode::enabled())
      return std::vector<Variable>{masked_grad(g, a, "relu_backward", [](auto x) { return x > decltype(x)(0); })};
    return std::vector<Variable>{positive_masked(g, a.data())};
  });
}

Variable add_relu(const Variable& a, const Variable& b) {
  KinkTape* tape = KinkTape::current();
  if (tape && tape->mode() == KinkTape::Mode::replay) {
    const Variable sum = add(a, b);
    return mul_mask(sum, math::gt(tape->next("add_relu", sum.shape()), 0.0));
  }
  Variable out = make_result(
      math::add_relu(a.data(), b.data()), "add_relu", {a, b},
      [a, b](const Variable& g, const Variable& out) {
        // out > 0 exactly where a + b > 0.
        const Variable masked =
            GradMode::enabled() ? positive_masked(g, out.data())
                                : masked_grad(g, out, "add_relu_backward", [](auto y) { return y > decltype(y)(0); });
        return std::vector<Variable>{a.requires_grad() ? sum_to(masked, a.shape()) : Variable(),
                                     b.requires_grad() ? sum_to(masked, b.shape()) : Variable()};
      },
      true);
  if (tape) tape->push("add_relu", out.data());
  return out;
}

Variable clamp(const Variable& a, double lo, double hi) {
  if (KinkTape* tape = KinkTape::current()) {
    if (tape->mode() == KinkTape::Mode::replay) {  // a where the recorded input was inside, else its bound
      const Tensor& ref = tape->next("clamp", a.shape());
      const Tensor inside = math::mul(math::ge(ref, lo), math::le(ref, hi));
      const Tensor bound = math::clamp(ref, lo, hi);
      return add(mul_mask(a, inside), Variable(math::sub(bound, math::mul(bound, inside))));
    }
    tape->push("clamp", a.data());
  }
  return make_result(math::clamp(a.data(), lo, hi), "clamp", {a}, [a, lo, hi](const Variable& g, const Variable&) {
    if (!GradMode::enabled())
      return std::vector<Variable>{masked_grad(g, a, "clamp_backward", [lo, hi](auto x) {
        using T = decltype(x);
        return x >= T(lo) && x <= T(hi);
      })};
    const Tensor inside = math::mul(math::ge(a.data(), lo), math::le(a.data(), hi));
    return std::vector<Variable>{mul_mask(g, inside)};
  });
}

Variable mul_mask(const Variable& a, const Tensor& mask) {
  return make_result(math::mul(a.data(), mask), "mul_mask", {a},
                     [mask](const Variable& g, const Variable&) { return std::vector<Variable>{mul_mask(g, mask)}; });
}

// ---- operators ----
Variable operator+(const Variable& a, const Variable& b) { return add(a, b); }
Variable operator-(const Variable& a, const Variable& b) { return sub(a, b); }
Variable operator*(const Variable& a, const Variable& b) { return mul(a, b); }
Variable operator/(const Variable& a, const Variable& b) { return div(a, b); }
Variable operator-(const Variable& a) { return neg(a); }
Variable operator+(const Variable& a, double s) { return add(a, s); }
Variable operator+(double s, const Variable& a) { return add(a, s); }
Variable operator-(const Variable& a, double s) { return add(a, -s); }
Variable operator-(double s, const Variable& a) { return rsub(a, s); }
Variable operator*(const Variable& a, double s) { return mul(a, s); }
Variable operator*(double s, const Variable& a) { return mul(a, s); }
Variable operator/(const Variable& a, double s) { return mul(a, 1.0 / s); }
Variable operator/(double s, const Variable& a) { return rdiv(a, s); }

}  // namespace lowbit
