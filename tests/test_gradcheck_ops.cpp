// Table-driven finite-difference checks of every differentiable op, in float64.
// Adding an op means adding one row: its name, input shapes, the domain its inputs are drawn
// from, the call, whether second derivatives are checked too, and (when the row's name is not the
// op's) the op(s) it checks. The test "every public op has a gradcheck row" reads the op
// declarations in autograd/ops.h and autograd/ops_nn.h and fails naming any op without a row, so a
// newly declared op cannot go unchecked.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
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
  // The public ops this row checks, as op_keys() spells them: the function's name, or for an
  // overloaded name its parameter types too ("add(Variable,double)"). Empty: the row's name.
  std::vector<std::string> ops = {};
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
      {"add", {{3, 4}, {4}}, Domain::any, [](auto& x) { return add(x[0], x[1]); }, true, {"add(Variable,Variable)"}},
      {"sub", {{2, 3, 4}, {3, 1}}, Domain::any, [](auto& x) { return sub(x[0], x[1]); }, true},
      {"mul", {{3, 4}, {3, 4}}, Domain::any, [](auto& x) { return mul(x[0], x[1]); }, true, {"mul(Variable,Variable)"}},
      {"mul_broadcast", {{2, 3, 4}, {1, 4}}, Domain::any, [](auto& x) { return mul(x[0], x[1]); }, true,
       {"mul(Variable,Variable)"}},
      {"div", {{3, 4}, {3, 4}}, Domain::positive, [](auto& x) { return div(x[0], x[1]); }, true},
      {"pow", {{3, 4}, {3, 4}}, Domain::positive, [](auto& x) { return pow(x[0], x[1]); }, true,
       {"pow(Variable,Variable)"}},
      {"maximum", {{3, 4}, {3, 4}}, Domain::any, [](auto& x) { return maximum(x[0], x[1]); }, true},
      {"minimum", {{3, 4}, {4}}, Domain::any, [](auto& x) { return minimum(x[0], x[1]); }, true},
      {"where", {{3, 4}, {3, 4}}, Domain::any,
       [](auto& x) { return where(math::gt(x[0].data(), 0.0), x[0], x[1]); }, true},
      // ---- scalar forms ----
      {"add_scalar", {{5}}, Domain::any, [](auto& x) { return x[0] + 2.5; }, true,
       {"add(Variable,double)", "operator+(Variable,double)"}},
      {"mul_scalar", {{5}}, Domain::any, [](auto& x) { return x[0] * -1.5; }, true,
       {"mul(Variable,double)", "operator*(Variable,double)"}},
      {"rsub_scalar", {{5}}, Domain::any, [](auto& x) { return 3.0 - x[0]; }, true,
       {"rsub", "operator-(double,Variable)"}},
      {"rdiv_scalar", {{5}}, Domain::positive, [](auto& x) { return 2.0 / x[0]; }, true,
       {"rdiv", "operator/(double,Variable)"}},
      {"pow_scalar", {{5}}, Domain::positive, [](auto& x) { return pow(x[0], 2.7); }, true, {"pow(Variable,double)"}},
      {"pow_scalar_2", {{5}}, Domain::any, [](auto& x) { return pow(x[0], 2.0); }, true, {"pow(Variable,double)"}},
      // ---- the remaining operator overloads (each forwards to a named op) ----
      {"operators", {{3, 4}, {3, 4}}, Domain::positive,
       [](auto& x) {
         const Variable t = (x[0] + x[1]) * (x[0] - x[1]) / x[1];
         return (2.0 * -(1.5 + t) - 0.25) / 3.0;
       },
       true,
       {"operator+(Variable,Variable)", "operator-(Variable,Variable)", "operator*(Variable,Variable)",
        "operator/(Variable,Variable)", "operator-(Variable)", "operator+(double,Variable)",
        "operator-(Variable,double)", "operator*(double,Variable)", "operator/(Variable,double)"}},
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
      {"all_reduce_sum", {{3, 4}}, Domain::any, [](auto& x) { return all_reduce_sum(x[0]); }, true},
      {"sum_all", {{3, 4}}, Domain::any, [](auto& x) { return sum(x[0]); }, true, {"sum"}},
      {"sum_dims", {{2, 3, 4}}, Domain::any, [](auto& x) { return sum(x[0], {0, 2}); }, true, {"sum"}},
      {"sum_keepdim", {{2, 3, 4}}, Domain::any, [](auto& x) { return sum(x[0], {1}, true); }, true, {"sum"}},
      {"mean", {{2, 3, 4}}, Domain::any, [](auto& x) { return mean(x[0], {-1}); }, true},
      {"amax", {{3, 5}}, Domain::any, [](auto& x) { return amax(x[0], {1}); }, true},
      {"max_abs", {{3, 5}}, Domain::any, [](auto& x) { return mul(max_abs(x[0]), x[0]); }, true},
      {"var", {{3, 5}}, Domain::any, [](auto& x) { return var(x[0], {1}); }, true},
      {"var_biased_all", {{3, 5}}, Domain::any, [](auto& x) { return var(x[0], {}, false); }, true, {"var"}},
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
      {"unsqueeze", {{3, 4}}, Domain::any,
       [](auto& x) { return mul(unsqueeze(x[0], 1), unsqueeze(x[0], -1)); }, true},  // [3, 1, 4] * [3, 4, 1]
      {"squeeze", {{3, 1, 4}}, Domain::any, [](auto& x) { return sin(squeeze(x[0], 1)); }, true},
      {"squeeze_negative_dim", {{2, 3, 1}}, Domain::any,
       [](auto& x) { return mul(squeeze(x[0], -1), squeeze(x[0], 2)); }, true, {"squeeze"}},
      {"squeeze_not_size_1", {{3, 4}}, Domain::any, [](auto& x) { return exp(squeeze(x[0], 0)); }, true,
       {"squeeze"}},  // returns its input
      {"flatten", {{2, 3, 4}}, Domain::any, [](auto& x) { return sin(flatten(x[0], 1)); }, true},
      {"cat", {{2, 3}, {4, 3}}, Domain::any, [](auto& x) { return sin(cat({x[0], x[1]}, 0)); }, true},
      {"stack", {{2, 3}, {2, 3}}, Domain::any, [](auto& x) { return sin(stack({x[0], x[1]}, 1)); }, true},
      {"pad", {{2, 3}}, Domain::any, [](auto& x) { return exp(pad(x[0], {1, 2, 0, 1}, 0.5)); }, true},
      {"contiguous_cl", {{2, 3, 2, 2}}, Domain::any,
       [](auto& x) { return sin(contiguous(x[0], MemoryFormat::channels_last)); }, true, {"contiguous"}},
      // ---- linear algebra ----
      {"matmul", {{3, 4}, {4, 5}}, Domain::any, [](auto& x) { return matmul(x[0], x[1]); }, true},
      {"matmul_batched_broadcast", {{2, 3, 4}, {4, 2}}, Domain::any, [](auto& x) { return matmul(x[0], x[1]); },
       true, {"matmul"}},
      {"matmul_vec", {{4}, {4, 3}}, Domain::any, [](auto& x) { return matmul(x[0], x[1]); }, true, {"matmul"}},
      {"linear", {{5, 4}, {3, 4}, {3}}, Domain::any, [](auto& x) { return linear(x[0], x[1], x[2]); }, true},
      // ---- softmax and losses ----
      {"softmax", {{3, 5}}, Domain::any, [](auto& x) { return softmax(x[0], 1); }, true},
      {"log_softmax", {{3, 5}}, Domain::any, [](auto& x) { return log_softmax(x[0], 0); }, true},
      {"cross_entropy", {{4, 5}}, Domain::any,
       [](auto& x) { return cross_entropy(x[0], labels({0, 3, 4, 1})); }, true},
      {"nll_loss_sum", {{3, 4}}, Domain::any,
       [](auto& x) { return nll_loss(log_softmax(x[0], 1), labels({2, 0, 3}), Reduction::sum); }, true,
       {"nll_loss"}},
      {"mse_loss", {{3, 4}, {3, 4}}, Domain::any, [](auto& x) { return mse_loss(x[0], x[1]); }, true},
      // ---- convolution (inputs [N, C, H, W], weights [K, C/groups, R, S]) ----
      {"conv2d", {{2, 3, 5, 5}, {4, 3, 3, 3}, {4}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], x[2]); }, true},
      {"conv2d_stride_pad", {{1, 2, 6, 5}, {3, 2, 3, 3}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], Variable(), {.stride = {2, 2}, .padding = {1, 1}}); }, true, {"conv2d"}},
      {"conv2d_dilation", {{1, 2, 7, 7}, {2, 2, 3, 3}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], Variable(), {.padding = {2, 1}, .dilation = {2, 2}}); }, true, {"conv2d"}},
      {"conv2d_groups", {{1, 4, 5, 5}, {6, 2, 3, 3}, {6}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], x[2], {.padding = {1, 1}, .groups = 2}); }, true, {"conv2d"}},
      {"conv2d_depthwise", {{2, 3, 5, 5}, {3, 1, 3, 3}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], Variable(), {.stride = {2, 2}, .padding = {1, 1}, .groups = 3}); },
       true, {"conv2d"}},
      {"conv2d_depthwise_multiplier", {{1, 2, 4, 4}, {4, 1, 3, 3}, {4}}, Domain::any,
       [](auto& x) { return conv2d(x[0], x[1], x[2], {.padding = {1, 1}, .groups = 2}); }, true, {"conv2d"}},
      {"conv2d_1x1", {{2, 5, 3, 3}, {4, 5, 1, 1}}, Domain::any, [](auto& x) { return conv2d(x[0], x[1]); }, true, {"conv2d"}},
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
       true, {"max_pool2d"}},
      {"avg_pool2d", {{2, 3, 6, 6}}, Domain::any, [](auto& x) { return avg_pool2d(x[0], {}); }, true},
      {"avg_pool2d_pad_exclude", {{1, 2, 5, 5}}, Domain::any,
       [](auto& x) {
         return avg_pool2d(x[0], {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true,
                                  .count_include_pad = false});
       },
       true, {"avg_pool2d"}},
      {"global_avg_pool2d", {{2, 3, 4, 5}}, Domain::any, [](auto& x) { return global_avg_pool2d(x[0]); }, true},
      // ---- normalisation, dropout ----
      {"batch_norm_train_4d", {{3, 2, 3, 3}, {2}, {2}}, Domain::any,
       [](auto& x) { return batch_norm(x[0], x[1], x[2], Tensor(), Tensor(), true); }, true, {"batch_norm"}},
      {"batch_norm_train_2d", {{5, 3}, {3}, {3}}, Domain::any,
       [](auto& x) { return batch_norm(x[0], x[1], x[2], Tensor(), Tensor(), true); }, true, {"batch_norm"}},
      {"batch_norm_train_no_affine", {{4, 3, 2, 2}}, Domain::any,
       [](auto& x) { return batch_norm(x[0], Variable(), Variable(), Tensor(), Tensor(), true); }, true, {"batch_norm"}},
      {"batch_norm_eval", {{3, 2, 3, 3}, {2}, {2}}, Domain::any,
       [](auto& x) {
         return batch_norm(x[0], x[1], x[2], Tensor::from_list({0.1, -0.2}, {2}, DType::f64),
                           Tensor::from_list({0.5, 2.0}, {2}, DType::f64), false);
       },
       true, {"batch_norm"}},
      {"batch_norm_relu_train", {{3, 2, 3, 3}, {2}, {2}}, Domain::any,
       [](auto& x) { return batch_norm_relu(x[0], x[1], x[2], Tensor(), Tensor(), true); }, true, {"batch_norm_relu"}},
      {"batch_norm_relu_eval", {{3, 2, 3, 3}, {2}, {2}}, Domain::any,
       [](auto& x) {
         return batch_norm_relu(x[0], x[1], x[2], Tensor::from_list({0.1, -0.2}, {2}, DType::f64),
                                Tensor::from_list({0.5, 2.0}, {2}, DType::f64), false);
       },
       true, {"batch_norm_relu"}},
      {"sync_batch_norm_4d", {{3, 2, 3, 3}, {2}, {2}}, Domain::any,
       [](auto& x) { return sync_batch_norm(x[0], x[1], x[2], Tensor(), Tensor()); }, true, {"sync_batch_norm"}},
      {"sync_batch_norm_2d_no_affine", {{5, 3}}, Domain::any,
       [](auto& x) { return sync_batch_norm(x[0], Variable(), Variable(), Tensor(), Tensor()); }, true,
       {"sync_batch_norm"}},
      {"dropout", {{4, 5}}, Domain::any,
       [](auto& x) {
         Generator gen(11);  // same mask at every evaluation
         return dropout(x[0], 0.3, true, gen);
       },
       true},
  };
  return table;
}

