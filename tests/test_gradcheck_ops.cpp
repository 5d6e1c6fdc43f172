// Table-driven finite-difference checks of every differentiable op, in float64.
// Adding an op means adding one row: its name, input shapes, the domain its inputs are drawn
// from, the call, and whether second derivatives are checked too.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "core/math.h"
#include "core/random.h"

using namespace lowbit;

namespace {

enum class Domain { any, positive, away_from_zero };

struct OpCase {
  std::string name;
  std::vector<Shape> shapes;
  Domain domain;
  VariableFn fn;
  bool gradgrad;
};

std::vector<Variable> make_inputs(const OpCase& c, uint64_t seed) {
  Generator gen(seed);
  std::vector<Variable> xs;
  for (const Shape& s : c.shapes) {
    Tensor t = Tensor::randn(s, gen, DType::f64);
    if (c.domain == Domain::positive) t = math::add(math::abs(t), 0.5);
    // Keep inputs away from kinks (0 for relu/abs/sign/clamp at +-0.5 handled by the rows).
    if (c.domain == Domain::away_from_zero) t = math::add(t, math::mul(math::sign(t), 0.1));
    xs.emplace_back(t, true);
  }
  return xs;
}

Tensor labels(std::vector<int32_t> v) { return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}); }

const std::vector<OpCase>& op_table() {
  static const std::vector<OpCase> table = {
      // ---- elementwise, binary with broadcasting ----
      {"add", {{3, 4}, {4}}, Domain::any, [](auto& x) { return add(x[0], x[1]); }, true},
      {"sub", {{2, 3, 4}, {3, 1}}, Domain::any, [](auto& x) { return sub(x[0], x[1]); }, true},
      {"mul", {{3, 4}, {3, 4}}, Domain::any, [](auto& x) { return mul(x[0], x[1]); }, true},
      {"mul_broadcast", {{2, 3, 4}, {1, 4}}, Domain::any, [](auto& x) { return mul(x[0], x[1]); }, true},
      {"div", {{3, 4}, {3, 4}}, Domain::positive, [](auto& x) { return div(x[0], x[1]); }, true},
      {"pow", {{3, 4}, {3, 4}}, Domain::positive, [](auto& x) { return pow(x[0], x[1]); }, true},
      {"maximum", {{3, 4}, {3, 4}}, Domain::any, [](auto& x) { return maximum(x[0], x[1]); }, true},
      {"minimum", {{3, 4}, {4}}, Domain::any, [](auto& x) { return minimum(x[0], x[1]); }, true},
      {"where", {{3, 4}, {3, 4}}, Domain::any,
       [](auto& x) { return where(math::gt(x[0].data(), 0.0), x[0], x[1]); }, true},
      // ---- scalar forms ----
      {"add_scalar", {{5}}, Domain::any, [](auto& x) { return x[0] + 2.5; }, true},
      {"mul_scalar", {{5}}, Domain::any, [](auto& x) { return x[0] * -1.5; }, true},
      {"rsub_scalar", {{5}}, Domain::any, [](auto& x) { return 3.0 - x[0]; }, true},
      {"rdiv_scalar", {{5}}, Domain::positive, [](auto& x) { return 2.0 / x[0]; }, true},
      {"pow_scalar", {{5}}, Domain::positive, [](auto& x) { return pow(x[0], 2.7); }, true},
      {"pow_scalar_2", {{5}}, Domain::any, [](auto& x) { return pow(x[0], 2.0); }, true},
      // ---- unary ----
      {"neg", {{4}}, Domain::any, [](auto& x) { return neg(x[0]); }, true},
      {"exp", {{4, 3}}, Domain::any, [](auto& x) { return exp(x[0]); }, true},
      {"log", {{4, 3}}, Domain::positive, [](auto& x) { return log(x[0]); }, true},
      {"sqrt", {{4, 3}}, Domain::positive, [](auto& x) { return sqrt(x[0]); }, true},
      {"abs", {{4, 3}}, Domain::away_from_zero, [](auto& x) { return abs(x[0]); }, true},
      {"sign", {{4, 3}}, Domain::away_from_zero, [](auto& x) { return mul(sign(x[0]), x[0]); }, true},
      {"sin", {{4, 3}}, Domain::any, [](auto& x) { return sin(x[0]); }, true},
      {"cos", {{4, 3}}, Domain::any, [](auto& x) { return cos(x[0]); }, true},
      {"tanh", {{4, 3}}, Domain::any, [](auto& x) { return tanh(x[0]); }, true},
      {"sigmoid", {{4, 3}}, Domain::any, [](auto& x) { return sigmoid(x[0]); }, true},
      {"relu", {{4, 3}}, Domain::away_from_zero, [](auto& x) { return relu(x[0]); }, true},
      {"clamp", {{4, 3}}, Domain::any, [](auto& x) { return clamp(x[0], -0.5, 0.5); }, true},
      {"add_relu", {{3, 4}, {4}}, Domain::any, [](auto& x) { return add_relu(x[0], x[1]); }, true},
      {"mul_mask", {{4, 3}}, Domain::any,
       [](auto& x) { return mul_mask(x[0], math::gt(x[0].data(), 0.0)); }, true},
      // ---- reductions ----
      {"sum_all", {{3, 4}}, Domain::any, [](auto& x) { return sum(x[0]); }, true},
      {"sum_dims", {{2, 3, 4}}, Domain::any, [](auto& x) { return sum(x[0], {0, 2}); }, true},
      {"sum_keepdim", {{2, 3, 4}}, Domain::any, [](auto& x) { return sum(x[0], {1}, true); }, true},
      {"mean", {{2, 3, 4}}, Domain::any, [](auto& x) { return mean(x[0], {-1}); }, true},
      {"amax", {{3, 5}}, Domain::any, [](auto& x) { return amax(x[0], {1}); }, true},
      {"var", {{3, 5}}, Domain::any, [](auto& x) { return var(x[0], {1}); }, true},
      {"var_biased_all", {{3, 5}}, Domain::any, [](auto& x) { return var(x[0], {}, false); }, true},
      {"sum_to", {{2, 3, 4}}, Domain::any, [](auto& x) { return sum_to(x[0], {3, 1}); }, true},
      // ---- shape ----
      {"reshape", {{2, 6}}, Domain::any, [](auto& x) { return mul(reshape(x[0], {3, 4}), reshape(x[0], {3, 4})); },
       true},
      {"permute", {{2, 3, 4}}, Domain::any, [](auto& x) { return sin(permute(x[0], {2, 0, 1})); }, true},
      {"transpose", {{2, 3}}, Domain::any, [](auto& x) { return exp(transpose(x[0], 0, 1)); }, true},
      {"expand", {{3, 1}}, Domain::any, [](auto& x) { return mul(expand(x[0], {2, 3, 4}), expand(x[0], {2, 3, 4})); },
       true},
      {"narrow", {{5, 4}}, Domain::any, [](auto& x) { return exp(narrow(x[0], 0, 1, 3)); }, true},
      {"select", {{5, 4}}, Domain::any, [](auto& x) { return exp(select(x[0], 1, 2)); }, true},
      {"flatten", {{2, 3, 4}}, Domain::any, [](auto& x) { return sin(flatten(x[0], 1)); }, true},
      {"cat", {{2, 3}, {4, 3}}, Domain::any, [](auto& x) { return sin(cat({x[0], x[1]}, 0)); }, true},
      {"stack", {{2, 3}, {2, 3}}, Domain::any, [](auto& x) { return sin(stack({x[0], x[1]}, 1)); }, true},
      {"pad", {{2, 3}}, Domain::any, [](auto& x) { return exp(pad(x[0], {1, 2, 0, 1}, 0.5)); }, true},
      {"contiguous_cl", {{2, 3, 2, 2}}, Domain::any,
       [](auto& x) { return sin(contiguous(x[0], MemoryFormat::channels_last)); }, true},
      // ---- linear algebra ----
      {"matmul", {{3, 4}, {4, 5}}, Domain::any, [](auto& x) { return matmul(x[0], x[1]); }, true},
      {"matmul_batched_broadcast", {{2, 3, 4}, {4, 2}}, Domain::any, [](auto& x) { return matmul(x[0], x[1]); },
       true},
      {"matmul_vec", {{4}, {4, 3}}, Domain::any, [](auto& x) { return matmul(x[0], x[1]); }, true},
      {"linear", {{5, 4}, {3, 4}, {3}}, Domain::any, [](auto& x) { return linear(x[0], x[1], x[2]); }, true},
      // ---- softmax and losses ----
      {"softmax", {{3, 5}}, Domain::any, [](auto& x) { return softmax(x[0], 1); }, true},
      {"log_softmax", {{3, 5}}, Domain::any, [](auto& x) { return log_softmax(x[0], 0); }, true},
      {"cross_entropy", {{4, 5}}, Domain::any,
       [](auto& x) { return cross_entropy(x[0], labels({0, 3, 4, 1})); }, true},
      {"nll_loss_sum", {{3, 4}}, Domain::any,
       [](auto& x) { return nll_loss(log_softmax(x[0], 1), labels({2, 0, 3}), Reduction::sum); }, true},
      {"mse_loss", {{3, 4}, {3, 4}}, Domain::any, [](auto& x) { return mse_loss(x[0], x[1]); }, true},
      // ---- convolution (inputs [N, C, H, W], weights [K, C/groups, R, S]) ----
      {"conv2d", {{2, 3, 5, 5}, {4, 3, 3, 3}, {4}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], x[2]); }, true},
      {"conv2d_stride_pad", {{1, 2, 6, 5}, {3, 2, 3, 3}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], Variable(), {.stride = {2, 2}, .padding = {1, 1}}); }, true},
      {"conv2d_dilation", {{1, 2, 7, 7}, {2, 2, 3, 3}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], Variable(), {.padding = {2, 1}, .dilation = {2, 2}}); }, true},
      {"conv2d_groups", {{1, 4, 5, 5}, {6, 2, 3, 3}, {6}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], x[2], {.padding = {1, 1}, .groups = 2}); }, true},
      {"conv2d_depthwise", {{2, 3, 5, 5}, {3, 1, 3, 3}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], Variable(), {.stride = {2, 2}, .padding = {1, 1}, .groups = 3}); },
       true},
      {"conv2d_depthwise_multiplier", {{1, 2, 4, 4}, {4, 1, 3, 3}, {4}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], x[2], {.padding = {1, 1}, .groups = 2}); }, true},
      {"conv2d_1x1", {{2, 5, 3, 3}, {4, 5, 1, 1}}, Domain::any, [](auto& x) { return conv2d(x[0], x[1]); }, true},
      {"conv2d_input_grad", {{1, 4, 3, 3}, {4, 2, 3, 3}}, Domain::any,
       [](auto& x) { return conv2d_input_grad(x[0], x[1], {1, 2, 5, 5}, {}); }, true},
      {"conv2d_weight_grad", {{1, 2, 5, 5}, {1, 4, 3, 3}}, Domain::any,
       [](auto& x) { return conv2d_weight_grad(x[0], x[1], {4, 2, 3, 3}, {}); }, true},
      // ---- pooling ----
      {"max_pool2d", {{2, 3, 6, 6}}, Domain::any, [](auto& x) { return max_pool2d(x[0], {}); }, true},
      {"max_pool2d_overlap_pad_ceil", {{1, 2, 7, 7}}, Domain::any,
       [](auto& x) {
         return max_pool2d(x[0], {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true});
       },
       true},
      {"avg_pool2d", {{2, 3, 6, 6}}, Domain::any, [](auto& x) { return avg_pool2d(x[0], {}); }, true},
      {"avg_pool2d_pad_exclude", {{1, 2, 5, 5}}, Domain::any,
       [](auto& x) {
         return avg_pool2d(x[0], {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true,
                                  .count_include_pad = false});
       },
       true},
      {"global_avg_pool2d", {{2, 3, 4, 5}}, Domain::any, [](auto& x) { return global_avg_pool2d(x[0]); }, true},
      // ---- normalisation, dropout ----
      {"batch_norm_train_4d", {{3, 2, 3, 3}, {2}, {2}}, Domain::any,
       [](auto& x) { return batch_norm(x[0], x[1], x[2], Tensor(), Tensor(), true); }, true},
      {"batch_norm_train_2d", {{5, 3}, {3}, {3}}, Domain::any,
       [](auto& x) { return batch_norm(x[0], x[1], x[2], Tensor(), Tensor(), true); }, true},
      {"batch_norm_train_no_affine", {{4, 3, 2, 2}}, Domain::any,
       [](auto& x) { return batch_norm(x[0], Variable(), Variable(), Tensor(), Tensor(), true); }, true},
      {"batch_norm_eval", {{3, 2, 3, 3}, {2}, {2}}, Domain::any,
       [](auto& x) {
         return batch_norm(x[0], x[1], x[2], Tensor::from_list({0.1, -0.2}, {2}, DType::f64),
                           Tensor::from_list({0.5, 2.0}, {2}, DType::f64), false);
       },
       true},
      {"batch_norm_relu_train", {{3, 2, 3, 3}, {2}, {2}}, Domain::any,
       [](auto& x) { return batch_norm_relu(x[0], x[1], x[2], Tensor(), Tensor(), true); }, true},
      {"batch_norm_relu_eval", {{3, 2, 3, 3}, {2}, {2}}, Domain::any,
       [](auto& x) {
         return batch_norm_relu(x[0], x[1], x[2], Tensor::from_list({0.1, -0.2}, {2}, DType::f64),
                                Tensor::from_list({0.5, 2.0}, {2}, DType::f64), false);
       },
       true},
      {"dropout", {{4, 5}}, Domain::any,
       [](auto& x) {
         Generator gen(11);  // same mask at every evaluation
         return dropout(x[0], 0.3, true, gen);
       },
       true},
  };
  return table;
}

}  // namespace

