#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "core/error.h"

namespace lowbit::data {

// ---------------------------------------------------------------------------------------------
// Random streams
// ---------------------------------------------------------------------------------------------
Generator sample_generator(uint64_t seed, int64_t epoch, int64_t index) {
  // One Philox block keyed by the seed, counter (stream tag | epoch, index), gives the sample's key.
  constexpr uint64_t kAugmentTag = uint64_t(0xa06) << 48;
  const auto r = philox4x32(seed, kAugmentTag ^ uint64_t(epoch), uint64_t(index));
  return Generator((uint64_t(r[0]) << 32) | r[1]);
}

// ---------------------------------------------------------------------------------------------
// ToFloat, Normalize
// ---------------------------------------------------------------------------------------------
void ToFloat::apply(ImageBuffer& img, Generator&) const {
  for (float& v : img.pixels) v /= 255.0f;  // exact x / 255, not x * (1 / 255)
}

ChannelStats mnist_stats() { return {{0.1307f}, {0.3081f}}; }
ChannelStats fashion_mnist_stats() { return {{0.2860f}, {0.3530f}}; }
ChannelStats cifar10_stats() { return {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}}; }
ChannelStats cifar100_stats() { return {{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}}; }
ChannelStats svhn_stats() { return {{0.4377f, 0.4438f, 0.4728f}, {0.1980f, 0.2010f, 0.1970f}}; }

Normalize::Normalize(std::vector<float> mean, std::vector<float> std) : mean_(std::move(mean)), std_(std::move(std)) {
  LOWBIT_CHECK(!mean_.empty() && mean_.size() == std_.size(), "Normalize: ", mean_.size(), " means and ", std_.size(),
               " standard deviations (need the same positive number)");
  for (float s : std_) LOWBIT_CHECK(s > 0, "Normalize: standard deviation ", s, " must be positive");
}

Normalize Normalize::named(const std::string& dataset) {
  ChannelStats s;
  if (dataset == "mnist")
    s = mnist_stats();
  else if (dataset == "fashion-mnist")
    s = fashion_mnist_stats();
  else if (dataset == "cifar10")
    s = cifar10_stats();
  else if (dataset == "cifar100")
    s = cifar100_stats();
  else if (dataset == "svhn")
    s = svhn_stats();
  else
    throw Error("Normalize::named: unknown data set \"" + dataset +
                "\" (mnist, fashion-mnist, cifar10, cifar100, svhn)");
  Normalize n(s.mean, s.std);
  n.name_ = dataset;
  return n;
}

Geometry Normalize::output_geometry(const Geometry& in) const {
  LOWBIT_CHECK(mean_.size() == 1 || int64_t(mean_.size()) == in.channels, "Normalize: ", mean_.size(),
               " channel statistics for images with ", in.channels, " channels");
  return in;
}

void Normalize::apply(ImageBuffer& img, Generator&) const {
  output_geometry({img.height, img.width, img.channels});
  const int64_t C = img.channels;
  float scale[16], shift[16];
  std::vector<float> scale_v, shift_v;
  float* sc = scale;
  float* sh = shift;
  if (C > 16) scale_v.resize(size_t(C)), shift_v.resize(size_t(C)), sc = scale_v.data(), sh = shift_v.data();
  for (int64_t c = 0; c < C; ++c) {
    const size_t k = mean_.size() == 1 ? 0 : size_t(c);
    sc[c] = 1.0f / std_[k];
    sh[c] = -mean_[k] / std_[k];
  }
  float* p = img.pixels.data();
  const int64_t n = img.height * img.width;
  for (int64_t i = 0; i < n; ++i, p += C)
    for (int64_t c = 0; c < C; ++c) p[c] = p[c] * sc[c] + sh[c];
}