// ---- The public ops, read from their declarations ----
//
// Every function declared in autograd/ops.h or autograd/ops_nn.h (namespace scope, outside
// struct/class/enum bodies) that returns Variable or std::vector<Variable> is a public op. Each
// op is named by a key: the function's name, or for an overloaded name the name and its parameter
// types, const, references and parameter names dropped ("add(Variable,double)",
// "operator-(Variable)"). Every key needs a row in op_table() (OpCase::ops, or the row's name) or
// an entry in exemptions(); a row or exemption naming a key that is not declared also fails, so
// neither list can outlive the op it names.

// A public op that needs no row, with why. An op that "only builds on others" still gets a row
// when it can: e.g. the operators forward to named ops and are checked by the rows that call them.
struct Exemption {
  std::string op;
  std::string reason;
};

const std::vector<Exemption>& exemptions() {
  // None today: every public op is differentiable and has a row. Form: {"detach", "no graph"}.
  static const std::vector<Exemption> list = {};
  return list;
}

// `text` without comments, string/char literals and preprocessor lines (each replaced by spaces).
std::string strip_comments(const std::string& text) {
  std::string out(text.size(), ' ');
  bool line_start = true;
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    const char next = i + 1 < text.size() ? text[i + 1] : '\0';
    if (c == '\n') {
      out[i++] = '\n';
      line_start = true;
      continue;
    }
    if (line_start && c == '#') {  // preprocessor line, with backslash continuations
      while (i < text.size() && !(text[i] == '\n' && text[i - 1] != '\\')) ++i;
      continue;
    }
    if (!std::isspace(static_cast<unsigned char>(c))) line_start = false;
    if (c == '/' && next == '/') {
      while (i < text.size() && text[i] != '\n') ++i;
    } else if (c == '/' && next == '*') {
      const size_t end = text.find("*/", i + 2);
      for (const size_t stop = end == std::string::npos ? text.size() : end + 2; i < stop; ++i)
        if (text[i] == '\n') out[i] = '\n';
    } else if (c == '"' || c == '\'') {
      for (++i; i < text.size() && text[i] != c; ++i)
        if (text[i] == '\\') ++i;
      ++i;
    } else {
      out[i] = c;
      ++i;
    }
  }
  return out;
}

