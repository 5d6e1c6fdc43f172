// Integer GEMM for quantized inference: C[M][N] (+)= A[M][K] * B[K][N], A uint8 (activation codes),
// B int8 (weight codes), C int32, all row-major. No zero points are subtracted: the product is the
// exact integer sum_k A[i][k] * B[k][j] (an activation zero point za is corrected by the caller with
// za * column_sums, see PackedS8).
//
// B is packed once (pack_b_s8, weights) into the layout the kernels read; A is read in place.
//
//   gemm_u8s8s32         fast path, parallel over blocks of rows and column panels (parallel_for);
//                        the blocks depend on the shape alone.
//   gemm_u8s8s32_serial  fast path, single-threaded: call it from inside a parallel region.
//   gemm_u8s8s32_ref     the plain triple loop over the unpacked B, int64 accumulation; throws
//                        lowbit::Error when a result does not fit int32. The twin the fast paths are
//                        pinned to, bit for bit (tests/test_kernels_int8.cpp).
//
// Paths: AVX-512 VNNI (vpdpbusd: 4 u8 x s8 products summed into each s32 lane, no saturation) when
// int8_vnni_enabled(), else a portable path (plain C++ over the same packed B). Both are exact, so
// they agree with each other and with the reference bit for bit, for any thread count.
//
// Range: |A B| <= 255 * 128 * K, so a result always fits int32 for K <= 65793 (without
// `accumulate`). Beyond, the fast paths wrap modulo 2^32 (never undefined behaviour) and the
// reference throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace lowbit::kernels {

// True when the int8 kernels (this header, conv_int8.h) take their AVX-512 VNNI path:
// cpu_has_avx512_vnni() && avx512_enabled(). Avx512Guard(false) (core/kernels/cpu.h) forces the
// portable paths, for tests and benchmarks.
bool int8_vnni_enabled();

// std::allocator with 64-byte alignment (packed panels start on cache lines).
template <class T>
struct Aligned64Allocator {
  using value_type = T;
  Aligned64Allocator() = default;
  template <class U>
  Aligned64Allocator(const Aligned64Allocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const Aligned64Allocator<U>&) const {
    return true;
  }
};

// B (K x N int8) in panels of `nr` columns. Panel p holds columns [p*nr, p*nr + nr) as k_padded/4
// groups ("quads") of nr x 4 bytes:
//   data[p * k_padded * nr + (k / 4) * nr * 4 + j * 4 + k % 4] = B[k][p*nr + j]
// zero where k >= K or p*nr + j >= N: one 64-byte vector holds 16 columns x 4 consecutive k, the
// operand layout of vpdpbusd. nr is 16, 32, 48 or 64 (the smallest multiple of 16 >= N, at most
// 64); it fixes the kernels' register block (rows x nr).
struct PackedS8 {
  int64_t K = 0, N = 0;
  int64_t k_padded = 0;  // K rounded up to a multiple of 4
  int64_t nr = 16;       // panel width in columns
  std::vector<int8_t, Aligned64Allocator<int8_t>> data;
  std::vector<int32_t> column_sums;  // [N]: sum_k B[k][j] (za * column_sums[j] corrects a zero point za)

  int64_t panels() const { return (N + nr - 1) / nr; }
};

// Packs B. trans_b == false: B is K x N with row stride ldb (B[k][j] = B[k*ldb + j]).
// trans_b == true: B is given transposed, N x K with row stride ldb (B[k][j] = B[j*ldb + k]): a
// Linear weight [out][in] or a convolution weight [K][R][S][C] (core/kernels/shapes.h) as it is.
PackedS8 pack_b_s8(int64_t K, int64_t N, const int8_t* B, int64_t ldb, bool trans_b);

struct GemmU8S8Args {
  int64_t M = 0;
  const uint8_t* A = nullptr;  // M x K (K = B->K), row stride lda >= K
  int64_t lda = 0;
  const PackedS8* B = nullptr;
  int32_t* C = nullptr;  // M x N (N = B->N), row stride ldc >= N; only the M x N block is written
  int64_t ldc = 0;
  bool accumulate = false;  // C += A B (else C = A B; C's previous content is ignored)
};

void gemm_u8s8s32(const GemmU8S8Args& g);
void gemm_u8s8s32_serial(const GemmU8S8Args& g);

// C (+)= A B with B unpacked (as pack_b_s8 reads it: K x N, or N x K when trans_b).
void gemm_u8s8s32_ref(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B, int64_t ldb,
                      bool trans_b, int32_t* C, int64_t ldc, bool accumulate);

namespace detail {

// Internal (core/kernels/conv_int8.cpp): C[0:rows, 0:N] = A B for an A whose row i is nseg segments
// of seg_len bytes (seg_len % 4 == 0, nseg * seg_len == B.k_padded), segment g of row i at
// a + i * lda + g * seg_stride: a convolution's receptive fields read in place (one segment per
// kernel row). Single-threaded; the fast path's kernels (VNNI or portable, as gemm_u8s8s32).
struct SegmentedA {
  const uint8_t* a = nullptr;
  int64_t rows = 0, lda = 0;
  int64_t nseg = 1, seg_len = 0, seg_stride = 0;
};
void gemm_u8s8s32_segmented(const SegmentedA& a, const PackedS8& B, int32_t* C, int64_t ldc);

}  // namespace detail

}  // namespace lowbit::kernels
