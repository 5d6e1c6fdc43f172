// Reductions. A dense input is read in memory order and its dims coalesced into the form
// [outer O, reduced R, inner I]; out[o, i] = reduce_r x[o, r, i]. Other patterns are first made
// contiguous with the kept dims in front. Every output element is produced by one sequential loop
// (full reductions and a few long columns: a fixed number of chunks, set by the shape alone,
// combined in order), so results do not depend on the thread count.
#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>

#include "core/math.h"
#include "core/parallel.h"

namespace lowbit::math {
namespace {

enum class ReduceKind { sum, max, min };

template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, float>, double, T>;

template <class Acc>
struct Reducer {
  ReduceKind kind;
  Acc init() const {
    switch (kind) {
      case ReduceKind::sum: return Acc(0);
      case ReduceKind::max: return -std::numeric_limits<Acc>::infinity();
      case ReduceKind::min: return std::numeric_limits<Acc>::infinity();
    }
    return Acc(0);
  }
  Acc combine(Acc a, Acc b) const {
    switch (kind) {
      case ReduceKind::sum: return a + b;
      case ReduceKind::max: return (a != a || a > b) ? a : b;
      case ReduceKind::min: return (a != a || a < b) ? a : b;
    }
    return a;
  }
};

std::vector<bool> reduced_mask(const Tensor& a, const std::vector<int64_t>& dims, const char* op) {
  std::vector<bool> mask(a.dim(), dims.empty());
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, a.dim(), op);
    LOWBIT_CHECK(!mask[w] || dims.empty(), op, ": dimension ", w, " listed twice");
    mask[w] = true;
  }
  return mask;
}

struct OriPlan {
  int64_t O = 1, R = 1, I = 1;
  Shape out_shape;    // keepdim shape
  Shape out_strides;  // dense, kept dims in input memory order
};

// Tries to express a dense tensor's reduction as [O, R, I] in memory order.
bool make_ori(const Tensor& a, const std::vector<bool>& mask, OriPlan& plan) {
  const int64_t nd = a.dim();
  std::vector<int64_t> order(nd);
  std::iota(order.begin(), order.end(), 0);
  // Memory order, outermost first; ties (size-1 dims) keep logical order.
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return a.stride(x) > a.stride(y); });
  std::vector<std::pair<int64_t, bool>> runs;  // (size, reduced) in memory order, size>1 only
  for (int64_t d : order) {
    if (a.size(d) == 1) continue;
    if (!runs.empty() && runs.back().second == mask[d]) {
      runs.back().first *= a.size(d);
    } else {
      runs.emplace_back(a.size(d), mask[d]);
    }
  }
  size_t i = 0;
  if (i < runs.size() && !runs[i].second) plan.O = runs[i++].first;
  if (i < runs.size() && runs[i].second) plan.R = runs[i++].first;
  if (i < runs.size() && !runs[i].second) plan.I = runs[i++].first;
  if (i != runs.size()) return false;
  plan.out_shape = a.shape();
  for (int64_t d = 0; d < nd; ++d)
    if (mask[d]) plan.out_shape[d] = 1;
  plan.out_strides.assign(nd, 0);
  int64_t acc = 1;
  for (int64_t k = nd - 1; k >= 0; --k) {
    const int64_t d = order[k];
    plan.out_strides[d] = acc;
    acc *= plan.out_shape[d];
  }
  return true;
}

