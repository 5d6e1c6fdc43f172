// Strided iteration over N operands that share one (broadcast) shape: the loop machinery under
// every elementwise op, copy and conversion. Dimensions are coalesced where every operand is
// contiguous across them, so the innermost run is as long as possible; callers write the inner
// loop once for (len, strides) and it vectorises when the strides are 1 or 0.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>

#include "core/parallel.h"
#include "core/tensor.h"

namespace lowbit::detail {

template <size_t N>
struct StridedPlan {
  Shape shape;                   // coalesced, at least one dim
  std::array<Shape, N> strides;  // strides[k][d] in elements for operand k
  int64_t inner() const { return shape.back(); }
  int64_t rows() const { return shape.back() == 0 ? 0 : shape_numel(shape) / shape.back(); }  // empty: 0 rows
};

template <size_t N>
StridedPlan<N> make_plan(const Shape& shape, const std::array<Shape, N>& strides) {
  StridedPlan<N> p;
  // Drop size-1 dims (their stride is irrelevant) and visit the rest in the memory order of operand
  // 0 (the output): largest stride outermost, so a channels-last tensor runs its unit-stride C dim
  // innermost. Elementwise loops write each output element once, so any order gives the same result.
  std::vector<size_t> order;
  for (size_t d = 0; d < shape.size(); ++d)
    if (shape[d] != 1) order.push_back(d);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return std::abs(strides[0][a]) > std::abs(strides[0][b]); });
  for (size_t d : order) {
    p.shape.push_back(shape[d]);
    for (size_t k = 0; k < N; ++k) p.strides[k].push_back(strides[k][d]);
  }
  if (p.shape.empty()) {
    p.shape.push_back(1);
    for (size_t k = 0; k < N; ++k) p.strides[k].push_back(1);
    return p;
  }
  // Merge dim d into d+1 when all operands step across the boundary uniformly.
  Shape shp{p.shape[0]};
  std::array<Shape, N> st;
  for (size_t k = 0; k < N; ++k) st[k] = {p.strides[k][0]};
  for (size_t d = 1; d < p.shape.size(); ++d) {
    bool mergeable = true;
    for (size_t k = 0; k < N; ++k) mergeable = mergeable && st[k].back() == p.strides[k][d] * p.shape[d];
    if (mergeable) {
      shp.back() *= p.shape[d];
      for (size_t k = 0; k < N; ++k) st[k].back() = p.strides[k][d];
    } else {
      shp.push_back(p.shape[d]);
      for (size_t k = 0; k < N; ++k) st[k].push_back(p.strides[k][d]);
    }
  }
  p.shape = shp;
  p.strides = st;
  return p;
}

// Calls fn(offsets, inner_len, inner_strides) for each row in [row_begin, row_end), where a row
// is one index of all dims but the last, and offsets are the operands' element offsets.
template <size_t N, class F>
void plan_rows(const StridedPlan<N>& p, int64_t row_begin, int64_t row_end, F&& fn) {
  const int64_t nd = static_cast<int64_t>(p.shape.size());
  std::array<int64_t, N> inner_stride;
  for (size_t k = 0; k < N; ++k) inner_stride[k] = p.strides[k][nd - 1];
  if (nd == 1) {
    std::array<int64_t, N> off{};
    for (int64_t r = row_begin; r < row_end; ++r) fn(off, p.shape[0], inner_stride);
    return;
  }
  // Decompose row_begin into an index over dims [0, nd-1).
  Shape idx(nd - 1, 0);
  int64_t rem = row_begin;
  for (int64_t d = nd - 2; d >= 0; --d) {
    idx[d] = rem % p.shape[d];
    rem /= p.shape[d];
  }
  std::array<int64_t, N> off{};
  for (size_t k = 0; k < N; ++k)
    for (int64_t d = 0; d < nd - 1; ++d) off[k] += idx[d] * p.strides[k][d];
  for (int64_t r = row_begin; r < row_end; ++r) {
    fn(off, p.shape[nd - 1], inner_stride);
    for (int64_t d = nd - 2; d >= 0; --d) {
      ++idx[d];
      for (size_t k = 0; k < N; ++k) off[k] += p.strides[k][d];
      if (idx[d] < p.shape[d]) break;
      for (size_t k = 0; k < N; ++k) off[k] -= idx[d] * p.strides[k][d];
      idx[d] = 0;
    }
  }
}

// Calls fn for elements [lo, hi) of row `row` only (offsets advanced to element lo).
template <size_t N, class F>
void plan_row_segment(const StridedPlan<N>& p, int64_t row, int64_t lo, int64_t hi, F&& fn) {
  const int64_t nd = static_cast<int64_t>(p.shape.size());
  std::array<int64_t, N> off{}, inner_stride;
  for (size_t k = 0; k < N; ++k) inner_stride[k] = p.strides[k][nd - 1];
  int64_t rem = row;
  for (int64_t d = nd - 2; d >= 0; --d) {
    const int64_t i = rem % p.shape[d];
    rem /= p.shape[d];
    for (size_t k = 0; k < N; ++k) off[k] += i * p.strides[k][d];
  }
  for (size_t k = 0; k < N; ++k) off[k] += lo * inner_stride[k];
  fn(off, hi - lo, inner_stride);
}

// Parallel when the work is large: over blocks of rows, or, when rows are long (a dense tensor
// coalesces to one row), over fixed segments of kGrainElements of each row. Every element is
// visited once by the same inner loop, and the split depends on the shape alone, so results do
// not depend on the thread count.
template <size_t N, class F>
void plan_for_each(const StridedPlan<N>& p, F&& fn) {
  constexpr int64_t kGrainElements = 32768;
  const int64_t rows = p.rows(), inner = p.inner();
  if (inner > 2 * kGrainElements) {
    const int64_t pieces = (inner + kGrainElements - 1) / kGrainElements;
    parallel_for(0, rows * pieces, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t u = lo; u < hi; ++u) {
        const int64_t row = u / pieces, piece = u % pieces;
        plan_row_segment(p, row, piece * kGrainElements, std::min(inner, (piece + 1) * kGrainElements), fn);
      }
    });
    return;
  }
  const int64_t grain_rows = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, inner));
  parallel_for(0, rows, grain_rows, [&](int64_t lo, int64_t hi) { plan_rows(p, lo, hi, fn); });
}

// Strides of `t` broadcast to `shape` (stride 0 on expanded dims), right-aligned.
inline Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape s(shape.size(), 0);
  const int64_t off = static_cast<int64_t>(shape.size()) - t.dim();
  for (int64_t d = 0; d < t.dim(); ++d) s[off + d] = t.size(d) == 1 ? 0 : t.stride(d);
  return s;
}

}  // namespace lowbit::detail
