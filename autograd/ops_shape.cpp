// Shape ops: views forward, the inverse movement backward.
#include <numeric>

#include "autograd/ops.h"
#include "core/math.h"

namespace lowbit {

Variable reshape(const Variable& a, const Shape& shape) {
  if (a.shape() == shape) return a;
  const Shape in_shape = a.shape();
  return make_result(a.data().reshape(shape), "reshape", {a}, [in_shape](const Variable& g, const Variable&) {
    return std::vector<Variable>{reshape(g, in_shape)};
  });
}

Variable permute(const Variable& a, const std::vector<int64_t>& dims) {
  std::vector<int64_t> inv(dims.size());
  for (size_t k = 0; k < dims.size(); ++k) inv[wrap_dim(dims[k], a.dim(), "permute")] = static_cast<int64_t>(k);
  return make_result(a.data().permute(dims), "permute", {a},
                     [inv](const Variable& g, const Variable&) { return std::vector<Variable>{permute(g, inv)}; });
}

Variable transpose(const Variable& a, int64_t d0, int64_t d1) {
  std::vector<int64_t> perm(a.dim());
  std::iota(perm.begin(), perm.end(), 0);
  std::swap(perm[wrap_dim(d0, a.dim(), "transpose")], perm[wrap_dim(d1, a.dim(), "transpose")]);
  return permute(a, perm);
}

Variable expand(const Variable& a, const Shape& shape) {
  if (a.shape() == shape) return a;
  const Shape in_shape = a.shape();
  return make_result(a.data().expand(shape), "expand", {a}, [in_shape](const Variable& g, const Variable&) {
    return std::vector<Variable>{sum_to(g, in_shape)};
  });
}

Variable narrow(const Variable& a, int64_t dim, int64_t start, int64_t length) {
  dim = wrap_dim(dim, a.dim(), "narrow");
  if (start < 0) start += a.size(dim);
  const int64_t full = a.size(dim);
  const int64_t nd = a.dim();
  return make_result(a.data().narrow(dim, start, length), "narrow", {a},
                     [dim, start, length, full, nd](const Variable& g, const Variable&) {
                       std::vector<int64_t> pads(2 * (nd - dim), 0);
                       pads[2 * (nd - 1 - dim)] = start;
                       pads[2 * (nd - 1 - dim) + 1] = full - start - length;
                       return std::vector<Variable>{pad(g, pads)};
                     });
}

Variable select(const Variable& a, int64_t dim, int64_t index) {
  dim = wrap_dim(dim, a.dim(), "select");
  if (index < 0) index += a.size(dim);
  return squeeze(narrow(a, dim, index, 1), dim);
}

Variable unsqueeze(const Variable& a, int64_t dim) {
  Shape s = a.shape();
  s.insert(s.begin() + wrap_dim(dim, a.dim() + 1, "unsqueeze"), 1);
  return reshape(a, s);
}

Variable squeeze(const Variable& a, int64_t dim) {
  dim = wrap_dim(dim, a.dim(), "squeeze");
  if (a.size(dim) != 1) return a;
  Shape s = a.shape();
  s.erase(s.begin() + dim);
  return reshape(a, s);
}

Variable flatten(const Variable& a, int64_t start_dim, int64_t end_dim) {
  return reshape(a, a.data().flatten(start_dim, end_dim).shape());
}

Variable contiguous(const Variable& a, MemoryFormat format) {
  if (a.data().is_contiguous(format)) return a;
  return make_result(a.data().contiguous(format), "contiguous", {a},
                     [](const Variable& g, const Variable&) { return std::vector<Variable>{g}; });
}

Variable cat(const std::vector<Variable>& parts, int64_t dim) {
  LOWBIT_CHECK(!parts.empty(), "cat: no variables given");
  dim = wrap_dim(dim, parts.front().dim(), "cat");
  std::vector<Tensor> data;
  std::vector<int64_t> sizes;
  for (const Variable& p : parts) {
    data.push_back(p.data());
    sizes.push_back(p.size(dim));
  }
  return make_result(math::cat(data, dim), "cat", parts, [dim, sizes](const Variable& g, const Variable&) {
    std::vector<Variable> grads;
    int64_t at = 0;
    for (int64_t s : sizes) {
      grads.push_back(narrow(g, dim, at, s));
      at += s;
    }
    return grads;
  });
}

Variable stack(const std::vector<Variable>& parts, int64_t dim) {
  LOWBIT_CHECK(!parts.empty(), "stack: no variables given");
  dim = wrap_dim(dim, parts.front().dim() + 1, "stack");
  std::vector<Variable> expanded;
  for (const Variable& p : parts) {
    LOWBIT_CHECK(p.shape() == parts.front().shape(), "stack: shapes ", shape_str(parts.front().shape()), " and ",
                 shape_str(p.shape()), " differ");
    expanded.push_back(unsqueeze(p, dim));
  }
  return cat(expanded, dim);
}

Variable pad(const Variable& a, const std::vector<int64_t>& pads, double value) {
  for (int64_t p : pads) LOWBIT_CHECK(p >= 0, "pad: negative padding is not differentiable here; use narrow");
  const int64_t nd = a.dim();
  const Shape in_shape = a.shape();
  return make_result(math::pad(a.data(), pads, value), "pad", {a},
                     [pads, nd, in_shape](const Variable& g, const Variable&) {
                       Variable r = g;
                       for (size_t k = 0; k < pads.size() / 2; ++k) {
                         const int64_t d = nd - 1 - static_cast<int64_t>(k);
                         r = narrow(r, d, pads[2 * k], in_shape[d]);
                       }
                       return std::vector<Variable>{r};
                     });
}

}  // namespace lowbit
