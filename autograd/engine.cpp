// The backward engine: topological order over the recorded graph (Kahn), one backward call per
// node, gradients summed where paths meet. A leaf's gradient is final once every node using it has
// run: the engine then hands it to `on_leaf_final` (backward() stores it and calls the leaf's hook).
#include <functional>
#include <unordered_map>
#include <unordered_set>

#include "autograd/ops.h"
#include "autograd/variable.h"
#include "core/math.h"

namespace lowbit {

Variable output_of(const std::shared_ptr<Node>& node);

namespace {

// acc + g. Without a recorded graph, acc's buffer takes the sum in place when nothing else can see it
// (its handle and its storage have no other owner, and it is a dense tensor of g's shape and dtype):
// the sums where paths meet (residual joins, the second backward of gradient-l1 training) then
// allocate nothing. Same values as add.
Variable accumulate(Variable& acc, const Variable& g, bool create_graph) {
  if (!acc.defined()) return g;
  if (!g.defined()) return acc;
  if (!create_graph && !acc.requires_grad() && acc.use_count() == 1 && acc.data().storage().use_count() == 1 &&
      acc.data().is_dense() && acc.dtype() == g.dtype() && acc.shape() == g.shape()) {
    math::add_(acc.mutable_data(), g.data());
    return acc;
  }
  return add(acc, g);
}

struct EngineResult {
  std::unordered_map<VariableImpl*, Variable> leaf_grads;  // leaves reached
  std::unordered_map<Node*, Variable> node_grads;          // captured nodes' output gradients
};

using LeafFinal = std::function<void(VariableImpl* leaf, const Variable& grad)>;

EngineResult run_engine(const std::vector<Variable>& outputs, const std::vector<Variable>& grad_outputs,
                        bool retain_graph, bool create_graph, const std::unordered_set<Node*>& capture,
                        const LeafFinal& on_leaf_final = {}) {
  GradModeGuard mode(create_graph);
  EngineResult res;
  std::unordered_map<Node*, Variable> pending;  // gradient flowing into each node's output
  std::unordered_map<Node*, int> deps;
  std::unordered_map<VariableImpl*, int> leaf_uses;  // edges from reachable nodes to each leaf
  std::vector<Node*> stack;
  std::vector<VariableImpl*> output_leaves;

  for (size_t i = 0; i < outputs.size(); ++i) {
    const Variable& out = outputs[i];
    LOWBIT_CHECK(out.requires_grad(), "backward: output ", i,
                 " does not require grad (no input requires grad, or it "
                 "was computed under NoGradGuard)");
    const Variable& g = grad_outputs[i];
    LOWBIT_CHECK(g.shape() == out.shape(), "backward: gradient of shape ", shape_str(g.shape()),
                 " for an output of shape ", shape_str(out.shape()));
    if (out.is_leaf()) {
      res.leaf_grads[out.impl()] = accumulate(res.leaf_grads[out.impl()], g, create_graph);
      output_leaves.push_back(out.impl());
      continue;
    }
    Node* n = out.grad_fn().get();
    pending[n] = accumulate(pending[n], g, create_graph);
    if (!deps.count(n)) {
      deps[n] = 0;
      stack.push_back(n);
    }
  }
  // Count, for every reachable node, how many reachable consumers feed it.
  std::vector<Node*> order = stack;
  std::unordered_set<Node*> seen(stack.begin(), stack.end());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    LOWBIT_CHECK(n->backward, "backward: the graph through '", n->name,
                 "' was already freed by an earlier backward pass; pass retain_graph=true to the first one");
    for (const Variable& in : n->inputs) {
      if (!in.requires_grad()) continue;
      if (in.is_leaf()) {
        ++leaf_uses[in.impl()];
        continue;
      }
      Node* m = in.grad_fn().get();
      ++deps[m];
      if (seen.insert(m).second) {
        stack.push_back(m);
        order.push_back(m);
      }
    }
  }
  auto leaf_used = [&](VariableImpl* leaf) {  // one use of `leaf` done: its gradient may be final
    if (--leaf_uses[leaf] > 0 || !on_leaf_final) return;
    auto it = res.leaf_grads.find(leaf);
    if (it != res.leaf_grads.end()) on_leaf_final(leaf, it->second);
  };
  for (VariableImpl* leaf : output_leaves) {  // an output that is a leaf no node uses: final already
    if (leaf_uses[leaf] == 0) ++leaf_uses[leaf], leaf_used(leaf);
  }
  std::vector<Node*> ready;
  for (Node* n : order)
    if (deps[n] == 0) ready.push_back(n);
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    Variable g_out = std::move(pending[n]);
    pending.erase(n);
    if (capture.count(n)) res.node_grads[n] = g_out;
    std::vector<Variable> grads;
    if (g_out.defined()) {
      const std::shared_ptr<Node> self = n->shared_from_this();
      grads = n->backward(g_out, output_of(self));
      LOWBIT_CHECK(grads.size() == n->inputs.size(), "backward of '", n->name, "' returned ", grads.size(),
                   " gradients for ", n->inputs.size(), " inputs");
    } else {
      grads.resize(n->inputs.size());
    }
    for (size_t i = 0; i < n->inputs.size(); ++i) {
      const Variable& in = n->inputs[i];
      if (!in.requires_grad()) continue;
      const Variable& g = grads[i];
      LOWBIT_CHECK(!g.defined() || g.shape() == in.shape(), "backward of '", n->name, "': gradient for input ", i,
                   " has shape ", shape_str(g.shape()), ", input has shape ", shape_str(in.shape()));
      if (in.is_leaf()) {
        if (g.defined()) res.leaf_grads[in.impl()] = accumulate(res.leaf_grads[in.impl()], g, create_graph);
        leaf_used(in.impl());
        continue;
      }
      Node* m = in.grad_fn().get();
      if (g.defined()) pending[m] = accumulate(pending[m], g, create_graph);
      if (--deps[m] == 0) ready.push_back(m);
    }
    if (!retain_graph) {
      n->backward = nullptr;
      n->saved_output = Tensor();
    }
  }
  return res;
}

