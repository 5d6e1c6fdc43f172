// The integer-only inference engine: runs a deploy::Model (deploy/model_file.h) on a batch of
// uint8 images. Between the input (the pixel bytes are the first layer's codes) and the final
// dequantize everything is integer: uint8 activation codes, int8 weights, int32 accumulators,
// requantization by integer multiplier and shift (core/kernels/requant.h), max pooling of codes.
//
// Contract
//   Engine(model)      validates the model, packs the weights for the int8 GEMM/convolution
//                      kernels and turns each layer's (scale, offset) into integer requantization
//                      constants (requantization_from_double), once. A layer with weights beyond
//                      int8 (16-bit float first/last layers, DoReFa at 8 bits) is split into int8
//                      halves, w = 256 hi + lo (lo = the low byte as int8), run as one layer of 2K
//                      outputs [hi; lo] (one im2col, one GEMM); the lo accumulators enter the
//                      requantization as its int32 residual (acc_hi * m + acc_lo * m', the
//                      multipliers 256 s and s), or dequantize computes scale (256 acc_hi +
//                      acc_lo) + offset: exact integer sums either way.
//   run(images, n, logits, path)
//                      images: n x H x W x C uint8 (NHWC, the data sets' layout); logits: n x
//                      classes floats. Path::fast uses core/kernels' fast int8 kernels (VNNI or
//                      portable, parallel), Path::reference their `_ref` twins, single-threaded:
//                      the two agree bit for bit (tests/test_deploy.cpp). Intermediate buffers are
//                      kept between calls (run is not reentrant on one Engine).
//   predict(...)       the arg-max class per image (ties: the lower class).
// The float logits are dequantize's scale * acc + offset evaluated in double and rounded to float.
#pragma once

#include <cstdint>
#include <vector>

#include "core/kernels/gemm_int8.h"
#include "core/kernels/requant.h"
#include "deploy/model_file.h"

namespace lowbit::deploy {

class Engine {
 public:
  enum class Path { fast, reference };

  explicit Engine(Model model, const std::string& name = "model");

  int64_t channels() const { return in_.C; }
  int64_t height() const { return in_.H; }
  int64_t width() const { return in_.W; }
  int64_t classes() const { return classes_; }
  const Model& model() const { return model_; }

  void run(const uint8_t* images, int64_t n, float* logits, Path path = Path::fast);
  std::vector<int32_t> predict(const uint8_t* images, int64_t n, Path path = Path::fast);

 private:
  struct Layer {
    size_t op = 0;
    bool wide = false;
    std::vector<int8_t> w;            // int8 weights, K outputs (wide: 2K, the hi halves then the lo halves)
    kernels::PackedS8 packed;         // the same, packed for the fast kernels
    kernels::Requantization requant;  // out_qmax > 0 (wide: with the lo accumulators as residual)
  };
  Model model_;
  InputOp in_;
  int64_t classes_ = 0;
  std::vector<ActShape> shapes_;
  std::vector<Layer> layers_;   // one per weight op, in order
  std::vector<uint8_t> a_, b_;  // ping-pong uint8 activations
  std::vector<int32_t> acc_;    // int32 accumulators ([rows][K], wide layers [rows][2K])
};

}  // namespace lowbit::deploy