std::string Normalize::describe() const {
  if (!name_.empty()) return "normalize:" + name_;
  std::ostringstream os;
  os << "normalize:";
  for (size_t i = 0; i < mean_.size(); ++i) os << (i ? "/" : "") << mean_[i];
  os << ":";
  for (size_t i = 0; i < std_.size(); ++i) os << (i ? "/" : "") << std_[i];
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// Crops, flip, resize
// ---------------------------------------------------------------------------------------------
RandomCrop::RandomCrop(int64_t height, int64_t width, int64_t padding)
    : height_(height), width_(width), padding_(padding) {
  LOWBIT_CHECK(height > 0 && width > 0 && padding >= 0, "RandomCrop: bad size ", height, "x", width, " or padding ",
               padding);
}

Geometry RandomCrop::output_geometry(const Geometry& in) const {
  LOWBIT_CHECK(in.height + 2 * padding_ >= height_ && in.width + 2 * padding_ >= width_, "RandomCrop: ", height_, "x",
               width_, " window does not fit a ", in.height, "x", in.width, " image padded by ", padding_);
  return {height_, width_, in.channels};
}

void RandomCrop::crop_padded(ImageBuffer& img, int64_t height, int64_t width, int64_t padding, int64_t top,
                             int64_t left) {
  const int64_t H = img.height, W = img.width, C = img.channels;
  LOWBIT_CHECK(top >= 0 && left >= 0 && top + height <= H + 2 * padding && left + width <= W + 2 * padding,
               "RandomCrop: window at (", top, ", ", left, ") of size ", height, "x", width, " outside the ", H, "x", W,
               " image padded by ", padding);
  std::vector<float> out(size_t(height * width * C), 0.0f);
  for (int64_t y = 0; y < height; ++y) {
    const int64_t sy = y + top - padding;
    if (sy < 0 || sy >= H) continue;
    // Source columns [x0, x1) of this row land in the window.
    const int64_t x_lo = std::max<int64_t>(0, padding - left), x_hi = std::min<int64_t>(width, W + padding - left);
    if (x_hi <= x_lo) continue;
    const float* src = img.pixels.data() + (sy * W + (x_lo + left - padding)) * C;
    std::copy(src, src + (x_hi - x_lo) * C, out.data() + (y * width + x_lo) * C);
  }
  img.pixels.swap(out);
  img.height = height, img.width = width;
}

void RandomCrop::apply(ImageBuffer& img, Generator& rng) const {
  output_geometry({img.height, img.width, img.channels});
  const int64_t range_y = img.height + 2 * padding_ - height_, range_x = img.width + 2 * padding_ - width_;
  const int64_t top = std::min<int64_t>(range_y, int64_t(rng.uniform() * double(range_y + 1)));
  const int64_t left = std::min<int64_t>(range_x, int64_t(rng.uniform() * double(range_x + 1)));
  if (padding_ == 0 && top == 0 && left == 0 && height_ == img.height && width_ == img.width) return;
  crop_padded(img, height_, width_, padding_, top, left);
}

std::string RandomCrop::describe() const {
  return height_ == width_ ? detail::concat("crop:", height_, ":", padding_)
                           : detail::concat("crop:", height_, "x", width_, ":", padding_);
}

RandomHorizontalFlip::RandomHorizontalFlip(double p) : p_(p) {
  LOWBIT_CHECK(p >= 0 && p <= 1, "RandomHorizontalFlip: probability ", p, " outside [0, 1]");
}

void RandomHorizontalFlip::flip(ImageBuffer& img) {
  const int64_t W = img.width, C = img.channels;
  for (int64_t y = 0; y < img.height; ++y) {
    float* row = img.pixels.data() + y * W * C;
    for (int64_t x = 0; x < W / 2; ++x)
      for (int64_t c = 0; c < C; ++c) std::swap(row[x * C + c], row[(W - 1 - x) * C + c]);
  }
}

void RandomHorizontalFlip::apply(ImageBuffer& img, Generator& rng) const {
  if (rng.uniform() < p_) flip(img);
}

std::string RandomHorizontalFlip::describe() const { return detail::concat("flip:", p_); }

void resize_bilinear_hwc(const float* in, int64_t h, int64_t w, int64_t c, float* out, int64_t out_h, int64_t out_w) {
  // Source coordinate of output pixel i: (i + 0.5) * in / out - 0.5, clamped at 0 (PyTorch).
  auto source = [](int64_t i, int64_t in_size, int64_t out_size, int64_t& i0, int64_t& i1, float& frac) {
    const double s = std::max(0.0, (double(i) + 0.5) * double(in_size) / double(out_size) - 0.5);
    i0 = std::min<int64_t>(int64_t(s), in_size - 1);
    i1 = std::min<int64_t>(i0 + 1, in_size - 1);
    frac = float(s - double(i0));
  };
  for (int64_t y = 0; y < out_h; ++y) {
    int64_t y0, y1;
    float fy;
    source(y, h, out_h, y0, y1, fy);
    for (int64_t x = 0; x < out_w; ++x) {
      int64_t x0, x1;
      float fx;
      source(x, w, out_w, x0, x1, fx);
      const float* p00 = in + (y0 * w + x0) * c;
      const float* p01 = in + (y0 * w + x1) * c;
      const float* p10 = in + (y1 * w + x0) * c;
      const float* p11 = in + (y1 * w + x1) * c;
      float* o = out + (y * out_w + x) * c;
      for (int64_t k = 0; k < c; ++k) {
        const float top = p00[k] + (p01[k] - p00[k]) * fx;
        const float bottom = p10[k] + (p11[k] - p10[k]) * fx;
        o[k] = top + (bottom - top) * fy;
      }
    }
  }
}

Resize::Resize(int64_t height, int64_t width) : height_(height), width_(width) {
  LOWBIT_CHECK(height > 0 && width > 0, "Resize: bad size ", height, "x", width);
}

Geometry Resize::output_geometry(const Geometry& in) const { return {height_, width_, in.channels}; }

void Resize::apply(ImageBuffer& img, Generator&) const {
  if (img.height == height_ && img.width == width_) return;
  LOWBIT_CHECK(img.height > 0 && img.width > 0, "Resize: empty input image");
  std::vector<float> out(size_t(height_ * width_ * img.channels));
  resize_bilinear_hwc(img.pixels.data(), img.height, img.width, img.channels, out.data(), height_, width_);
  img.pixels.swap(out);
  img.height = height_, img.width = width_;
}

std::string Resize::describe() const { return detail::concat("resize:", height_, ":", width_); }

CenterCrop::CenterCrop(int64_t height, int64_t width) : height_(height), width_(width) {
  LOWBIT_CHECK(height > 0 && width > 0, "CenterCrop: bad size ", height, "x", width);
}

Geometry CenterCrop::output_geometry(const Geometry& in) const {
  LOWBIT_CHECK(in.height >= height_ && in.width >= width_, "CenterCrop: ", height_, "x", width_,
               " window larger than the ", in.height, "x", in.width, " image");
  return {height_, width_, in.channels};
}

void CenterCrop::apply(ImageBuffer& img, Generator&) const {
  output_geometry({img.height, img.width, img.channels});
  RandomCrop::crop_padded(img, height_, width_, 0, (img.height - height_) / 2, (img.width - width_) / 2);
}

std::string CenterCrop::describe() const { return detail::concat("centercrop:", height_, ":", width_); }

RandomBrightness::RandomBrightness(double delta) : delta_(delta) {
  LOWBIT_CHECK(delta >= 0, "RandomBrightness: delta ", delta, " must be >= 0");
}

void RandomBrightness::apply(ImageBuffer& img, Generator& rng) const {
  const float shift = float((2 * rng.uniform() - 1) * delta_);
  for (float& v : img.pixels) v = std::clamp(v + shift, 0.0f, 255.0f);
}

std::string RandomBrightness::describe() const { return detail::concat("brightness:", delta_); }

RandomContrast::RandomContrast(double lo, double hi) : lo_(lo), hi_(hi) {
  LOWBIT_CHECK(0 <= lo && lo <= hi, "RandomContrast: bad factor range [", lo, ", ", hi, "]");
}

void RandomContrast::apply(ImageBuffer& img, Generator& rng) const {
  const float r = float(lo_ + (hi_ - lo_) * rng.uniform());
  const int64_t C = img.channels, n = img.height * img.width;
  if (n == 0) return;
  std::vector<double> mean(size_t(C), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < C; ++c) mean[size_t(c)] += img.pixels[size_t(i * C + c)];
  for (double& m : mean) m /= double(n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < C; ++c) {
      float& v = img.pixels[size_t(i * C + c)];
      v = std::clamp(v * r + float(mean[size_t(c)]) * (1 - r), 0.0f, 255.0f);
    }
}

std::string RandomContrast::describe() const { return detail::concat("contrast:", lo_, ":", hi_); }

// ---------------------------------------------------------------------------------------------
// Compose and the pipeline parser
// ---------------------------------------------------------------------------------------------
Compose& Compose::add(std::shared_ptr<const Transform> t) {
  LOWBIT_CHECK(t != nullptr, "Compose::add: null transform");
  transforms_.push_back(std::move(t));
  return *this;
}

void Compose::apply(ImageBuffer& img, Generator& rng) const {
  for (const auto& t : transforms_) t->apply(img, rng);
}

Geometry Compose::output_geometry(Geometry in) const {
  for (const auto& t : transforms_) in = t->output_geometry(in);
  return in;
}

std::string Compose::describe() const {
  std::string s;
  for (const auto& t : transforms_) {
    if (!s.empty()) s.push_back(',');
    s.append(t->describe());
  }
  return s.empty() ? "raw" : s;
}

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    const size_t at = s.find(sep, start);
    parts.push_back(s.substr(start, at - start));
    if (at == std::string::npos) return parts;
    start = at + 1;
  }
}

