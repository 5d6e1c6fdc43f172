// conv2d and its two adjoints. With y = conv(x, w):
//   dx = conv2d_input_grad(dy, w)    linear in dy and in w
//   dw = conv2d_weight_grad(x, dy)   linear in x and in dy
// so each op's backward is built from the other two (double backward for free).
#include <algorithm>
#include <cstring>
#include <vector>

#include "autograd/ops.h"
#include "autograd/ops_nn.h"
#include "core/kernels/conv.h"
#include "core/kernels/depthwise.h"
#include "core/math.h"

namespace lowbit {
namespace {

kernels::Conv2dGeometry geometry(const Shape& x, const Shape& w, const Conv2dOptions& o, const char* op) {
  LOWBIT_CHECK(x.size() == 4, op, ": expected input [N, C, H, W], got ", shape_str(x));
  LOWBIT_CHECK(w.size() == 4, op, ": expected weight [K, C/groups, R, S], got ", shape_str(w));
  LOWBIT_CHECK(o.groups >= 1 && x[1] % o.groups == 0 && w[0] % o.groups == 0, op, ": groups=", o.groups,
               " must divide input channels ", x[1], " and output channels ", w[0]);
  LOWBIT_CHECK(w[1] * o.groups == x[1], op, ": weight ", shape_str(w), " expects ", w[1] * o.groups,
               " input channels, input ", shape_str(x), " has ", x[1]);
  for (int i = 0; i < 2; ++i)
    LOWBIT_CHECK(o.stride[i] >= 1 && o.dilation[i] >= 1 && o.padding[i] >= 0, op,
                 ": stride and dilation must be >= 1 and padding >= 0");
  kernels::Conv2dGeometry g;
  g.N = x[0], g.C = x[1], g.H = x[2], g.W = x[3];
  g.K = w[0], g.R = w[2], g.S = w[3];
  g.stride_h = o.stride[0], g.stride_w = o.stride[1];
  g.pad_h = o.padding[0], g.pad_w = o.padding[1];
  g.dil_h = o.dilation[0], g.dil_w = o.dilation[1];
  g.groups = o.groups;
  LOWBIT_CHECK(g.P() >= 1 && g.Q() >= 1, op, ": input ", shape_str(x), " is smaller than the dilated kernel ",
               shape_str(w), " with padding ", o.padding[0], "x", o.padding[1]);
  return g;
}

bool is_depthwise(const kernels::Conv2dGeometry& g) { return g.groups == g.C && g.groups > 1 && g.K % g.C == 0; }

Tensor channels_last(const Tensor& t) { return t.contiguous(MemoryFormat::channels_last); }

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  LOWBIT_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch, ", dtype_name(a.dtype()), " vs ", dtype_name(b.dtype()));
  LOWBIT_CHECK(is_floating(a.dtype()), op, ": expected floating tensors, got ", dtype_name(a.dtype()));
}

// Inference weight cache. A parameter evaluated without a graph (grad mode off and a weight that
// requires grad: a model under NoGradGuard) runs a float convolution from prepared weights
// (kernels::conv2d_prepare_weight: channels-last, Winograd's transformed weights) kept per thread,
// instead of converting and transforming the weight on every call (at batch 1 that was about 40 % of
// ResNet-20's inference time). An entry is found by the weight's address, shape, strides and the
// algorithm, and used only if the weight's bytes equal the copy stored with it, so any change to the
// weight (an optimizer step, load_state_dict, an in-place edit, a new tensor at the same address) is
// a miss that prepares it again: there is no invalidation to forget. The result is bit-identical to
// the uncached path. Bounded per thread: kMaxEntries entries and kMaxBytes, least recently used
// evicted. Weights that do not require grad (a tensor computed in a backward pass, as the second
// backward of gradient-L1 training passes, a weight quantizer's output, a frozen weight) are not
// cached: most are one-off tensors that would only fill the cache.
struct PreparedWeight {
  const void* ptr = nullptr;
  Shape shape, strides;
  const char* algorithm = nullptr;
  std::vector<float> source;    // the weight's elements in memory order
  std::vector<float> prepared;  // kernels::conv2d_prepare_weight's output
  uint64_t last_use = 0;
  size_t bytes() const { return sizeof(float) * (source.size() + prepared.size()); }
};

class PreparedWeightCache {
 public:
  static constexpr size_t kMaxEntries = 256, kMaxBytes = size_t(256) << 20;

