#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/ops.h"
#include "core/math.h"
#include "core/random.h"

namespace lowbit {
namespace {

double dot(const Tensor& a, const Tensor& b) { return math::sum(math::mul(a, b)).item(); }

}  // namespace

GradcheckResult gradcheck(const VariableFn& f, const std::vector<Variable>& inputs, const GradcheckOptions& opt) {
  std::vector<Variable> diff;
  std::vector<size_t> diff_index;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Variable& x = inputs[i];
    LOWBIT_CHECK(x.dtype() == DType::f64, "gradcheck: input ", i, " is ", dtype_name(x.dtype()),
                 "; gradient checks run in float64");
    if (!x.requires_grad()) continue;
    LOWBIT_CHECK(x.is_leaf() && x.data().is_contiguous(), "gradcheck: input ", i, " must be a contiguous leaf");
    diff.push_back(x);
    diff_index.push_back(i);
  }
  LOWBIT_CHECK(!diff.empty(), "gradcheck: no input requires grad");

  const Variable out = f(inputs);
  Generator gen(opt.seed);
  const Tensor v = Tensor::randn(out.shape(), gen, DType::f64);
  const std::vector<Variable> analytic =
      grad({out}, diff, {Variable(v)}, /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/true);

  GradcheckResult res;
  for (size_t k = 0; k < diff.size(); ++k) {
    Tensor x = diff[k].data();
    double* px = x.data<double>();
    const Tensor a = analytic[k].defined() ? analytic[k].data().contiguous() : Tensor::zeros(x.shape(), DType::f64);
    const double* pa = a.data<double>();
    for (int64_t j = 0; j < x.numel(); ++j) {
      const double orig = px[j];
      px[j] = orig + opt.eps;
      const double up = dot(f(inputs).data(), v);
      px[j] = orig - opt.eps;
      const double down = dot(f(inputs).data(), v);
      px[j] = orig;
      const double numeric = (up - down) / (2 * opt.eps);
      const double err = std::abs(pa[j] - numeric);
      res.max_abs_error = std::max(res.max_abs_error, std::isnan(err) ? INFINITY : err);
      if (!(err <= opt.atol + opt.rtol * std::abs(numeric)) && res.ok) {
        res.ok = false;
        std::ostringstream os;
        os << "input " << diff_index[k] << " " << shape_str(x.shape()) << ", element " << j << ": analytic " << pa[j]
           << " vs numeric " << numeric;
        res.message = os.str();
      }
    }
  }
  return res;
}

GradcheckResult gradgradcheck(const VariableFn& f, const std::vector<Variable>& inputs, const GradcheckOptions& opt) {
  const Variable out0 = [&] {
    NoGradGuard ng;
    return f(inputs);
  }();
  Generator gen(opt.seed + 1);
  // The output direction v becomes an input of the checked function, so linearity in v is tested too.
  Variable v(Tensor::randn(out0.shape(), gen, DType::f64), true);
  std::vector<Tensor> w;
  for (const Variable& x : inputs) w.push_back(Tensor::randn(x.shape(), gen, DType::f64));

  const size_t n = inputs.size();
  VariableFn first_order = [&](const std::vector<Variable>& xs) {
    const std::vector<Variable> ins(xs.begin(), xs.begin() + static_cast<int64_t>(n));
    const Variable out = f(ins);
    std::vector<Variable> diff;
    std::vector<size_t> idx;
    for (size_t i = 0; i < n; ++i)
      if (ins[i].requires_grad()) diff.push_back(ins[i]), idx.push_back(i);
    const auto gs = grad({out}, diff, {xs[n]}, true, true, true);
    Variable total;
    for (size_t k = 0; k < gs.size(); ++k) {
      if (!gs[k].defined()) continue;
      const Variable term = sum(mul(gs[k], Variable(w[idx[k]])));
      total = total.defined() ? add(total, term) : term;
    }
    if (!total.defined()) total = mul(sum(xs[n]), 0.0);
    return total;
  };
  std::vector<Variable> all = inputs;
  all.push_back(v);
  return gradcheck(first_order, all, opt);
}

}  // namespace lowbit
