#include "layers/pooling.h"

#include "autograd/ops.h"

namespace lowbit {

Pool2dOptions pool_options(int64_t kernel, int64_t stride, int64_t padding, bool ceil_mode) {
  Pool2dOptions o;
  o.kernel = {kernel, kernel};
  o.stride = {stride, stride};
  o.padding = {padding, padding};
  o.ceil_mode = ceil_mode;
  return o;
}

namespace {
std::string pool_repr(const Pool2dOptions& o) {
  const int64_t s0 = o.stride[0] ? o.stride[0] : o.kernel[0], s1 = o.stride[1] ? o.stride[1] : o.kernel[1];
  std::string s = detail::concat("kernel=", o.kernel[0], "x", o.kernel[1], ", stride=", s0, "x", s1,
                                 ", pad=", o.padding[0], "x", o.padding[1]);
  if (o.ceil_mode) s += ", ceil_mode=true";
  return s;
}
void check_4d(const Variable& x, const char* op) {
  LOWBIT_CHECK(x.dim() == 4, op, ": expected [N, C, H, W], got ", shape_str(x.shape()));
}
}  // namespace

Variable MaxPool2d::forward(const Variable& x) {
  check_4d(x, "MaxPool2d::forward");
  return max_pool2d(x, opt_);
}
std::string MaxPool2d::extra_repr() const { return pool_repr(opt_); }

Variable AvgPool2d::forward(const Variable& x) {
  check_4d(x, "AvgPool2d::forward");
  return avg_pool2d(x, opt_);
}
std::string AvgPool2d::extra_repr() const {
  return pool_repr(opt_) + (opt_.count_include_pad ? "" : ", count_include_pad=false");
}

Variable GlobalAvgPool2d::forward(const Variable& x) {
  check_4d(x, "GlobalAvgPool2d::forward");
  return global_avg_pool2d(x);
}

}  // namespace lowbit
