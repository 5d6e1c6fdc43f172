#include "core/tensor.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <ostream>
#include <sstream>

#include "core/parallel.h"
#include "core/random.h"
#include "core/strided.h"

namespace lowbit {

// ---------------------------------------------------------------------------------------------
// Shape helpers
// ---------------------------------------------------------------------------------------------
std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    st[d] = acc;
    acc *= std::max<int64_t>(shape[d], 1);
  }
  return st;
}

namespace {
Shape channels_last_strides(const Shape& shape) {
  // logical N, C, H, W; memory N, H, W, C
  const int64_t C = shape[1], H = shape[2], W = shape[3];
  return {H * W * C, 1, W * C, C};
}
}  // namespace

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t n = std::max<int64_t>(ndim, 1);
  LOWBIT_CHECK(dim >= -n && dim < n, op, ": dimension ", dim, " out of range for a ", ndim, "-d tensor");
  return dim < 0 ? dim + n : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t nd = std::max(a.size(), b.size());
  Shape out(nd);
  for (size_t i = 0; i < nd; ++i) {
    const int64_t da = i < nd - a.size() ? 1 : a[i - (nd - a.size())];
    const int64_t db = i < nd - b.size() ? 1 : b[i - (nd - b.size())];
    LOWBIT_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
                 " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Construction
// ---------------------------------------------------------------------------------------------
Tensor::Tensor(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset, DType dtype)
    : storage_(std::move(storage)),
      shape_(std::move(shape)),
      strides_(std::move(strides)),
      offset_(offset),
      dtype_(dtype) {}

Tensor Tensor::empty(const Shape& shape, DType dtype, MemoryFormat format) {
  for (int64_t d : shape) LOWBIT_CHECK(d >= 0, "Tensor::empty: negative size in shape ", shape_str(shape));
  Shape strides;
  if (format == MemoryFormat::channels_last) {
    LOWBIT_CHECK(shape.size() == 4, "Tensor::empty: channels_last needs a 4-d shape, got ", shape_str(shape));
    strides = channels_last_strides(shape);
  } else {
    strides = contiguous_strides(shape);
  }
  auto storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype));
  return Tensor(std::move(storage), shape, std::move(strides), 0, dtype);
}

Tensor Tensor::empty_strided(const Shape& shape, const Shape& strides, DType dtype) {
  LOWBIT_CHECK(shape.size() == strides.size(), "Tensor::empty_strided: shape ", shape_str(shape), " and strides ",
               shape_str(strides), " differ in rank");
  int64_t extent = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    LOWBIT_CHECK(shape[d] >= 0 && strides[d] >= 0, "Tensor::empty_strided: negative size or stride");
    if (shape[d] == 0) extent = 0;
  }
  if (extent != 0)
    for (size_t d = 0; d < shape.size(); ++d) extent += (shape[d] - 1) * strides[d];
  auto storage = std::make_shared<Storage>(static_cast<size_t>(extent) * dtype_size(dtype));
  return Tensor(std::move(storage), shape, strides, 0, dtype);
}

Tensor Tensor::empty_like(const Tensor& like, DType dtype) {
  if (like.is_dense() && !like.is_contiguous()) {
    // Same permutation of strides, compacted (no offset, no gaps).
    return empty_strided(like.shape(), like.strides(), dtype);
  }
  return empty(like.shape(), dtype);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) { return full(shape, 0, dtype); }
Tensor Tensor::ones(const Shape& shape, DType dtype) { return full(shape, 1, dtype); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype) { return full({}, value, dtype); }

Tensor Tensor::arange(double start, double end, double step, DType dtype) {
  LOWBIT_CHECK(step != 0, "Tensor::arange: step must be non-zero");
  const int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((end - start) / step)));
  Tensor t = empty({n}, dtype);
  LOWBIT_DISPATCH_ALL(dtype, "arange", [&] {
    scalar_t* p = t.data<scalar_t>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<scalar_t>(start + double(i) * step);
  });
  return t;
}

Tensor Tensor::from_list(std::initializer_list<double> values, const Shape& shape, DType dtype) {
  LOWBIT_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "Tensor::from_list: ", values.size(),
               " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, dtype);
  LOWBIT_DISPATCH_ALL(dtype, "from_list", [&] {
    scalar_t* p = t.data<scalar_t>();
    for (double v : values) *p++ = static_cast<scalar_t>(v);
  });
  return t;
}

