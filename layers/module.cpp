#include "layers/module.h"

#include <ostream>
#include <set>
#include <sstream>

namespace lowbit {

std::string join_name(const std::string& prefix, const std::string& name) {
  if (prefix.empty()) return name;
  if (name.empty()) return prefix;
  return prefix + "." + name;
}

Variable Module::operator()(const Variable& x) { return apply_output_hook(forward(x)); }

void Module::check_new_name(const std::string& name, const char* what) const {
  LOWBIT_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name(), "::", what, ": invalid name '", name,
               "' (must be non-empty and contain no '.')");
  for (const auto& [n, _] : params_)
    LOWBIT_CHECK(n != name, type_name(), "::", what, ": name '", name, "' is already a parameter");
  for (const auto& [n, _] : buffers_)
    LOWBIT_CHECK(n != name, type_name(), "::", what, ": name '", name, "' is already a buffer");
  for (const auto& [n, _] : children_)
    LOWBIT_CHECK(n != name, type_name(), "::", what, ": name '", name, "' is already a submodule");
}

Variable& Module::register_parameter(const std::string& name, Tensor init, bool requires_grad) {
  LOWBIT_CHECK(init.defined(), type_name(), "::register_parameter: '", name, "' is undefined");
  check_new_name(name, "register_parameter");
  params_.emplace_back(name, Variable(std::move(init), requires_grad));
  params_.back().second.set_name(name);
  return params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  check_new_name(name, "register_buffer");
  buffers_.emplace_back(name, std::move(t));
  return buffers_.back().second;
}

std::vector<std::pair<std::string, Variable>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Variable>> out(params_.begin(), params_.end());
  if (recurse)
    for (const auto& [cname, child] : children_)
      for (auto& [n, p] : child->named_parameters(true)) out.emplace_back(join_name(cname, n), p);
  return out;
}

std::vector<Variable> Module::parameters(bool recurse) const {
  std::vector<Variable> out;
  for (auto& [_, p] : named_parameters(recurse)) out.push_back(p);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out(buffers_.begin(), buffers_.end());
  if (recurse)
    for (const auto& [cname, child] : children_)
      for (auto& [n, b] : child->named_buffers(true)) out.emplace_back(join_name(cname, n), b);
  return out;
}

void Module::collect_modules(const std::string& prefix,
                             std::vector<std::pair<std::string, std::shared_ptr<Module>>>& out,
                             const std::shared_ptr<Module>& self) {
  out.emplace_back(prefix, self);
  for (const auto& [cname, child] : children_) child->collect_modules(join_name(prefix, cname), out, child);
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_modules() {
  std::shared_ptr<Module> self = weak_from_this().lock();
  // A module not owned by a shared_ptr (e.g. on the stack) is reported through a non-owning pointer.
  if (!self) self = std::shared_ptr<Module>(this, [](Module*) {});
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  collect_modules("", out, self);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const { return children_; }

Variable& Module::param(const std::string& local_name) {
  for (auto& [n, p] : params_)
    if (n == local_name) return p;
  std::string known;
  for (auto& [n, _] : params_) known += (known.empty() ? "" : ", ") + n;
  throw Error(detail::concat(type_name(), "::param: no parameter '", local_name, "' (has: ", known, ")"));
}

Tensor& Module::buffer(const std::string& local_name) {
  for (auto& [n, b] : buffers_)
    if (n == local_name) return b;
  throw Error(detail::concat(type_name(), "::buffer: no buffer '", local_name, "'"));
}

bool Module::has_param(const std::string& local_name) const {
  for (auto& [n, _] : params_)
    if (n == local_name) return true;
  return false;
}

void Module::apply_impl(const std::string& prefix, const std::function<void(const std::string&, Module&)>& fn) {
  fn(prefix, *this);
  for (const auto& [cname, child] : children_) child->apply_impl(join_name(prefix, cname), fn);
}

void Module::apply(const std::function<void(const std::string&, Module&)>& fn) { apply_impl("", fn); }

void Module::train(bool on) {
  training_ = on;
  on_train_mode(on);
  for (const auto& [_, child] : children_) child->train(on);
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (const auto& [_, p] : named_parameters(true))
    if (!trainable_only || p.requires_grad()) n += p.numel();
  return n;
}

void Module::zero_grad() {
  for (auto& p : parameters(true)) p.zero_grad();
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (const auto& [n, p] : named_parameters(true)) out.emplace(n, p.data());
  for (const auto& [n, b] : named_buffers(true)) out.emplace(n, b);
  return out;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  const std::map<std::string, Tensor> own = state_dict();
  if (strict) {
    std::string missing, unexpected;
    for (const auto& [k, _] : own)
      if (!state.count(k)) missing += (missing.empty() ? "" : ", ") + k;
    for (const auto& [k, _] : state)
      if (!own.count(k)) unexpected += (unexpected.empty() ? "" : ", ") + k;
    LOWBIT_CHECK(missing.empty() && unexpected.empty(), type_name(), "::load_state_dict: missing keys [", missing,
                 "], unexpected keys [", unexpected, "]");
  }
  // Validate everything before copying anything, so a failed load leaves the module unchanged.
  for (const auto& [k, dst] : own) {
    auto it = state.find(k);
    if (it == state.end()) continue;
    const Tensor& src = it->second;
    LOWBIT_CHECK(src.defined(), type_name(), "::load_state_dict: '", k, "' is undefined");
    LOWBIT_CHECK(src.shape() == dst.shape(), type_name(), "::load_state_dict: shape mismatch for '", k,
                 "': checkpoint ", shape_str(src.shape()), ", module ", shape_str(dst.shape()));
    LOWBIT_CHECK(!strict || src.dtype() == dst.dtype(), type_name(), "::load_state_dict: dtype mismatch for '", k,
                 "': checkpoint ", dtype_name(src.dtype()), ", module ", dtype_name(dst.dtype()));
  }
  for (const auto& [k, dst] : own) {
    auto it = state.find(k);
    if (it == state.end()) continue;
    Tensor d = dst;  // shares storage with the module's tensor
    d.copy_(it->second);
  }
}

void Module::to(DType dtype) {
  for (auto& [_, p] : params_) {
    if (!is_floating(p.dtype()) || p.dtype() == dtype) continue;
    p.zero_grad();
    p.mutable_data() = p.data().to(dtype);
  }
  for (auto& [_, b] : buffers_)
    if (b.defined() && is_floating(b.dtype()) && b.dtype() != dtype) b = b.to(dtype);
  for (const auto& [_, child] : children_) child->to(dtype);
}

void Module::str_impl(std::ostream& os, int indent) const {
  os << type_name() << "(";
  if (children_.empty()) {
    os << extra_repr() << ")";
    return;
  }
  const std::string pad(indent + 2, ' ');
  os << "\n";
  if (!extra_repr().empty()) os << pad << extra_repr() << "\n";
  for (const auto& [cname, child] : children_) {
    os << pad << "(" << cname << "): ";
    child->str_impl(os, indent + 2);
    os << "\n";
  }
  os << std::string(indent, ' ') << ")";
}

std::string Module::str() const {
  std::ostringstream os;
  str_impl(os, 0);
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Module& m) { return os << m.str(); }

}  // namespace lowbit