double parse_number(const std::string& s, const std::string& token) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  LOWBIT_CHECK(!s.empty() && *end == '\0', "parse_transforms: bad number \"", s, "\" in \"", token, "\"");
  return v;
}

int64_t parse_int(const std::string& s, const std::string& token) {
  const double v = parse_number(s, token);
  LOWBIT_CHECK(v == std::floor(v) && v >= 0, "parse_transforms: \"", s, "\" in \"", token,
               "\" must be a non-negative integer");
  return int64_t(v);
}

std::vector<float> parse_floats(const std::string& s, const std::string& token) {
  std::vector<float> v;
  for (const auto& part : split(s, '/')) v.push_back(float(parse_number(part, token)));
  return v;
}

}  // namespace

Compose parse_transforms(const std::string& spec) {
  Compose out;
  if (spec == "raw") return out;
  bool has_tofloat = false;
  std::vector<std::shared_ptr<const Transform>> list;
  if (!spec.empty()) {
    for (const auto& token : split(spec, ',')) {
      const auto f = split(token, ':');
      const std::string& op = f[0];
      const size_t args = f.size() - 1;
      auto need = [&](size_t lo, size_t hi) {
        LOWBIT_CHECK(args >= lo && args <= hi, "parse_transforms: \"", token, "\": ", op, " takes ", lo, "..", hi,
                     " arguments");
      };
      if (op == "tofloat") {
        need(0, 0);
        LOWBIT_CHECK(!has_tofloat, "parse_transforms: tofloat given twice in \"", spec, "\"");
        has_tofloat = true;
        list.push_back(std::make_shared<ToFloat>());
      } else if (op == "crop") {
        need(1, 2);
        list.push_back(std::make_shared<RandomCrop>(parse_int(f[1], token), args > 1 ? parse_int(f[2], token) : 0));
      } else if (op == "flip") {
        need(0, 1);
        list.push_back(std::make_shared<RandomHorizontalFlip>(args ? parse_number(f[1], token) : 0.5));
      } else if (op == "resize" || op == "centercrop") {
        need(1, 2);
        const int64_t h = parse_int(f[1], token), w = args > 1 ? parse_int(f[2], token) : h;
        if (op == "resize")
          list.push_back(std::make_shared<Resize>(h, w));
        else
          list.push_back(std::make_shared<CenterCrop>(h, w));
      } else if (op == "normalize") {
        need(1, 2);
        if (args == 1)
          list.push_back(std::make_shared<Normalize>(Normalize::named(f[1])));
        else
          list.push_back(std::make_shared<Normalize>(parse_floats(f[1], token), parse_floats(f[2], token)));
      } else if (op == "brightness" || op == "contrast") {
        need(op == "brightness" ? 1 : 2, op == "brightness" ? 1 : 2);
        LOWBIT_CHECK(!has_tofloat, "parse_transforms: \"", token,
                     "\" works on 0..255 pixel values; put it before tofloat");
        if (op == "brightness")
          list.push_back(std::make_shared<RandomBrightness>(parse_number(f[1], token)));
        else
          list.push_back(std::make_shared<RandomContrast>(parse_number(f[1], token), parse_number(f[2], token)));
      } else {
        throw Error("parse_transforms: unknown transform \"" + token +
                    "\" (tofloat, crop:SIZE[:PAD], flip[:P], resize:H[:W], centercrop:H[:W], normalize:NAME|M:S, "
                    "brightness:DELTA, contrast:LO:HI)");
      }
    }
  }
  if (!has_tofloat) {
    // ToFloat goes right after the last photometric (0..255) transform, i.e. first when there is
    // none. Crops, flips and resizes commute with the scaling; Normalize does not.
    auto photometric = [](const Transform* t) {
      return dynamic_cast<const RandomBrightness*>(t) || dynamic_cast<const RandomContrast*>(t);
    };
    size_t at = 0;
    for (size_t i = 0; i < list.size(); ++i)
      if (photometric(list[i].get())) at = i + 1;
    for (size_t i = 0; i < at; ++i)
      LOWBIT_CHECK(!dynamic_cast<const Normalize*>(list[i].get()), "parse_transforms: \"", spec,
                   "\": normalize must come after brightness/contrast");
    list.insert(list.begin() + std::ptrdiff_t(at), std::make_shared<ToFloat>());
  }
  for (auto& t : list) out.add(std::move(t));
  return out;
}

}  // namespace lowbit::data
