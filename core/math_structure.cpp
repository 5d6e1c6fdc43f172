// Structural ops (cat, stack, pad) and the softmax family.
#include <algorithm>
#include <cmath>

#include "core/math.h"
#include "core/parallel.h"

namespace lowbit::math {

Tensor cat(const std::vector<Tensor>& parts, int64_t dim) {
  LOWBIT_CHECK(!parts.empty(), "cat: no tensors given");
  const Tensor& first = parts.front();
  dim = wrap_dim(dim, first.dim(), "cat");
  Shape shape = first.shape();
  int64_t total = 0;
  for (const Tensor& p : parts) {
    LOWBIT_CHECK(p.dtype() == first.dtype(), "cat: dtype mismatch, ", dtype_name(p.dtype()), " vs ",
                 dtype_name(first.dtype()));
    LOWBIT_CHECK(p.dim() == first.dim(), "cat: rank mismatch, shapes ", shape_str(first.shape()), " and ",
                 shape_str(p.shape()));
    for (int64_t d = 0; d < p.dim(); ++d)
      LOWBIT_CHECK(d == dim || p.size(d) == first.size(d), "cat: shapes ", shape_str(first.shape()), " and ",
                   shape_str(p.shape()), " differ outside dimension ", dim);
    total += p.size(dim);
  }
  shape[dim] = total;
  Tensor out = Tensor::empty(shape, first.dtype());
  int64_t at = 0;
  for (const Tensor& p : parts) {
    out.narrow(dim, at, p.size(dim)).copy_(p);
    at += p.size(dim);
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& parts, int64_t dim) {
  LOWBIT_CHECK(!parts.empty(), "stack: no tensors given");
  dim = wrap_dim(dim, parts.front().dim() + 1, "stack");
  std::vector<Tensor> expanded;
  expanded.reserve(parts.size());
  for (const Tensor& p : parts) {
    LOWBIT_CHECK(p.shape() == parts.front().shape(), "stack: shapes ", shape_str(parts.front().shape()), " and ",
                 shape_str(p.shape()), " differ");
    expanded.push_back(p.unsqueeze(dim));
  }
  return cat(expanded, dim);
}

Tensor pad(const Tensor& a, const std::vector<int64_t>& pads, double value) {
  LOWBIT_CHECK(pads.size() % 2 == 0 && static_cast<int64_t>(pads.size()) / 2 <= a.dim(), "pad: ", pads.size(),
               " pad values for a ", a.dim(), "-d tensor (need pairs, at most two per dimension)");
  Shape shape = a.shape();
  Tensor src = a;
  std::vector<int64_t> lo(a.dim(), 0);
  for (size_t k = 0; k < pads.size() / 2; ++k) {
    const int64_t d = a.dim() - 1 - static_cast<int64_t>(k);
    const int64_t before = pads[2 * k], after = pads[2 * k + 1];
    shape[d] += before + after;
    LOWBIT_CHECK(shape[d] >= 0, "pad: negative output size for dimension ", d, " of shape ", shape_str(a.shape()));
    // Negative padding crops the source.
    const int64_t crop_lo = std::max<int64_t>(0, -before), crop_hi = std::max<int64_t>(0, -after);
    src = src.narrow(d, crop_lo, src.size(d) - crop_lo - crop_hi);
    lo[d] = std::max<int64_t>(0, before);
  }
  const bool channels_last = a.dim() == 4 && !a.is_contiguous() && a.is_contiguous(MemoryFormat::channels_last);
  Tensor out = Tensor::empty(shape, a.dtype(), channels_last ? MemoryFormat::channels_last : MemoryFormat::contiguous);
  out.fill_(value);
  Tensor region = out;
  for (int64_t d = 0; d < a.dim(); ++d) region = region.narrow(d, lo[d], src.size(d));
  region.copy_(src);
  return out;
}

namespace {
// Rows of length R along `dim`: the tensor is permuted so that dim is last and made contiguous.
template <class F>
Tensor along_rows(const Tensor& a, int64_t dim, const char* op, F row_fn) {
  LOWBIT_CHECK(is_floating(a.dtype()), op, ": expected a floating tensor, got ", dtype_name(a.dtype()));
  dim = wrap_dim(dim, a.dim(), op);
  if (a.dim() == 0) return along_rows(a.reshape({1}), 0, op, row_fn).reshape({});
  std::vector<int64_t> perm;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (d != dim) perm.push_back(d);
  perm.push_back(dim);
  const Tensor x = a.permute(perm).contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  const int64_t R = a.size(dim), O = x.numel() / std::max<int64_t>(R, 1);
  LOWBIT_DISPATCH_FLOAT(a.dtype(), op, [&] {
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* py = y.data<scalar_t>();
    parallel_for(0, O, std::max<int64_t>(1, 8192 / std::max<int64_t>(R, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t o = lo; o < hi; ++o) row_fn(px + o * R, py + o * R, R);
    });
  });
  std::vector<int64_t> inv(perm.size());
  for (size_t k = 0; k < perm.size(); ++k) inv[perm[k]] = static_cast<int64_t>(k);
  return y.permute(inv);
}

struct SoftmaxRow {
  bool log;
  template <class T>
  void operator()(const T* x, T* y, int64_t R) const {
    T mx = -INFINITY;
    for (int64_t r = 0; r < R; ++r) mx = std::max(mx, x[r]);
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += std::exp(double(x[r] - mx));
    if (log) {
      const T lse = mx + static_cast<T>(std::log(s));
      for (int64_t r = 0; r < R; ++r) y[r] = x[r] - lse;
    } else {
      const double inv = 1.0 / s;
      for (int64_t r = 0; r < R; ++r) y[r] = static_cast<T>(std::exp(double(x[r] - mx)) * inv);
    }
  }
};
}  // namespace

Tensor softmax(const Tensor& a, int64_t dim) {
  const SoftmaxRow row{false};
  return along_rows(a, dim, "softmax", [&](const auto* x, auto* y, int64_t R) { row(x, y, R); });
}

Tensor log_softmax(const Tensor& a, int64_t dim) {
  const SoftmaxRow row{true};
  return along_rows(a, dim, "log_softmax", [&](const auto* x, auto* y, int64_t R) { row(x, y, R); });
}

}  // namespace lowbit::math