// Index one past the bracket matching the opening bracket at `open`.
size_t skip_balanced(const std::string& s, size_t open) {
  const char o = s[open], c = o == '(' ? ')' : o == '{' ? '}' : o == '[' ? ']' : '>';
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == o) ++depth;
    if (s[i] == c && --depth == 0) return i + 1;
  }
  return s.size();
}

// "const std::vector<int64_t>& dims = {}" -> "std::vector<int64_t>".
std::string param_type(std::string p) {
  int depth = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '<' || p[i] == '(' || p[i] == '{' || p[i] == '[') ++depth;
    if (p[i] == '>' || p[i] == ')' || p[i] == '}' || p[i] == ']') --depth;
    if (p[i] == '=' && depth == 0) {
      p.resize(i);
      break;
    }
  }
  p = std::regex_replace(p, std::regex(R"(\bconst\b)"), " ");
  p = std::regex_replace(p, std::regex(R"(^\s+|\s+$)"), "");
  std::smatch m;
  if (std::regex_match(p, m, std::regex(R"(([\s\S]*[\s&*>])\s*[A-Za-z_]\w*)"))) p = m[1];  // drop the name
  std::string t;
  for (char ch : p)
    if (!std::isspace(static_cast<unsigned char>(ch)) && ch != '&') t += ch;
  return t;
}