template <class T>
void reduce_ori(const T* x, T* out, const OriPlan& p, ReduceKind kind) {
  using Acc = acc_t<T>;
  const Reducer<Acc> red{kind};
  const int64_t O = p.O, R = p.R, I = p.I;
  if (O == 1 && I == 1) {
    // Full reduction of one long run: fixed chunks, combined in order.
    constexpr int64_t kChunks = 16;
    const int64_t chunks = std::min<int64_t>(kChunks, std::max<int64_t>(1, R / 4096));
    std::vector<Acc> partial(chunks, red.init());
    parallel_chunks(0, R, chunks, [&](int64_t c, int64_t lo, int64_t hi) {
      Acc acc = red.init();
      if (kind == ReduceKind::sum) {
        for (int64_t r = lo; r < hi; ++r) acc += static_cast<Acc>(x[r]);
      } else {
        for (int64_t r = lo; r < hi; ++r) acc = red.combine(acc, static_cast<Acc>(x[r]));
      }
      partial[c] = acc;
    });
    Acc acc = red.init();
    for (Acc v : partial) acc = red.combine(acc, v);
    out[0] = static_cast<T>(acc);
    return;
  }
  if (I == 1) {
    parallel_for(0, O, std::max<int64_t>(1, 16384 / std::max<int64_t>(R, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t o = lo; o < hi; ++o) {
        const T* row = x + o * R;
        Acc acc = red.init();
        if (kind == ReduceKind::sum) {
          for (int64_t r = 0; r < R; ++r) acc += static_cast<Acc>(row[r]);
        } else {
          for (int64_t r = 0; r < R; ++r) acc = red.combine(acc, static_cast<Acc>(row[r]));
        }
        out[o] = static_cast<T>(acc);
      }
    });
    return;
  }
  // Inner columns: parallel over (o, block of i); each output column summed over r in order.
  constexpr int64_t kBlock = 256;
  const int64_t blocks_per_o = (I + kBlock - 1) / kBlock;
  if (O * blocks_per_o < 4 && R >= 8192) {
    // Few, long columns (a conv bias gradient: sum over N*H*W of a channels-last [.., C] tensor):
    // a fixed number of row chunks (a function of R alone) reduced in parallel, partial results
    // combined in chunk order.
    const int64_t chunks = std::min<int64_t>(16, R / 4096);
    std::vector<Acc> partial(static_cast<size_t>(chunks * O * I));
    parallel_chunks(0, R, chunks, [&](int64_t c, int64_t lo, int64_t hi) {
      for (int64_t o = 0; o < O; ++o) {
        Acc* acc = partial.data() + (c * O + o) * I;
        for (int64_t j = 0; j < I; ++j) acc[j] = red.init();
        for (int64_t r = lo; r < hi; ++r) {
          const T* row = x + (o * R + r) * I;
          if (kind == ReduceKind::sum) {
            for (int64_t j = 0; j < I; ++j) acc[j] += static_cast<Acc>(row[j]);
          } else {
            for (int64_t j = 0; j < I; ++j) acc[j] = red.combine(acc[j], static_cast<Acc>(row[j]));
          }
        }
      }
    });
    for (int64_t o = 0; o < O; ++o)
      for (int64_t j = 0; j < I; ++j) {
        Acc acc = partial[o * I + j];
        for (int64_t c = 1; c < chunks; ++c) acc = red.combine(acc, partial[(c * O + o) * I + j]);
        out[o * I + j] = static_cast<T>(acc);
      }
    return;
  }
  parallel_for(0, O * blocks_per_o, std::max<int64_t>(1, 16384 / std::max<int64_t>(R * kBlock, 1)),
               [&](int64_t lo, int64_t hi) {
                 Acc acc[kBlock];
                 for (int64_t t = lo; t < hi; ++t) {
                   const int64_t o = t / blocks_per_o, i0 = (t % blocks_per_o) * kBlock;
                   const int64_t n = std::min(kBlock, I - i0);
                   for (int64_t j = 0; j < n; ++j) acc[j] = red.init();
                   const T* base = x + o * R * I + i0;
                   for (int64_t r = 0; r < R; ++r) {
                     const T* row = base + r * I;
                     if (kind == ReduceKind::sum) {
                       for (int64_t j = 0; j < n; ++j) acc[j] += static_cast<Acc>(row[j]);
                     } else {
                       for (int64_t j = 0; j < n; ++j) acc[j] = red.combine(acc[j], static_cast<Acc>(row[j]));
                     }
                   }
                   T* o_ptr = out + o * I + i0;
                   for (int64_t j = 0; j < n; ++j) o_ptr[j] = static_cast<T>(acc[j]);
                 }
               });
}