  // The prepared weights of w (float, dense in either memory format) for geometry g. A weight
  // changed in place keeps its entry, prepared again (a model evaluated after every epoch of training
  // does not pile up stale entries).
  const float* get(const kernels::Conv2dGeometry& g, const Tensor& w) {
    const char* algorithm = kernels::conv2d_algorithm(g);
    const float* src = w.data<float>();
    const size_t n = static_cast<size_t>(w.numel());
    ++clock_;
    auto it = std::find_if(entries_.begin(), entries_.end(), [&](const PreparedWeight& e) {
      return e.ptr == w.data_ptr() && e.algorithm == algorithm && e.shape == w.shape() && e.strides == w.strides();
    });
    if (it != entries_.end() && std::memcmp(it->source.data(), src, sizeof(float) * n) == 0) {
      it->last_use = clock_;
      return it->prepared.data();
    }
    if (it == entries_.end()) {
      entries_.emplace_back();
      it = entries_.end() - 1;
      it->ptr = w.data_ptr(), it->shape = w.shape(), it->strides = w.strides(), it->algorithm = algorithm;
    } else {
      bytes_ -= it->bytes();
    }
    it->source.assign(src, src + n);
    it->prepared.resize(static_cast<size_t>(kernels::conv2d_prepared_weight_size(g)));
    kernels::conv2d_prepare_weight(g, channels_last(w).data<float>(), it->prepared.data());
    it->last_use = clock_;
    bytes_ += it->bytes();
    const float* result = it->prepared.data();  // stays valid: eviction below skips the newest entry
    while (entries_.size() > 1 && (entries_.size() > kMaxEntries || bytes_ > kMaxBytes)) {
      auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                     [](const auto& a, const auto& b) { return a.last_use < b.last_use; });
      bytes_ -= oldest->bytes();
      entries_.erase(oldest);
    }
    return result;
  }

 private:
  std::vector<PreparedWeight> entries_;
  size_t bytes_ = 0;
  uint64_t clock_ = 0;
};

bool use_prepared_weight(const kernels::Conv2dGeometry& g, const Tensor& w, bool cacheable) {
  if (!cacheable || w.dtype() != DType::f32 || is_depthwise(g)) return false;
  // Dense weights only (their bytes are compared); an algorithm that reads w as it is gains nothing
  // from a copy of a weight that is channels-last already.
  const bool cl = w.is_contiguous(MemoryFormat::channels_last);
  if (!cl && !w.is_contiguous()) return false;
  const char* a = kernels::conv2d_algorithm(g);
  return !cl || std::strncmp(a, "wino", 4) == 0;
}

Tensor forward_tensor(const kernels::Conv2dGeometry& g, const Tensor& x_in, const Tensor& w_in, const Tensor& b_in,
                      bool cacheable = false) {
  const Tensor x = channels_last(x_in);
  const Tensor b = b_in.defined() ? b_in.contiguous() : Tensor();
  if (use_prepared_weight(g, w_in, cacheable)) {
    thread_local PreparedWeightCache cache;
    const float* wp = cache.get(g, w_in);
    Tensor y = Tensor::empty({g.N, g.K, g.P(), g.Q()}, x.dtype(), MemoryFormat::channels_last);
    kernels::conv2d_forward_prepared(g, x.data<float>(), wp, b.defined() ? b.data<float>() : nullptr, y.data<float>());
    return y;
  }
  const Tensor w = channels_last(w_in);
  Tensor y = Tensor::empty({g.N, g.K, g.P(), g.Q()}, x.dtype(), MemoryFormat::channels_last);
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "conv2d", [&] {
    const scalar_t* pb = b.defined() ? b.data<scalar_t>() : nullptr;
    if (is_depthwise(g)) {
      kernels::depthwise_conv2d_forward(g, x.data<scalar_t>(), w.data<scalar_t>(), pb, y.data<scalar_t>());
    } else {
      kernels::conv2d_forward(g, x.data<scalar_t>(), w.data<scalar_t>(), pb, y.data<scalar_t>());
    }
  });
  return y;
}

Tensor input_grad_tensor(const kernels::Conv2dGeometry& g, const Tensor& dy_in, const Tensor& w_in) {
  const Tensor dy = channels_last(dy_in), w = channels_last(w_in);
  Tensor dx = Tensor::empty({g.N, g.C, g.H, g.W}, dy.dtype(), MemoryFormat::channels_last);
  LOWBIT_DISPATCH_FLOAT(dy.dtype(), "conv2d_input_grad", [&] {
    if (is_depthwise(g)) {
      kernels::depthwise_conv2d_backward_data(g, dy.data<scalar_t>(), w.data<scalar_t>(), dx.data<scalar_t>());
    } else {
      kernels::conv2d_backward_data(g, dy.data<scalar_t>(), w.data<scalar_t>(), dx.data<scalar_t>());
    }
  });
  return dx;
}