std::vector<Variable> default_grads(const std::vector<Variable>& outputs, const std::vector<Variable>& given) {
  std::vector<Variable> g = given;
  if (g.empty()) g.resize(outputs.size());
  LOWBIT_CHECK(g.size() == outputs.size(), "grad: ", g.size(), " gradients given for ", outputs.size(), " outputs");
  for (size_t i = 0; i < g.size(); ++i) {
    if (g[i].defined()) continue;
    LOWBIT_CHECK(outputs[i].numel() == 1, "backward: output ", i, " of shape ", shape_str(outputs[i].shape()),
                 " is not a scalar; pass a gradient");
    g[i] = Variable(Tensor::full(outputs[i].shape(), 1.0, outputs[i].dtype()));
  }
  return g;
}

}  // namespace

void Variable::backward(const Variable& gradient, bool retain_graph, bool create_graph) const {
  LOWBIT_CHECK(defined(), "backward: undefined variable");
  const std::vector<Variable> outs{*this};
  const auto grads = default_grads(outs, {gradient});
  std::unordered_set<VariableImpl*> stored;
  // A final gradient into the leaf's grad(), then the leaf's hook.
  auto store = [&](VariableImpl* impl, const Variable& g) {
    if (!impl->requires_grad || !stored.insert(impl).second) return;
    // The stored gradient gets its own buffer in the leaf's layout (what optimizers read).
    Variable gv = g;
    if (!create_graph) {
      const Tensor& like = impl->data;
      const bool same_layout = like.is_dense() && like.shape() == g.shape() && like.dtype() == g.dtype();
      Tensor own = same_layout ? Tensor::empty_like(like) : g.data().clone();
      if (same_layout) own.copy_(g.data());
      gv = Variable(std::move(own));
    }
    if (impl->grad) {
      GradModeGuard mode(create_graph);
      Variable prev;
      prev.impl_ = impl->grad;
      gv = add(prev, gv);
    }
    impl->grad = gv.impl_;
    if (impl->grad_ready_hook) impl->grad_ready_hook();
  };
  EngineResult res = run_engine(outs, grads, retain_graph || create_graph, create_graph, {}, store);
  for (auto& [impl, g] : res.leaf_grads) store(impl, g);  // every leaf is final by now: a safety net
}

void Variable::set_grad_ready_hook(std::function<void()> hook) {
  LOWBIT_CHECK(defined() && is_leaf(), "set_grad_ready_hook: only leaves have gradient hooks");
  impl_->grad_ready_hook = std::move(hook);
}

std::vector<Variable> grad(const std::vector<Variable>& outputs, const std::vector<Variable>& inputs,
                           const std::vector<Variable>& grad_outputs, bool retain_graph, bool create_graph,
                           bool allow_unused) {
  const auto grads = default_grads(outputs, grad_outputs);
  std::unordered_set<Node*> capture;
  for (const Variable& in : inputs) {
    LOWBIT_CHECK(in.requires_grad(), "grad: an input does not require grad");
    if (!in.is_leaf()) capture.insert(in.grad_fn().get());
  }
  EngineResult res = run_engine(outputs, grads, retain_graph || create_graph, create_graph, capture);
  std::vector<Variable> out;
  out.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Variable& in = inputs[i];
    Variable g;
    if (in.is_leaf()) {
      auto it = res.leaf_grads.find(in.impl());
      if (it != res.leaf_grads.end()) g = it->second;
    } else {
      auto it = res.node_grads.find(in.grad_fn().get());
      if (it != res.node_grads.end()) g = it->second;
    }
    LOWBIT_CHECK(g.defined() || allow_unused, "grad: input ", i,
                 " is not reachable from the outputs (pass allow_unused=true to get an undefined gradient)");
    out.push_back(g);
  }
  return out;
}

}  // namespace lowbit