namespace {
template <class Draw>
Tensor random_fill(const Shape& shape, DType dtype, Generator& gen, Draw draw) {
  Tensor t = Tensor::empty(shape, dtype);
  const int64_t n = t.numel();
  const uint64_t first = gen.advance(static_cast<uint64_t>(n));
  LOWBIT_DISPATCH_FLOAT(dtype, "random", [&] {
    scalar_t* p = t.data<scalar_t>();
    parallel_for(0, n, 4096, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) p[i] = static_cast<scalar_t>(draw(first + uint64_t(i)));
    });
  });
  return t;
}
}  // namespace

Tensor Tensor::rand(const Shape& shape, Generator& gen, DType dtype, double low, double high) {
  return random_fill(shape, dtype, gen, [&](uint64_t c) { return low + (high - low) * gen.uniform_at(c); });
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, DType dtype, double mean, double std) {
  return random_fill(shape, dtype, gen, [&](uint64_t c) { return mean + std * gen.normal_at(c); });
}

Tensor Tensor::rand(const Shape& shape, DType dtype) { return rand(shape, default_generator(), dtype); }
Tensor Tensor::randn(const Shape& shape, DType dtype) { return randn(shape, default_generator(), dtype); }

// ---------------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------------
int64_t Tensor::size(int64_t d) const { return shape_[wrap_dim(d, dim(), "Tensor::size")]; }
int64_t Tensor::stride(int64_t d) const { return strides_[wrap_dim(d, dim(), "Tensor::stride")]; }

void* Tensor::data_ptr() const {
  LOWBIT_CHECK(defined(), "Tensor::data_ptr: undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t d = dim() - 1; d >= 0; --d) {
    if (shape_[d] == 1) continue;
    if (strides_[d] != expected) return false;
    expected *= shape_[d];
  }
  return true;
}

bool Tensor::is_contiguous(MemoryFormat format) const {
  if (format == MemoryFormat::contiguous) return is_contiguous();
  if (dim() != 4) return false;
  const Shape expect = channels_last_strides(shape_);
  for (int64_t d = 0; d < 4; ++d)
    if (shape_[d] != 1 && strides_[d] != expect[d]) return false;
  return true;
}

bool Tensor::is_dense() const {
  std::vector<int64_t> order(dim());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return strides_[a] < strides_[b]; });
  int64_t expected = 1;
  for (int64_t d : order) {
    if (shape_[d] == 1) continue;
    if (strides_[d] != expected) return false;
    expected *= shape_[d];
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------------
Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  return Tensor(storage_, shape, strides, offset, dtype_);
}

namespace {
Shape infer_shape(const Shape& shape, int64_t numel, const Tensor& t, const char* op) {
  Shape out = shape;
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      LOWBIT_CHECK(infer_at < 0, op, ": only one dimension can be -1 in ", shape_str(shape));
      infer_at = static_cast<int64_t>(i);
    } else {
      LOWBIT_CHECK(out[i] >= 0, op, ": invalid size in ", shape_str(shape));
      known *= out[i];
    }
  }
  if (infer_at >= 0) {
    LOWBIT_CHECK(known != 0 && numel % known == 0, op, ": cannot reshape ", shape_str(t.shape()), " to ",
                 shape_str(shape));
    out[infer_at] = numel / known;
  }
  LOWBIT_CHECK(shape_numel(out) == numel, op, ": cannot reshape ", shape_str(t.shape()), " (", numel, " elements) to ",
               shape_str(shape));
  return out;
}

