#include "optim/optimizer.h"

#include <algorithm>
#include <set>

#include "autograd/ops.h"
#include "core/parallel.h"
#include "optim/regularizer.h"

namespace lowbit::optim {

std::string ParamGroup::param_label(size_t i) const {
  if (i < param_names.size() && !param_names[i].empty()) return param_names[i];
  return std::to_string(i);
}

namespace detail {

Tensor zeros_like_param(const Tensor& param) {
  Tensor z = Tensor::empty_like(param);
  z.zero_();
  return z;
}

}  // namespace detail

namespace {

std::string known_groups(const std::vector<ParamGroup>& groups) {
  std::string s;
  for (const ParamGroup& g : groups) s += (s.empty() ? "" : ", ") + ("'" + g.name + "'");
  return s.empty() ? "(none)" : s;
}

// Hyper-parameters saved per group, as (name, accessor) pairs over doubles and bools.
struct HyperParam {
  const char* name;
  double (*get)(const ParamGroup&);
  void (*set)(ParamGroup&, double);
};

const std::vector<HyperParam>& hyper_params() {
  static const std::vector<HyperParam> list = {
      {"lr", [](const ParamGroup& g) { return g.lr; }, [](ParamGroup& g, double v) { g.lr = v; }},
      {"initial_lr", [](const ParamGroup& g) { return g.initial_lr; },
       [](ParamGroup& g, double v) { g.initial_lr = v; }},
      {"weight_decay", [](const ParamGroup& g) { return g.weight_decay; },
       [](ParamGroup& g, double v) { g.weight_decay = v; }},
      {"momentum", [](const ParamGroup& g) { return g.momentum; }, [](ParamGroup& g, double v) { g.momentum = v; }},
      {"dampening", [](const ParamGroup& g) { return g.dampening; }, [](ParamGroup& g, double v) { g.dampening = v; }},
      {"nesterov", [](const ParamGroup& g) { return g.nesterov ? 1.0 : 0.0; },
       [](ParamGroup& g, double v) { g.nesterov = v != 0; }},
      {"beta1", [](const ParamGroup& g) { return g.beta1; }, [](ParamGroup& g, double v) { g.beta1 = v; }},
      {"beta2", [](const ParamGroup& g) { return g.beta2; }, [](ParamGroup& g, double v) { g.beta2 = v; }},
      {"eps", [](const ParamGroup& g) { return g.eps; }, [](ParamGroup& g, double v) { g.eps = v; }},
      {"amsgrad", [](const ParamGroup& g) { return g.amsgrad ? 1.0 : 0.0; },
       [](ParamGroup& g, double v) { g.amsgrad = v != 0; }},
  };
  return list;
}

Tensor scalar_f64(double v) { return Tensor::scalar(v, DType::f64); }

double scalar_value(const std::string& key, const Tensor& t) {
  LOWBIT_CHECK(t.defined() && t.numel() == 1, "load_state_dict: '", key, "' must be a one-element tensor, got shape ",
               t.defined() ? shape_str(t.shape()) : std::string("undefined"));
  return t.item();
}

}  // namespace

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
  std::set<std::string> names;
  std::map<const VariableImpl*, std::string> seen;  // a param in two places would be updated twice
  for (size_t g = 0; g < groups_.size(); ++g) {
    ParamGroup& group = groups_[g];
    if (group.name.empty()) group.name = "group" + std::to_string(g);
    LOWBIT_CHECK(names.insert(group.name).second, "Optimizer: two parameter groups are named '", group.name, "'");
    LOWBIT_CHECK(group.param_names.empty() || group.param_names.size() == group.params.size(), "Optimizer: group '",
                 group.name, "' has ", group.params.size(), " params but ", group.param_names.size(), " param_names");
    std::set<std::string> labels;
    for (size_t i = 0; i < group.params.size(); ++i) {
      const Variable& p = group.params[i];
      const std::string label = group.param_label(i);
      LOWBIT_CHECK(labels.insert(label).second, "Optimizer: group '", group.name, "' has two params named '", label,
                   "'");
      LOWBIT_CHECK(p.defined(), "Optimizer: param '", group.name, ".", label, "' is undefined");
      LOWBIT_CHECK(p.is_leaf(), "Optimizer: param '", group.name, ".", label, "' is not a leaf (it is the result of ",
                   p.grad_fn()->name, ")");
      LOWBIT_CHECK(is_floating(p.dtype()), "Optimizer: param '", group.name, ".", label, "' is ", dtype_name(p.dtype()),
                   ", expected a floating dtype");
      const auto [where, fresh] = seen.emplace(p.impl(), group.name + "." + label);
      LOWBIT_CHECK(fresh, "Optimizer: param '", group.name, ".", label, "' is the same Variable as '", where->second,
                   "'; a param may appear only once");
      LOWBIT_CHECK(p.data().is_dense(), "Optimizer: param '", group.name, ".", label,
                   "' is not dense (a strided view); optimizers update whole storage blocks");
    }
    if (group.initial_lr == 0) group.initial_lr = group.lr;
  }
  state_.resize(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) state_[g].resize(groups_[g].params.size());
}

