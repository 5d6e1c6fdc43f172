// The integer-only inference engine: runs a deploy::Model (deploy/model_file.h) on a batch of
// uint8 images. Between the input (the pixel bytes are the first layer's codes) and the final
// dequantize everything is integer: uint8 activation codes, int8 weights, int32 accumulators,
// requantization by integer multiplier and shift (core/kernels/requant.h; signed codes: requant.h
// (1s), uint8 with zero point 128, whose readers' constants hold the zero point), max pooling of codes.
//
// Contract
//   Engine(model)      validates the model, packs the weights for the int8 GEMM/convolution
//                      kernels and turns each layer's (scale, residual_scale, offset) into integer
//                      requantization constants (requantization_from_double), once. A layer with
//                      weights beyond int8 (16-bit float first/last layers, DoReFa at 8 bits) is
//                      split into int8 halves, w = 256 hi + lo (lo = the low byte as int8), run as
//                      one layer of 2K outputs [hi; lo] (one im2col, one GEMM; depthwise: two
//                      passes). Without a residual the lo accumulators enter the requantization as
//                      its int32 residual (acc_hi * m + acc_lo * m', the multipliers of 256 s and
//                      s), or dequantize computes scale (256 acc_hi + acc_lo) + offset; with a
//                      residual, or read as one, the halves are combined into 256 acc_hi + acc_lo
//                      (int32 exactly: validate checks the bound). Exact integer sums either way.
//                      Padding codes that differ per channel (the first layer of a normalized
//                      RGB model) are applied by padding a copy of the input.
//   run(images, n, logits, path)
//                      images: n x H x W x C uint8 (NHWC, the data sets' layout); logits: n x
//                      classes floats. Ops run in order; each op's output lives in a buffer from
//                      a pool, returned once its last reader has run. Path::fast uses
//                      core/kernels' fast int8 kernels (VNNI or portable, parallel),
//                      Path::reference their `_ref` twins, single-threaded: the two agree bit for
//                      bit (tests/test_deploy.cpp). Buffers are kept between calls (run is not
//                      reentrant on one Engine). Path::fast runs image-parallel: the batch is cut
//                      into chunks of at most chunk_images() images, a whole number per thread, and
//                      each thread runs the whole network on one chunk at a time (its kernels serial,
//                      core/parallel.h's SerialScope; its own buffers), so a chunk's activations stay
//                      in the core's cache between layers and no layer forks and joins; a single
//                      image of a model of >= 100 M multiply-accumulates runs layer by layer instead,
//                      each layer's kernels parallel (a smaller model's layers gain less than their
//                      fork and join cost: engine.cpp). Every op is per image: the two schemes agree
//                      bit for bit.
//   chunk_images()     the chunk size: as many images as keep the largest set of buffers alive at
//                      once (activations, padded copies, scratch) within kChunkBytes (1 MiB, a
//                      core's L2 here), at least 1; set_chunk_images(c) overrides it (c >= 1; 0: back to
//                      that), and then batches of at most c images run layer by layer (for tests of
//                      either path at any batch).
//   predict(...)       the arg-max class per image (ties: the lower class).
//   EngineOptions::winograd (default on): 3x3 stride-1 convolutions (groups 1, int8 weights, C >= 8) whose
//                      input codes, padding included, are <= 63 run as the exact integer Winograd
//                      F(2x2, 3x3) (core/kernels/conv_int8_winograd.h) on the fast path when their
//                      weights qualify (pack_conv_weights_winograd_s8); the same integers as the
//                      direct kernels, so the outputs are bit-identical either way. winograd(op) says
//                      which layers took it.
// The float logits are dequantize's scale * acc + offset evaluated in double and rounded to float.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "core/kernels/conv_int8_winograd.h"
#include "core/kernels/gemm_int8.h"
#include "core/kernels/requant.h"
#include "core/kernels/shapes.h"
#include "deploy/model_file.h"

namespace lowbit::deploy {

struct EngineOptions {
  bool winograd = true;  // exact integer Winograd for the layers that qualify (off: direct kernels only)
};

class Engine {
 public:
  enum class Path { fast, reference };

  explicit Engine(Model model, const std::string& name = "model", EngineOptions options = {});

  int64_t channels() const { return in_.C; }
  int64_t height() const { return in_.H; }
  int64_t width() const { return in_.W; }
  int64_t classes() const { return classes_; }
  const Model& model() const { return model_; }
  // True when op i (a convolution) runs as the integer Winograd F(2x2, 3x3) on the fast path.
  bool winograd(size_t i) const { return i < layers_.size() && layers_[i].wino.has_value(); }
  // True when op i (a first layer's low-order pass) runs inside the GEMM of the layer that reads it, on
  // the fast path (fold_low_pass).
  bool folded(size_t i) const { return i < layers_.size() && layers_[i].folded; }

  void run(const uint8_t* images, int64_t n, float* logits, Path path = Path::fast);
  std::vector<int32_t> predict(const uint8_t* images, int64_t n, Path path = Path::fast);

