// matmul with PyTorch semantics over the GEMM kernels.
#include "core/kernels/gemm.h"
#include "core/math.h"
#include "core/parallel.h"

namespace lowbit::math {
namespace {

// A matrix view usable by GEMM: row-major (ld = row stride) or transposed (ld = column stride).
struct MatView {
  bool trans = false;
  int64_t ld = 0;
};

bool gemm_view(const Tensor& m, MatView& v) {
  const int64_t r = m.dim() - 2, c = m.dim() - 1;
  const int64_t rows = m.size(r), cols = m.size(c);
  if (m.stride(c) == 1 || cols == 1) {
    const int64_t ld = rows == 1 ? cols : m.stride(r);
    if (ld >= std::max<int64_t>(cols, 1)) return v = {false, ld}, true;
  }
  if (m.stride(r) == 1 || rows == 1) {
    const int64_t ld = cols == 1 ? rows : m.stride(c);
    if (ld >= std::max<int64_t>(rows, 1)) return v = {true, ld}, true;
  }
  return false;
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  LOWBIT_CHECK(a_in.defined() && b_in.defined(), "matmul: undefined tensor");
  LOWBIT_CHECK(a_in.dtype() == b_in.dtype() && is_floating(a_in.dtype()),
               "matmul: need floating tensors of one dtype, got ", dtype_name(a_in.dtype()), " and ",
               dtype_name(b_in.dtype()));
  LOWBIT_CHECK(a_in.dim() >= 1 && b_in.dim() >= 1, "matmul: 0-d operand, shapes ", shape_str(a_in.shape()), " and ",
               shape_str(b_in.shape()));
  const bool a_vec = a_in.dim() == 1, b_vec = b_in.dim() == 1;
  const Tensor a = a_vec ? a_in.unsqueeze(0) : a_in;
  const Tensor b = b_vec ? b_in.unsqueeze(1) : b_in;
  const int64_t M = a.size(-2), K = a.size(-1), K2 = b.size(-2), N = b.size(-1);
  LOWBIT_CHECK(K == K2, "matmul: inner dimensions differ, shapes ", shape_str(a_in.shape()), " and ",
               shape_str(b_in.shape()));
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2), b_batch(b.shape().begin(), b.shape().end() - 2);
  const Shape batch = broadcast_shapes(a_batch, b_batch, "matmul");
  const int64_t B = shape_numel(batch);

  Shape a_full = batch, b_full = batch;
  a_full.insert(a_full.end(), {M, K});
  b_full.insert(b_full.end(), {K, N});
  // Collapse batch dims: each operand as [B, rows, cols] with a per-batch stride (0 if broadcast).
  // Each operand as [B, rows, cols] with a per-batch stride; reshape views when it can (and
  // keeps a broadcast operand at stride 0), copies otherwise.
  auto as_batched = [&](const Tensor& t, const Shape& full, MatView& v, int64_t& bstride) {
    Tensor flat = t.expand(full).reshape({B, full[full.size() - 2], full.back()});
    if (!gemm_view(flat, v)) {
      flat = flat.contiguous();
      gemm_view(flat, v);
    }
    bstride = B == 1 ? 0 : flat.stride(0);
    return flat;
  };
  MatView va, vb;
  int64_t sa = 0, sb = 0;
  const Tensor fa = as_batched(a, a_full, va, sa);
  const Tensor fb = as_batched(b, b_full, vb, sb);

  Tensor out = Tensor::empty({B, M, N}, a.dtype());
  LOWBIT_DISPATCH_FLOAT(a.dtype(), "matmul", [&] {
    const scalar_t* pa = fa.data<scalar_t>();
    const scalar_t* pb = fb.data<scalar_t>();
    scalar_t* pc = out.data<scalar_t>();
    auto run = [&](int64_t i, bool serial) {
      kernels::GemmArgs<scalar_t> g;
      g.trans_a = va.trans, g.trans_b = vb.trans;
      g.M = M, g.N = N, g.K = K;
      g.A = pa + i * sa, g.lda = va.ld;
      g.B = pb + i * sb, g.ldb = vb.ld;
      g.C = pc + i * M * N, g.ldc = N;
      g.beta = 0;
      if (serial) {
        kernels::gemm_serial(g);
      } else {
        kernels::gemm(g);
      }
    };
    if (B == 1) {
      run(0, false);
    } else {
      parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) run(i, true);
      });
    }
  });
  Shape out_shape = batch;
  if (!a_vec) out_shape.push_back(M);
  if (!b_vec) out_shape.push_back(N);
  return out.reshape(out_shape);
}

}  // namespace lowbit::math