Optimizer::~Optimizer() = default;

void Optimizer::step() {
  NoGradGuard no_grad;
  for (size_t g = 0; g < groups_.size(); ++g) {
    ParamGroup& group = groups_[g];
    check_group(group);
    for (size_t i = 0; i < group.params.size(); ++i) {
      Variable& p = group.params[i];
      const Variable grad = p.grad();
      if (!grad.defined()) continue;
      const Tensor& pd = p.data();
      Tensor gd = grad.data();
      LOWBIT_CHECK(gd.shape() == pd.shape(), name(), ": gradient of '", group.name, ".", group.param_label(i),
                   "' has shape ", shape_str(gd.shape()), ", the param ", shape_str(pd.shape()));
      if (gd.dtype() != pd.dtype() || gd.strides() != pd.strides()) {
        Tensor same_layout = Tensor::empty_like(pd);
        same_layout.copy_(gd);
        gd = same_layout;
      }
      update(group, p, gd, state_[g][i]);
    }
  }
  ++step_count_;
}

void Optimizer::zero_grad() {
  for (ParamGroup& group : groups_)
    for (Variable& p : group.params) p.zero_grad();
}

ParamGroup& Optimizer::group(const std::string& group_name) {
  for (ParamGroup& g : groups_)
    if (g.name == group_name) return g;
  throw Error(lowbit::detail::concat("Optimizer::group: no group named '", group_name,
                                     "'; known groups: ", known_groups(groups_)));
}

std::vector<Variable> Optimizer::parameters() const {
  std::vector<Variable> all;
  for (const ParamGroup& g : groups_) all.insert(all.end(), g.params.begin(), g.params.end());
  return all;
}

Variable Optimizer::regularization_loss() {
  Variable total;
  for (const ParamGroup& group : groups_) {
    for (const auto& reg : group.regularizers) {
      LOWBIT_CHECK(reg != nullptr, "regularization_loss: group '", group.name, "' has a null regularizer");
      Variable term = reg->loss(group, step_count_);
      if (!term.defined()) continue;
      LOWBIT_CHECK(term.numel() == 1, "regularization_loss: regularizer '", reg->name(), "' of group '", group.name,
                   "' returned shape ", shape_str(term.shape()), ", expected a scalar");
      total = total.defined() ? total + term : term;
    }
  }
  return total;
}

void Optimizer::set_position(double t, double total) {
  std::set<const Regularizer*> done;
  for (const ParamGroup& group : groups_)
    for (const auto& reg : group.regularizers)
      if (reg && done.insert(reg.get()).second) reg->set_position(t, total);
}