TEST_CASE("gradcheck: every op, float64 central differences") {
  for (const OpCase& c : op_table()) {
    SUBCASE(c.name.c_str()) {
      const auto xs = make_inputs(c, 42);
      const GradcheckResult r = gradcheck(c.fn, xs);
      INFO(c.name, ": ", r.message);
      CHECK(r.ok);
    }
  }
}

TEST_CASE("gradgradcheck: second derivatives through the recorded backward") {
  for (const OpCase& c : op_table()) {
    if (!c.gradgrad) continue;
    SUBCASE(c.name.c_str()) {
      const auto xs = make_inputs(c, 7);
      const GradcheckResult r = gradgradcheck(c.fn, xs);
      INFO(c.name, ": ", r.message);
      CHECK(r.ok);
    }
  }
}

TEST_CASE("gradcheck catches a wrong gradient") {
  // An op whose backward is deliberately off by a factor 2 must fail: the check can fail.
  VariableFn wrong = [](const std::vector<Variable>& x) {
    return make_result(math::mul(x[0].data(), x[0].data()), "bad_square", {x[0]},
                       [a = x[0]](const Variable& g, const Variable&) { return std::vector<Variable>{mul(g, a)}; });
  };
  Generator gen(3);
  Variable x(Tensor::randn({4}, gen, DType::f64), true);
  CHECK_FALSE(gradcheck(wrong, {x}).ok);
}