Tensor reduce(const Tensor& a_in, const std::vector<int64_t>& dims, bool keepdim, ReduceKind kind, const char* op) {
  LOWBIT_CHECK(a_in.defined(), op, ": undefined tensor");
  LOWBIT_CHECK(is_floating(a_in.dtype()), op, ": expected a floating tensor, got ", dtype_name(a_in.dtype()));
  const std::vector<bool> mask = reduced_mask(a_in, dims, op);
  if (kind != ReduceKind::sum)
    for (int64_t d = 0; d < a_in.dim(); ++d)
      LOWBIT_CHECK(!mask[d] || a_in.size(d) > 0, op, ": cannot reduce an empty dimension of shape ",
                   shape_str(a_in.shape()));
  Tensor a = a_in.is_dense() ? a_in : a_in.contiguous();
  OriPlan plan;
  if (!make_ori(a, mask, plan)) {
    // Kept dims first, reduced last, row-major.
    std::vector<int64_t> perm;
    for (int64_t d = 0; d < a.dim(); ++d)
      if (!mask[d]) perm.push_back(d);
    for (int64_t d = 0; d < a.dim(); ++d)
      if (mask[d]) perm.push_back(d);
    Tensor pc = a.permute(perm).contiguous();
    std::vector<bool> pmask(a.dim());
    for (int64_t k = 0; k < a.dim(); ++k) pmask[k] = mask[perm[k]];
    OriPlan pplan;
    const bool ok = make_ori(pc, pmask, pplan);
    LOWBIT_CHECK(ok, op, ": internal error planning reduction");
    // Output of the permuted problem, then undo the permutation of the (keepdim) result.
    Tensor pout = Tensor::empty_strided(pplan.out_shape, pplan.out_strides, a.dtype());
    LOWBIT_DISPATCH_FLOAT(a.dtype(), op, [&] { reduce_ori(pc.data<scalar_t>(), pout.data<scalar_t>(), pplan, kind); });
    std::vector<int64_t> inv(perm.size());
    for (size_t k = 0; k < perm.size(); ++k) inv[perm[k]] = static_cast<int64_t>(k);
    Tensor out = pout.permute(inv);
    if (!keepdim) {
      for (int64_t d = a.dim() - 1; d >= 0; --d)
        if (mask[d]) out = out.squeeze(d);
    }
    return out;
  }
  Tensor out = Tensor::empty_strided(plan.out_shape, plan.out_strides, a.dtype());
  if (a.numel() == 0) {
    out.fill_(0);
  } else {
    LOWBIT_DISPATCH_FLOAT(a.dtype(), op, [&] { reduce_ori(a.data<scalar_t>(), out.data<scalar_t>(), plan, kind); });
  }
  if (!keepdim) {
    for (int64_t d = a.dim() - 1; d >= 0; --d)
      if (mask[d]) out = out.squeeze(d);
  }
  return out;
}

int64_t reduced_count(const Tensor& a, const std::vector<int64_t>& dims) {
  const std::vector<bool> mask = reduced_mask(a, dims, "mean");
  int64_t n = 1;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (mask[d]) n *= a.size(d);
  return n;
}

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce(a, dims, keepdim, ReduceKind::sum, "sum");
}

Tensor mean(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  const int64_t n = reduced_count(a, dims);
  LOWBIT_CHECK(n > 0, "mean: reducing over zero elements of shape ", shape_str(a.shape()));
  Tensor s = reduce(a, dims, keepdim, ReduceKind::sum, "mean");
  mul_(s, 1.0 / double(n));
  return s;
}