Tensor weight_grad_tensor(const kernels::Conv2dGeometry& g, const Tensor& x_in, const Tensor& dy_in) {
  const Tensor x = channels_last(x_in), dy = channels_last(dy_in);
  Tensor dw = Tensor::empty({g.K, g.C_per_group(), g.R, g.S}, x.dtype(), MemoryFormat::channels_last);
  LOWBIT_DISPATCH_FLOAT(x.dtype(), "conv2d_weight_grad", [&] {
    if (is_depthwise(g)) {
      kernels::depthwise_conv2d_backward_weight(g, x.data<scalar_t>(), dy.data<scalar_t>(), dw.data<scalar_t>(),
                                                nullptr);
    } else {
      kernels::conv2d_backward_weight(g, x.data<scalar_t>(), dy.data<scalar_t>(), dw.data<scalar_t>(), nullptr);
    }
  });
  return dw;
}

}  // namespace

Variable conv2d(const Variable& x, const Variable& weight, const Variable& bias, const Conv2dOptions& opt) {
  const auto g = geometry(x.shape(), weight.shape(), opt, "conv2d");
  check_same_dtype(x.data(), weight.data(), "conv2d");
  if (bias.defined()) {
    LOWBIT_CHECK(bias.dim() == 1 && bias.size(0) == g.K, "conv2d: bias ", shape_str(bias.shape()), " for ", g.K,
                 " output channels");
    check_same_dtype(x.data(), bias.data(), "conv2d");
  }
  const Shape x_shape = x.shape(), w_shape = weight.shape();
  const bool cacheable = !GradMode::enabled() && weight.requires_grad();  // a parameter, no graph
  return make_result(
      forward_tensor(g, x.data(), weight.data(), bias.defined() ? bias.data() : Tensor(), cacheable), "conv2d",
      {x, weight, bias}, [x, weight, bias, opt, x_shape, w_shape](const Variable& gy, const Variable&) {
        return std::vector<Variable>{x.requires_grad() ? conv2d_input_grad(gy, weight, x_shape, opt) : Variable(),
                                     weight.requires_grad() ? conv2d_weight_grad(x, gy, w_shape, opt) : Variable(),
                                     bias.requires_grad() ? sum(gy, {0, 2, 3}) : Variable()};
      });
}

Variable conv2d_input_grad(const Variable& grad_out, const Variable& weight, const Shape& input_shape,
                           const Conv2dOptions& opt) {
  const auto g = geometry(input_shape, weight.shape(), opt, "conv2d_input_grad");
  LOWBIT_CHECK(grad_out.shape() == (Shape{g.N, g.K, g.P(), g.Q()}), "conv2d_input_grad: gradient ",
               shape_str(grad_out.shape()), " does not match the conv output shape");
  const Shape w_shape = weight.shape();
  return make_result(input_grad_tensor(g, grad_out.data(), weight.data()), "conv2d_input_grad", {grad_out, weight},
                     [grad_out, weight, opt, w_shape](const Variable& gg, const Variable&) {
                       // dx = D(dy, w): d/d(dy) <gg, dx> = conv(gg, w); d/dw = weight_grad(gg, dy).
                       return std::vector<Variable>{
                           grad_out.requires_grad() ? conv2d(gg, weight, Variable(), opt) : Variable(),
                           weight.requires_grad() ? conv2d_weight_grad(gg, grad_out, w_shape, opt) : Variable()};
                     });
}

Variable conv2d_weight_grad(const Variable& x, const Variable& grad_out, const Shape& weight_shape,
                            const Conv2dOptions& opt) {
  const auto g = geometry(x.shape(), weight_shape, opt, "conv2d_weight_grad");
  LOWBIT_CHECK(grad_out.shape() == (Shape{g.N, g.K, g.P(), g.Q()}), "conv2d_weight_grad: gradient ",
               shape_str(grad_out.shape()), " does not match the conv output shape");
  const Shape x_shape = x.shape();
  return make_result(weight_grad_tensor(g, x.data(), grad_out.data()), "conv2d_weight_grad", {x, grad_out},
                     [x, grad_out, opt, x_shape](const Variable& gg, const Variable&) {
                       // dw = W(x, dy): d/dx <gg, dw> = input_grad(dy, gg); d/d(dy) = conv(x, gg).
                       return std::vector<Variable>{
                           x.requires_grad() ? conv2d_input_grad(grad_out, gg, x_shape, opt) : Variable(),
                           grad_out.requires_grad() ? conv2d(x, gg, Variable(), opt) : Variable()};
                     });
}

}  // namespace lowbit
