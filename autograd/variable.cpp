#include "autograd/variable.h"

#include "autograd/ops.h"

namespace lowbit {

namespace {
thread_local bool g_grad_enabled = true;
const std::string kEmptyName;
const std::shared_ptr<Node> kNoNode;
}  // namespace

bool GradMode::enabled() { return g_grad_enabled; }
void GradMode::set_enabled(bool on) { g_grad_enabled = on; }

Variable::Variable(Tensor data, bool requires_grad) : impl_(std::make_shared<VariableImpl>()) {
  LOWBIT_CHECK(!requires_grad || is_floating(data.dtype()), "Variable: only floating tensors can require grad, got ",
               dtype_name(data.dtype()));
  impl_->data = std::move(data);
  impl_->requires_grad = requires_grad;
}

const Tensor& Variable::data() const {
  LOWBIT_CHECK(impl_, "Variable: undefined variable");
  return impl_->data;
}

Tensor& Variable::mutable_data() {
  LOWBIT_CHECK(impl_, "Variable: undefined variable");
  return impl_->data;
}

bool Variable::requires_grad() const { return impl_ && impl_->requires_grad; }

Variable& Variable::requires_grad_(bool on) {
  LOWBIT_CHECK(impl_, "requires_grad_: undefined variable");
  LOWBIT_CHECK(is_leaf(), "requires_grad_: only leaves can change requires_grad (this is the result of ",
               impl_->grad_fn->name, ")");
  LOWBIT_CHECK(!on || is_floating(impl_->data.dtype()), "requires_grad_: only floating tensors can require grad");
  impl_->requires_grad = on;
  return *this;
}

bool Variable::is_leaf() const { return !impl_ || impl_->grad_fn == nullptr; }

const std::shared_ptr<Node>& Variable::grad_fn() const { return impl_ ? impl_->grad_fn : kNoNode; }

Variable Variable::grad() const {
  Variable g;
  if (impl_) g.impl_ = impl_->grad;
  return g;
}

void Variable::set_grad(const Variable& g) {
  LOWBIT_CHECK(impl_, "set_grad: undefined variable");
  LOWBIT_CHECK(!g.defined() || g.shape() == shape(), "set_grad: gradient shape ", shape_str(g.shape()),
               " differs from variable shape ", shape_str(shape()));
  impl_->grad = g.impl_;
}

void Variable::zero_grad() {
  if (impl_) impl_->grad.reset();
}

Variable Variable::detach() const {
  LOWBIT_CHECK(impl_, "detach: undefined variable");
  return Variable(impl_->data, false);
}

const std::string& Variable::name() const { return impl_ ? impl_->name : kEmptyName; }

Variable& Variable::set_name(std::string name) {
  LOWBIT_CHECK(impl_, "set_name: undefined variable");
  impl_->name = std::move(name);
  return *this;
}

Variable make_result(Tensor out, const char* op, std::vector<Variable> inputs, BackwardFn backward, bool save_output) {
  Variable result(std::move(out), false);
  if (!GradMode::enabled()) return result;
  bool needs_grad = false;
  for (const Variable& v : inputs) needs_grad = needs_grad || v.requires_grad();
  if (!needs_grad) return result;
  auto node = std::make_shared<Node>();
  node->name = op;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  node->out_shape = result.shape();
  node->out_dtype = result.dtype();
  if (save_output) node->saved_output = result.data();
  result.impl_->grad_fn = std::move(node);
  result.impl_->requires_grad = true;
  return result;
}

// A Variable standing for a node's output during backward: the saved tensor with the node as
// grad_fn, so a recorded backward pass differentiates through the output as well.
Variable output_of(const std::shared_ptr<Node>& node) {
  if (!node->saved_output.defined()) return Variable();
  Variable v(node->saved_output, false);
  v.impl_->grad_fn = node;
  v.impl_->requires_grad = true;
  return v;
}

}  // namespace lowbit