bool all_finite(const Tensor& a_in) {
  if (!is_floating(a_in.dtype()) || a_in.numel() == 0) return true;
  const Tensor a = a_in.contiguous();
  return LOWBIT_DISPATCH_FLOAT(a.dtype(), "all_finite", [&] {
    // NaN and +-inf are the values whose exponent bits are all ones. An OR over integer lanes
    // vectorizes (a sum of x * 0 is a serial floating-point chain); chunks of 64 K values run in
    // parallel. The fit loop checks every gradient and weight each step (train/fit.cpp).
    using bits_t = std::conditional_t<sizeof(scalar_t) == 4, uint32_t, uint64_t>;
    constexpr bits_t exponent = sizeof(scalar_t) == 4 ? bits_t(0x7f800000u) : bits_t(0x7ff0000000000000ull);
    const scalar_t* p = a.data<scalar_t>();
    const int64_t n = a.numel(), chunk = int64_t(1) << 16;
    std::atomic<bool> bad{false};
    parallel_for(0, (n + chunk - 1) / chunk, 2, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1 && !bad.load(std::memory_order_relaxed); ++c) {
        const int64_t i1 = std::min(n, (c + 1) * chunk);
        bool any = false;
        for (int64_t i = c * chunk; i < i1; ++i) any |= (std::bit_cast<bits_t>(p[i]) & exponent) == exponent;
        if (any) bad.store(true, std::memory_order_relaxed);
      }
    });
    return !bad.load();
  });
}

Tensor amax(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce(a, dims, keepdim, ReduceKind::max, "amax");
}

double max_abs(const Tensor& a_in) {
  LOWBIT_CHECK(is_floating(a_in.dtype()), "max_abs: expected a floating tensor, got ", dtype_name(a_in.dtype()));
  if (a_in.numel() == 0) return 0;
  const Tensor a = a_in.is_dense() ? a_in : a_in.contiguous();  // dense: the first numel() elements
  return LOWBIT_DISPATCH_FLOAT(a.dtype(), "max_abs", [&] {
    const scalar_t* p = a.data<scalar_t>();
    const int64_t n = a.numel(), chunk = int64_t(1) << 16, chunks = (n + chunk - 1) / chunk;
    std::vector<double> part(size_t(chunks), 0.0);  // each chunk's max, NaN if it holds one
    parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        // 16 lanes (the inner loop vectorizes); x != x marks a NaN, which max would skip.
        constexpr int64_t kLanes = 16;
        scalar_t lane[kLanes] = {};
        bool any_nan = false;
        int64_t i = c * chunk;
        const int64_t i1 = std::min(n, i + chunk);
        for (; i + kLanes <= i1; i += kLanes)
          for (int64_t j = 0; j < kLanes; ++j) {
            const scalar_t v = p[i + j];
            any_nan |= v != v;
            lane[j] = std::max(lane[j], std::abs(v));
          }
        scalar_t m = 0;
        for (; i < i1; ++i) any_nan |= p[i] != p[i], m = std::max(m, std::abs(p[i]));
        for (int64_t j = 0; j < kLanes; ++j) m = std::max(m, lane[j]);
        part[size_t(c)] = any_nan ? std::numeric_limits<double>::quiet_NaN() : double(m);
      }
    });
    double m = 0;
    for (double v : part) {
      if (std::isnan(v)) return v;
      m = std::max(m, v);
    }
    return m;
  });
}

Tensor max_abs_grad(const Tensor& a_in, double m, double scale) {
  const Tensor a = a_in.is_dense() ? a_in : a_in.contiguous();
  Tensor out = Tensor::empty_like(a);
  LOWBIT_DISPATCH_FLOAT(a.dtype(), "max_abs_grad", [&] {
    const scalar_t* p = a.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    const scalar_t top = scalar_t(m);
    const int64_t n = a.numel();
    std::atomic<int64_t> ties{0};  // the elements at the maximum (an integer count: order-free)
    parallel_for(0, n, 1 << 15, [&](int64_t i0, int64_t i1) {
      int64_t k = 0;
      for (int64_t i = i0; i < i1; ++i) k += std::abs(p[i]) == top;
      ties += k;
    });
    const scalar_t share = ties.load() > 0 ? scalar_t(scale / double(ties.load())) : scalar_t(0);
    parallel_for(0, n, 1 << 15, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        o[i] = std::abs(p[i]) == top ? share * scalar_t((p[i] > scalar_t(0)) - (p[i] < scalar_t(0))) : scalar_t(0);
    });
  });
  return out;
}