// Splits "a, std::map<K, V> b, c" at its top-level commas.
std::vector<std::string> split_params(const std::string& params) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char ch : params) {
    if (ch == '<' || ch == '(' || ch == '{' || ch == '[') ++depth;
    if (ch == '>' || ch == ')' || ch == '}' || ch == ']') --depth;
    if (ch == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (cur.find_first_not_of(" \t\n") != std::string::npos) out.push_back(cur);
  return out;
}

struct DeclaredOp {
  std::string name;
  std::vector<std::string> params;  // parameter types
};

// The functions returning Variable or std::vector<Variable> declared in a header's text.
std::vector<DeclaredOp> declared_ops(const std::string& header_text) {
  std::string s = strip_comments(header_text);
  // Blank out the bodies of structs, classes, unions and enums: their members are not ops.
  const std::regex type_head(R"(\b(struct|class|union|enum)\b[^;{}()]*\{)");
  for (std::smatch m; std::regex_search(s, m, type_head);) {
    const size_t begin = size_t(m.position(0)), open = begin + size_t(m.length(0)) - 1;
    std::fill(s.begin() + std::ptrdiff_t(begin), s.begin() + std::ptrdiff_t(skip_balanced(s, open)), ' ');
  }
  const std::regex decl(
      R"(\b(?:std\s*::\s*vector\s*<\s*Variable\s*>|Variable)\s+(operator\s*(?:\(\s*\)|\[\s*\]|[^\s(]+)|[A-Za-z_]\w*)\s*\()");
  std::vector<DeclaredOp> ops;
  for (size_t pos = 0;;) {
    std::smatch m;
    if (!std::regex_search(s.cbegin() + std::ptrdiff_t(pos), s.cend(), m, decl)) break;
    const size_t open = pos + size_t(m.position(0) + m.length(0)) - 1;
    const size_t close = skip_balanced(s, open);
    DeclaredOp op;
    for (char ch : std::string(m[1]))
      if (!std::isspace(static_cast<unsigned char>(ch))) op.name += ch;
    for (const std::string& p : split_params(s.substr(open + 1, close - open - 2))) op.params.push_back(param_type(p));
    ops.push_back(op);
    // An inline definition: skip its body (its local variables are not declarations).
    pos = close;
    const size_t end = s.find_first_of(";{", pos);
    if (end != std::string::npos && s[end] == '{') pos = skip_balanced(s, end);
  }
  return ops;
}

// Keys as described above: the name, with the parameter types when the name is overloaded.
std::vector<std::string> op_keys(const std::vector<DeclaredOp>& ops) {
  std::map<std::string, int> count;
  for (const DeclaredOp& op : ops) ++count[op.name];
  std::vector<std::string> keys;
  for (const DeclaredOp& op : ops) {
    std::string key = op.name;
    if (count[op.name] > 1) {
      key += "(";
      for (size_t i = 0; i < op.params.size(); ++i) key += (i ? "," : "") + op.params[i];
      key += ")";
    }
    keys.push_back(key);
  }
  return keys;
}

// Everything wrong between the declared ops, the table's rows (name, ops) and the exemptions.
std::vector<std::string> coverage_problems(const std::vector<std::string>& declared,
                                           const std::vector<std::pair<std::string, std::vector<std::string>>>& rows,
                                           const std::vector<Exemption>& exempt) {
  const std::set<std::string> ops(declared.begin(), declared.end());
  std::vector<std::string> problems;
  std::set<std::string> covered;
  for (const auto& [name, row_ops] : rows) {
    for (const std::string& op : row_ops.empty() ? std::vector<std::string>{name} : row_ops) {
      if (ops.count(op))
        covered.insert(op);
      else if (row_ops.empty())
        problems.push_back("row '" + name + "' is not the name of a public op: list the op(s) it checks in its ops");
      else
        problems.push_back("row '" + name + "' checks '" + op + "', which is not a public op (renamed or removed?)");
    }
  }
  std::set<std::string> exempted;
  for (const Exemption& e : exempt) {
    exempted.insert(e.op);
    if (!ops.count(e.op))
      problems.push_back("exemption '" + e.op + "' names no public op (renamed or removed?): drop it");
    else if (covered.count(e.op))
      problems.push_back("exemption '" + e.op + "' has a gradcheck row: drop the exemption");
  }
  for (const std::string& op : declared)
    if (!covered.count(op) && !exempted.count(op))
      problems.push_back("op '" + op + "' has no gradcheck row: add one to op_table() (or an exemption, with why)");
  return problems;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot read ", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
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

#ifndef LOWBIT_SOURCE_DIR
#error "LOWBIT_SOURCE_DIR (the source root, to read autograd/ops.h) is set by tests/CMakeLists.txt"
#endif

TEST_CASE("every public op in autograd/ops.h and autograd/ops_nn.h has a gradcheck row") {
  std::vector<DeclaredOp> declared;
  for (const char* header : {"autograd/ops.h", "autograd/ops_nn.h"})
    for (const DeclaredOp& op : declared_ops(read_text(std::string(LOWBIT_SOURCE_DIR) + "/" + header)))
      declared.push_back(op);
  REQUIRE(!declared.empty());
  std::vector<std::pair<std::string, std::vector<std::string>>> rows;
  for (const OpCase& c : op_table()) rows.emplace_back(c.name, c.ops);
  const std::vector<std::string> keys = op_keys(declared);
  std::string all;
  for (const std::string& k : keys) all += " " + k;
  INFO("public ops:", all);
  for (const std::string& problem : coverage_problems(keys, rows, exemptions())) FAIL_CHECK(problem);
}

TEST_CASE("op coverage check: reads declarations, names an op without a row and stale rows/exemptions") {
  const std::string header = R"(
#include "autograd/variable.h"  // Variable not_an_op(int);
namespace lowbit {
// Variable commented_out(const Variable& a);
/* Variable block_commented(const Variable& a); */
struct Options { Variable member(const Variable& a) const; int n = 0; };
enum class Mode { a, b };
Variable foo(const Variable& a,
             const std::vector<int64_t>& dims = {}, Mode m = Mode::a);  // two lines
Variable bar(const Variable& a, double s);
Variable bar(const Variable& a, const Variable& b);
std::vector<Variable> baz(const std::vector<Variable>& parts, Generator& gen);
inline Variable qux(const Variable& a) { Variable local(a); return local; }
Variable operator-(const Variable& a);
const char* describe(const Variable& a);
}
)";
  const std::vector<std::string> keys = op_keys(declared_ops(header));
  CHECK(keys ==
        std::vector<std::string>{"foo", "bar(Variable,double)", "bar(Variable,Variable)", "baz", "qux", "operator-"});
  const std::vector<std::string> problems = coverage_problems(
      keys, {{"foo", {}}, {"bar_scalar", {"bar(Variable,double)"}}, {"neg", {"operator-"}}, {"old", {}}},
      {{"qux", "no graph"}, {"gone", "was removed"}, {"foo", "has a row"}});
  auto mentions = [&](const std::string& what) {
    return std::any_of(problems.begin(), problems.end(),
                       [&](const std::string& p) { return p.find(what) != std::string::npos; });
  };
  CHECK(problems.size() == 5);
  CHECK(mentions("op 'bar(Variable,Variable)' has no gradcheck row"));
  CHECK(mentions("op 'baz' has no gradcheck row"));
  CHECK(mentions("row 'old' is not the name of a public op"));
  CHECK(mentions("exemption 'gone' names no public op"));
  CHECK(mentions("exemption 'foo' has a gradcheck row"));
}