std::map<std::string, Tensor> Optimizer::state_dict() const {
  std::map<std::string, Tensor> out;
  out["step"] = scalar_f64(static_cast<double>(step_count_));
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParamGroup& group = groups_[g];
    for (const HyperParam& h : hyper_params()) out[group.name + "." + h.name] = scalar_f64(h.get(group));
    for (size_t i = 0; i < group.params.size(); ++i) {
      const ParamState& st = state_[g][i];
      if (st.step == 0 && st.buffers.empty()) continue;
      const std::string prefix = group.name + "." + group.param_label(i) + ".";
      out[prefix + "step"] = scalar_f64(static_cast<double>(st.step));
      for (const auto& [buf_name, buf] : st.buffers) out[prefix + buf_name] = buf.clone();
    }
  }
  return out;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& state) {
  // Validate everything first so a failed load leaves the optimizer unchanged.
  const std::vector<std::string> buffers = buffer_names();
  std::map<std::string, std::pair<size_t, size_t>> param_index;  // "<group>.<param>" -> (g, i)
  std::map<std::string, std::pair<size_t, const HyperParam*>> hyper_index;
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < groups_[g].params.size(); ++i)
      param_index[groups_[g].name + "." + groups_[g].param_label(i)] = {g, i};
    for (const HyperParam& h : hyper_params()) hyper_index[groups_[g].name + "." + h.name] = {g, &h};
  }
  LOWBIT_CHECK(state.count("step"), name(), "::load_state_dict: missing key 'step'");
  for (const auto& [key, _] : hyper_index)
    LOWBIT_CHECK(state.count(key), name(), "::load_state_dict: missing key '", key, "'");

  std::vector<std::vector<ParamState>> new_state(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) new_state[g].resize(groups_[g].params.size());
  std::vector<ParamGroup> new_groups = groups_;
  int64_t new_step = 0;
  for (const auto& [key, tensor] : state) {
    if (key == "step") {
      new_step = static_cast<int64_t>(scalar_value(key, tensor));
      continue;
    }
    if (auto h = hyper_index.find(key); h != hyper_index.end()) {
      h->second.second->set(new_groups[h->second.first], scalar_value(key, tensor));
      continue;
    }
    const size_t dot = key.rfind('.');
    auto p = dot == std::string::npos ? param_index.end() : param_index.find(key.substr(0, dot));
    LOWBIT_CHECK(p != param_index.end(), name(), "::load_state_dict: unknown key '", key,
                 "' (no such group, hyper-parameter or param)");
    const auto [g, i] = p->second;
    const std::string field = key.substr(dot + 1);
    ParamState& st = new_state[g][i];
    if (field == "step") {
      st.step = static_cast<int64_t>(scalar_value(key, tensor));
      continue;
    }
    LOWBIT_CHECK(std::find(buffers.begin(), buffers.end(), field) != buffers.end(), name(),
                 "::load_state_dict: unknown key '", key, "' (", name(), " keeps no buffer '", field, "')");
    const Tensor& param = groups_[g].params[i].data();
    LOWBIT_CHECK(tensor.defined() && tensor.shape() == param.shape(), name(), "::load_state_dict: '", key,
                 "' has shape ", tensor.defined() ? shape_str(tensor.shape()) : std::string("undefined"),
                 ", the param ", shape_str(param.shape()));
    LOWBIT_CHECK(tensor.dtype() == param.dtype(), name(), "::load_state_dict: '", key, "' is ",
                 dtype_name(tensor.dtype()), ", the param ", dtype_name(param.dtype()));
    Tensor buf = Tensor::empty_like(param);
    buf.copy_(tensor);
    st.buffers[field] = buf;
  }
  for (const ParamGroup& group : new_groups) check_group(group);
  // Hyper-parameters only: the params and regularizers stay the caller's.
  groups_ = std::move(new_groups);
  state_ = std::move(new_state);
  step_count_ = new_step;
}

}  // namespace lowbit::optim