double max_abs_ref(const Tensor& a) { return a.numel() == 0 ? 0.0 : amax(abs(a)).item(); }

Tensor max_abs_grad_ref(const Tensor& a, double m, double scale) {
  // amax's gradient (equal shares among the tied maxima of |a|) times abs's (sign a).
  const Tensor hit = eq(abs(a), Tensor::full({}, m, a.dtype()));
  return mul(mul(div(hit, sum(hit)), sign(a)), scale);
}

Tensor amin(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce(a, dims, keepdim, ReduceKind::min, "amin");
}

Tensor var(const Tensor& a, const std::vector<int64_t>& dims, bool unbiased, bool keepdim) {
  const int64_t n = reduced_count(a, dims);
  LOWBIT_CHECK(n > (unbiased ? 1 : 0), "var: need more than ", unbiased ? 1 : 0, " elements, shape ",
               shape_str(a.shape()));
  // Two passes: mean, then mean squared deviation.
  const Tensor centered = sub(a, mean(a, dims, true));
  Tensor s = sum(mul(centered, centered), dims, keepdim);
  mul_(s, 1.0 / double(unbiased ? n - 1 : n));
  return s;
}

Tensor argmax(const Tensor& a, int64_t dim, bool keepdim) {
  LOWBIT_CHECK(is_floating(a.dtype()), "argmax: expected a floating tensor, got ", dtype_name(a.dtype()));
  dim = wrap_dim(dim, a.dim(), "argmax");
  LOWBIT_CHECK(a.dim() == 0 || a.size(dim) > 0, "argmax: empty dimension in shape ", shape_str(a.shape()));
  std::vector<int64_t> perm;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (d != dim) perm.push_back(d);
  if (a.dim() > 0) perm.push_back(dim);
  const Tensor pc = a.permute(perm).contiguous();
  const int64_t R = a.dim() == 0 ? 1 : a.size(dim);
  const int64_t O = pc.numel() / R;
  Shape out_shape(pc.shape().begin(), pc.shape().end() - (a.dim() > 0 ? 1 : 0));
  Tensor out = Tensor::empty(out_shape, DType::i32);
  int32_t* po = out.data<int32_t>();
  LOWBIT_DISPATCH_FLOAT(a.dtype(), "argmax", [&] {
    const scalar_t* x = pc.data<scalar_t>();
    parallel_for(0, O, 1024, [&](int64_t lo, int64_t hi) {
      for (int64_t o = lo; o < hi; ++o) {
        const scalar_t* row = x + o * R;
        int64_t best = 0;
        for (int64_t r = 1; r < R; ++r)
          if (row[r] > row[best] || (row[r] != row[r] && row[best] == row[best])) best = r;
        po[o] = static_cast<int32_t>(best);
      }
    });
  });
  return keepdim && a.dim() > 0 ? out.unsqueeze(dim) : out;
}

Tensor sum_to(const Tensor& a, const Shape& shape) {
  if (a.shape() == shape) return a;
  LOWBIT_CHECK(broadcast_shapes(a.shape(), shape, "sum_to") == a.shape(), "sum_to: shape ", shape_str(shape),
               " does not broadcast to ", shape_str(a.shape()));
  const int64_t lead = a.dim() - static_cast<int64_t>(shape.size());
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (d < lead || (shape[d - lead] == 1 && a.size(d) != 1)) dims.push_back(d);
  if (dims.empty()) return a.reshape(shape);
  return sum(a, dims, true).reshape(shape);
}

}  // namespace lowbit::math
