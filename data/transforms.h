// Per-sample image transforms for the DataLoader.
//
// Contract
//   A transform edits one float image in HWC order (ImageBuffer). The loader fills the buffer with
//   the raw pixel values 0..255; ToFloat divides by 255; Normalize then maps each channel to
//   (x - mean[c]) / std[c] with mean/std in [0, 1] units (torchvision's convention).
//   Random transforms draw from the Generator handed to apply(): the loader derives it from
//   (seed, epoch, sample index) with sample_generator(), so augmentation is independent of the
//   thread count, prefetching and batch position. Draw order inside a transform is fixed (crop:
//   top offset then left offset; flip: one uniform, flip when u < p).
//   No gradients: these are data-side operations on plain buffers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/random.h"

namespace lowbit::data {

struct ImageBuffer {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<float> pixels;  // HWC, height*width*channels values
  float& at(int64_t h, int64_t w, int64_t c) { return pixels[size_t((h * width + w) * channels + c)]; }
  float at(int64_t h, int64_t w, int64_t c) const { return pixels[size_t((h * width + w) * channels + c)]; }
};

struct Geometry {
  int64_t height, width, channels;
  bool operator==(const Geometry&) const = default;
};

class Transform {
 public:
  virtual ~Transform() = default;
  virtual void apply(ImageBuffer& img, Generator& rng) const = 0;
  // Output geometry for an input geometry (throws when the input does not fit the transform).
  virtual Geometry output_geometry(const Geometry& in) const { return in; }
  virtual std::string describe() const = 0;
};

// x / 255.
class ToFloat final : public Transform {
 public:
  void apply(ImageBuffer& img, Generator& rng) const override;
  std::string describe() const override { return "tofloat"; }
};

// Per-channel (x - mean[c]) / std[c]; one value broadcasts to every channel.
class Normalize final : public Transform {
 public:
  Normalize(std::vector<float> mean, std::vector<float> std);
  // "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn".
  static Normalize named(const std::string& dataset);
  void apply(ImageBuffer& img, Generator& rng) const override;
  Geometry output_geometry(const Geometry& in) const override;
  std::string describe() const override;
  const std::vector<float>& mean() const { return mean_; }
  const std::vector<float>& stddev() const { return std_; }

 private:
  std::vector<float> mean_, std_;
  std::string name_;
};

// Standard per-channel statistics of the training sets, pixels scaled to [0, 1].
struct ChannelStats {
  std::vector<float> mean, std;
};
ChannelStats mnist_stats();          // 0.1307, 0.3081
ChannelStats fashion_mnist_stats();  // 0.2860, 0.3530
ChannelStats cifar10_stats();        // (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
ChannelStats cifar100_stats();       // (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
ChannelStats svhn_stats();           // (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)

// Zero-pads `padding` pixels on every side, then cuts a size x size window at a uniformly drawn
// offset (top, left) in [0, H + 2*padding - size] x [0, W + 2*padding - size].
class RandomCrop final : public Transform {
 public:
  RandomCrop(int64_t size, int64_t padding = 0) : RandomCrop(size, size, padding) {}
  RandomCrop(int64_t height, int64_t width, int64_t padding);
  void apply(ImageBuffer& img, Generator& rng) const override;
  Geometry output_geometry(const Geometry& in) const override;
  std::string describe() const override;
  // The deterministic core: window of the padded image whose top-left corner is (top, left) in
  // padded coordinates.
  static void crop_padded(ImageBuffer& img, int64_t height, int64_t width, int64_t padding, int64_t top, int64_t left);

 private:
  int64_t height_, width_, padding_;
};

// Mirrors left-right with probability p.
class RandomHorizontalFlip final : public Transform {
 public:
  explicit RandomHorizontalFlip(double p = 0.5);
  void apply(ImageBuffer& img, Generator& rng) const override;
  std::string describe() const override;
  static void flip(ImageBuffer& img);

 private:
  double p_;
};

// Bilinear resize with half-pixel centres (PyTorch align_corners=False, no antialiasing).
class Resize final : public Transform {
 public:
  Resize(int64_t height, int64_t width);
  void apply(ImageBuffer& img, Generator& rng) const override;
  Geometry output_geometry(const Geometry& in) const override;
  std::string describe() const override;

 private:
  int64_t height_, width_;
};

// Central height x width window (top = (H - height) / 2 rounded down, likewise left).
class CenterCrop final : public Transform {
 public:
  CenterCrop(int64_t height, int64_t width);
  void apply(ImageBuffer& img, Generator& rng) const override;
  Geometry output_geometry(const Geometry& in) const override;
  std::string describe() const override;

 private:
  int64_t height_, width_;
};

// Photometric augmentations on 0..255 pixel values (place them before ToFloat), as tensorpack's
// imgaug.Brightness / imgaug.Contrast: x + U(-delta, delta), and x * r + mean_c * (1 - r) with
// r ~ U(lo, hi) and mean_c the image's mean of channel c; both clip to [0, 255].
class RandomBrightness final : public Transform {
 public:
  explicit RandomBrightness(double delta);
  void apply(ImageBuffer& img, Generator& rng) const override;
  std::string describe() const override;

 private:
  double delta_;
};

class RandomContrast final : public Transform {
 public:
  RandomContrast(double lo, double hi);
  void apply(ImageBuffer& img, Generator& rng) const override;
  std::string describe() const override;

 private:
  double lo_, hi_;
};

// A sequence of transforms applied in order.
class Compose {
 public:
  Compose() = default;
  Compose(std::vector<std::shared_ptr<const Transform>> transforms) : transforms_(std::move(transforms)) {}
  template <class T, class... Args>
  Compose& add(Args&&... args) {
    transforms_.push_back(std::make_shared<const T>(std::forward<Args>(args)...));
    return *this;
  }
  Compose& add(std::shared_ptr<const Transform> t);
  void apply(ImageBuffer& img, Generator& rng) const;
  Geometry output_geometry(Geometry in) const;
  std::string describe() const;
  size_t size() const { return transforms_.size(); }
  bool empty() const { return transforms_.empty(); }

 private:
  std::vector<std::shared_ptr<const Transform>> transforms_;
};

// Parses a comma-separated pipeline, e.g. "crop:32:4,flip,normalize:cifar10". Tokens:
//   tofloat | crop:SIZE[:PAD] | flip[:P] | resize:H[:W] | centercrop:H[:W] |
//   normalize:NAME | normalize:M1/M2/..:S1/S2/.. | brightness:DELTA | contrast:LO:HI
// brightness and contrast work on 0..255 values, so they must come before an explicit tofloat.
// Unless the spec names tofloat, ToFloat is inserted first, or right after the last brightness /
// contrast token; "" gives just ToFloat; "raw" gives an empty pipeline.
Compose parse_transforms(const std::string& spec);

// The generator of sample `index` in `epoch`: a Philox key derived from (seed, epoch, index).
Generator sample_generator(uint64_t seed, int64_t epoch, int64_t index);

// Bilinear resize of an HWC float image (half-pixel centres), shared by Resize and the readers.
void resize_bilinear_hwc(const float* in, int64_t h, int64_t w, int64_t c, float* out, int64_t out_h, int64_t out_w);

}  // namespace lowbit::data