// Strides for viewing (old shape/strides) as new_shape without copying, if possible
// (the algorithm of PyTorch's computeStride). Returns false when a copy is needed.
bool view_strides(const Shape& old_shape, const Shape& old_strides, const Shape& new_shape, Shape& out) {
  out.assign(new_shape.size(), 0);
  if (shape_numel(old_shape) == 0) {
    out = contiguous_strides(new_shape);
    return true;
  }
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.empty() ? 1 : old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t tensor_d = static_cast<int64_t>(old_shape.size()) - 1; tensor_d >= 0; --tensor_d) {
    tensor_numel *= old_shape[tensor_d];
    if (tensor_d == 0 ||
        (old_shape[tensor_d - 1] != 1 && old_strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (tensor_d > 0) {
        chunk_base_stride = old_strides[tensor_d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  for (; view_d >= 0; --view_d) out[view_d] = 1;  // leading size-1 dims
  return true;
}
}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  const Shape s = infer_shape(shape, numel(), *this, "view");
  Shape st;
  LOWBIT_CHECK(view_strides(shape_, strides_, s, st), "view: cannot view ", shape_str(shape_), " with strides ",
               shape_str(strides_), " as ", shape_str(s), " without a copy; use reshape");
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::reshape(const Shape& shape) const {
  const Shape s = infer_shape(shape, numel(), *this, "reshape");
  Shape st;
  if (view_strides(shape_, strides_, s, st)) return Tensor(storage_, s, st, offset_, dtype_);
  return contiguous().view(s);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  LOWBIT_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: ", dims.size(), " dims given for a ", dim(),
               "-d tensor of shape ", shape_str(shape_));
  Shape s(dim()), st(dim());
  std::vector<bool> seen(dim(), false);
  for (int64_t i = 0; i < dim(); ++i) {
    const int64_t d = wrap_dim(dims[i], dim(), "permute");
    LOWBIT_CHECK(!seen[d], "permute: dimension ", d, " repeated");
    seen[d] = true;
    s[i] = shape_[d];
    st[i] = strides_[d];
  }
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  Shape s = shape_, st = strides_;
  std::swap(s[d0], s[d1]);
  std::swap(st[d0], st[d1]);
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::t() const {
  LOWBIT_CHECK(dim() == 2, "t: expected a 2-d tensor, got shape ", shape_str(shape_));
  return transpose(0, 1);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  if (start < 0) start += shape_[d];
  LOWBIT_CHECK(start >= 0 && length >= 0 && start + length <= shape_[d], "narrow: range [", start, ", ", start + length,
               ") out of bounds for dimension ", d, " of shape ", shape_str(shape_));
  Shape s = shape_;
  s[d] = length;
  return Tensor(storage_, s, strides_, offset_ + start * strides_[d], dtype_);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  LOWBIT_CHECK(step > 0, "slice: step must be positive");
  const int64_t n = shape_[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape s = shape_, st = strides_;
  s[d] = (end - start + step - 1) / step;
  st[d] = strides_[d] * step;
  return Tensor(storage_, s, st, offset_ + start * strides_[d], dtype_);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  if (index < 0) index += shape_[d];
  LOWBIT_CHECK(index >= 0 && index < shape_[d], "select: index ", index, " out of range for dimension ", d,
               " of shape ", shape_str(shape_));
  Shape s = shape_, st = strides_;
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return Tensor(storage_, s, st, offset_ + index * strides_[d], dtype_);
}

Tensor Tensor::expand(const Shape& shape) const {
  LOWBIT_CHECK(shape.size() >= shape_.size(), "expand: cannot expand ", shape_str(shape_), " to ", shape_str(shape));
  const size_t lead = shape.size() - shape_.size();
  Shape s(shape.size()), st(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      LOWBIT_CHECK(shape[i] >= 0, "expand: invalid size in ", shape_str(shape));
      s[i] = shape[i];
      st[i] = 0;
      continue;
    }
    const int64_t cur = shape_[i - lead];
    const int64_t want = shape[i] == -1 ? cur : shape[i];
    LOWBIT_CHECK(cur == want || cur == 1, "expand: cannot expand ", shape_str(shape_), " to ", shape_str(shape));
    s[i] = want;
    st[i] = cur == want ? strides_[i - lead] : 0;
  }
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape_, st = strides_;
  const int64_t stride = d < dim() ? strides_[d] * shape_[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (shape_[d] != 1) return *this;
  Shape s = shape_, st = strides_;
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::squeeze() const {
  Shape s, st;
  for (int64_t d = 0; d < dim(); ++d)
    if (shape_[d] != 1) s.push_back(shape_[d]), st.push_back(strides_[d]);
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  start_dim = wrap_dim(start_dim, dim(), "flatten");
  end_dim = wrap_dim(end_dim, dim(), "flatten");
  LOWBIT_CHECK(start_dim <= end_dim, "flatten: start_dim ", start_dim, " > end_dim ", end_dim);
  Shape s(shape_.begin(), shape_.begin() + start_dim);
  int64_t mid = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) mid *= shape_[d];
  s.push_back(mid);
  s.insert(s.end(), shape_.begin() + end_dim + 1, shape_.end());
  return reshape(s);
}

// ---------------------------------------------------------------------------------------------
// Copies
// ---------------------------------------------------------------------------------------------
Tensor& Tensor::copy_(const Tensor& src) {
  LOWBIT_CHECK(defined() && src.defined(), "copy_: undefined tensor");
  const Shape bshape = broadcast_shapes(shape_, src.shape(), "copy_");
  LOWBIT_CHECK(bshape == shape_, "copy_: source of shape ", shape_str(src.shape()),
               " does not broadcast to destination shape ", shape_str(shape_));
  auto plan = detail::make_plan<2>(shape_, {strides_, detail::broadcast_strides(src, shape_)});
  LOWBIT_DISPATCH_ALL(dtype_, "copy_", [&] {
    using dst_t = scalar_t;
    dst_t* dst = data<dst_t>();
    LOWBIT_DISPATCH_ALL(src.dtype(), "copy_", [&] {
      const scalar_t* s = src.data<scalar_t>();
      detail::plan_for_each(plan, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
        dst_t* d = dst + off[0];
        const scalar_t* p = s + off[1];
        if (st[0] == 1 && st[1] == 1) {
          for (int64_t i = 0; i < n; ++i) d[i] = static_cast<dst_t>(p[i]);
        } else {
          for (int64_t i = 0; i < n; ++i) d[i * st[0]] = static_cast<dst_t>(p[i * st[1]]);
        }
      });
    });
  });
  return *this;
}

Tensor& Tensor::fill_(double value) {
  auto plan = detail::make_plan<1>(shape_, {strides_});
  LOWBIT_DISPATCH_ALL(dtype_, "fill_", [&] {
    scalar_t* dst = data<scalar_t>();
    const scalar_t v = static_cast<scalar_t>(value);
    detail::plan_for_each(plan, [&](const std::array<int64_t, 1>& off, int64_t n, const std::array<int64_t, 1>& st) {
      scalar_t* d = dst + off[0];
      if (st[0] == 1) {
        for (int64_t i = 0; i < n; ++i) d[i] = v;
      } else {
        for (int64_t i = 0; i < n; ++i) d[i * st[0]] = v;
      }
    });
  });
  return *this;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape_, dtype_);
  out.copy_(*this);
  return out;
}

Tensor Tensor::contiguous(MemoryFormat format) const {
  if (is_contiguous(format)) return *this;
  Tensor out = empty(shape_, dtype_, format);
  out.copy_(*this);
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty_like(*this);
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor out = empty_like(*this, dtype);
  out.copy_(*this);
  return out;
}

double Tensor::item() const {
  LOWBIT_CHECK(numel() == 1, "item: tensor of shape ", shape_str(shape_), " has ", numel(), " elements, not 1");
  return LOWBIT_DISPATCH_ALL(dtype_, "item", [&] { return static_cast<double>(*data<scalar_t>()); });
}

std::vector<double> Tensor::to_vector() const {
  Tensor c = contiguous().to(DType::f64);
  const double* p = c.data<double>();
  return std::vector<double>(p, p + c.numel());
}

// ---------------------------------------------------------------------------------------------
// Printing: PyTorch-like, summarised beyond 1000 elements.
// ---------------------------------------------------------------------------------------------
namespace {
void print_rec(std::ostream& os, const Tensor& t, const std::vector<double>& v, int64_t d, int64_t& idx, bool summarize,
               int indent) {
  const int64_t n = t.size(d);
  const int64_t inner = shape_numel(Shape(t.shape().begin() + d + 1, t.shape().end()));
  os << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && n > 6 && i == 3) {
      os << "...";
      idx += (n - 6) * inner;
      i = n - 4;
      os << (d + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' '));
      continue;
    }
    if (d + 1 == t.dim()) {
      os << std::setw(9) << std::setprecision(4) << v[idx++];
    } else {
      print_rec(os, t, v, d + 1, idx, summarize, indent + 1);
    }
    if (i + 1 < n) os << (d + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << ']';
}
}  // namespace

std::string Tensor::str() const {
  std::ostringstream os;
  if (!defined()) return "Tensor(undefined)";
  os << "tensor(";
  if (dim() == 0) {
    os << item();
  } else if (numel() == 0) {
    os << "[]";
  } else {
    const std::vector<double> v = to_vector();
    int64_t idx = 0;
    print_rec(os, *this, v, 0, idx, numel() > 1000, 7);
  }
  os << ", shape=" << shape_str(shape_) << ", dtype=" << dtype_name(dtype_) << ')';
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------
namespace {
template <class F>
void for_each_pair(const Tensor& a, const Tensor& b, const char* op, F f) {
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor ea = a.expand(shape).contiguous().to(DType::f64);
  Tensor eb = b.expand(shape).contiguous().to(DType::f64);
  const double* pa = ea.data<double>();
  const double* pb = eb.data<double>();
  for (int64_t i = 0; i < ea.numel(); ++i) f(pa[i], pb[i]);
}
}  // namespace

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  bool ok = true;
  for_each_pair(a, b, "allclose", [&](double x, double y) {
    if (std::isnan(x) || std::isnan(y) || std::abs(x - y) > atol + rtol * std::abs(y)) ok = false;
  });
  return ok;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for_each_pair(a, b, "max_abs_diff", [&](double x, double y) {
    const double d = std::abs(x - y);
    m = std::isnan(d) ? INFINITY : std::max(m, d);
  });
  return m;
}

}  // namespace lowbit