  static constexpr int64_t kChunkBytes = int64_t(1) << 20;
  int64_t chunk_images() const { return chunk_override_ > 0 ? chunk_override_ : chunk_images_; }
  void set_chunk_images(int64_t c);
  // Whether Path::fast runs a batch of n layer by layer (else image-parallel; see run above).
  bool runs_layer_by_layer(int64_t n) const;

  // Per-op wall time of the runs since profiling was switched on (seconds, indexed like model().ops;
  // image-parallel runs: the threads' seconds divided by the thread count).
  void set_profiling(bool on) { profile_.assign(on ? model_.ops.size() : 0, 0.0); }
  const std::vector<double>& profile() const { return profile_; }

 private:
  struct Layer {
    bool wide = false;         // weights beyond int8: hi and lo halves
    bool combine = false;      // wide, with or read as a residual: 256 acc_hi + acc_lo in int32
    bool split_out = false;    // out_qmax 0, wide, not combined: [rows][2K] (hi, lo) for dequantize
    std::vector<int8_t> w;     // int8 weights, K outputs (wide: 2K, the hi halves then the lo halves)
    kernels::PackedS8 packed;  // the same, packed for the fast kernels (groups 1)
    std::optional<kernels::WinogradPackedS8> wino;  // ... and for the Winograd kernels, when the layer qualifies
    kernels::Requantization requant;                // out_qmax > 0
    std::vector<int32_t> correction;        // fractional padding values: [P][Q][K] fixed-point, added as a residual
    bool correction_into_residual = false;  // ... or added to the layer's int32 residual
    // Fast path, fold_low_pass: this wide conv's GEMM also computes its residual op's low-order pass
    // (packed holds 3K outputs [hi; lo; low]), with fused_correction in place of correction; the
    // pass itself is `folded` (not run).
    bool low_fused = false;
    std::vector<int32_t> fused_correction;
    bool folded = false;
  };
  struct Buffer {
    std::vector<uint8_t, kernels::Aligned64Allocator<uint8_t>> bytes;
    bool busy = false;
  };
  // What one run over a batch (or one chunk of it) writes besides its logits: one per thread in flight.
  struct Workspace {
    std::vector<Buffer> pool;
    std::vector<void*> out;           // per op: its output during run
    std::vector<int64_t> buffer_of;   // per op: its buffer in pool (-1: none)
    std::vector<int32_t> acc;         // scratch: wide layers' [rows][2K] accumulators
    std::vector<uint8_t> padded;      // scratch: the input padded with per-channel codes
    std::vector<int32_t> correction;  // a layer's fractional padding correction, repeated per image
    size_t correction_of = 0;         // ... of this op
    std::vector<double> profile;      // per op: seconds (empty: profiling off)
    bool busy = false;                // taken by a chunk in flight (guarded by Engine::mu_)
  };
  // The ops over n images into logits, with ws's buffers; fast path kernels parallel unless inside a SerialScope.
  void run_ops(Workspace& ws, const uint8_t* images, int64_t n, float* logits, bool ref);
  void run_weight_op(Workspace& ws, size_t i, int64_t n, bool ref);
  // The first layer's low-order pass (export's NAME.low: out_qmax 0, the same input and geometry,
  // read only as wide conv i's int32 residual) joins conv i's GEMM on the fast path: one conv of 3K
  // outputs whose epilogue reads the pass's accumulators from the block instead of an int32 tensor.
  // The pass pads with its own code, the layer with its codes: the difference on the padded taps,
  // fixed per output position, is taken off the fractional padding's correction (same units, 2^-F).
  void fold_low_pass(size_t i, const std::vector<int>& readers);
  // A wide conv with requantized outputs: the hi/lo halves combined in its GEMM's epilogue.
  void run_wide_conv(Workspace& ws, size_t i, const kernels::Conv2dGeometry& g, const uint8_t* x, uint8_t zp,
                     const int32_t* res32, const uint8_t* res8, uint8_t* out8, bool ref);
  // Bytes per image of the largest set of buffers alive at once (what chunk_images_ divides into kChunkBytes).
  int64_t bytes_per_image() const;

  Model model_;
  InputOp in_;
  int64_t classes_ = 0;
  std::vector<ActShape> shapes_;
  std::vector<Layer> layers_;                                 // per op (empty for ops without weights)
  std::vector<size_t> last_use_;                              // per op: the last op reading its output
  std::vector<std::unique_ptr<Workspace>> workspaces_;        // [0]: layer-by-layer runs; all: image-parallel chunks
  std::mutex mu_;                                             // guards the workspaces' busy flags
  int64_t chunk_images_ = 1;                                  // from bytes_per_image()
  int64_t chunk_override_ = 0;                                // set_chunk_images (0: none)
  int64_t macs_per_image_ = 0;                                // the convolutions' and linear layers'
  static constexpr int64_t kLayerParallelMacs = 100'000'000;  // one image from here: layer by layer, parallel
  std::vector<double> profile_;                               // per op: seconds (empty: profiling off)
};

}  // namespace lowbit::deploy
