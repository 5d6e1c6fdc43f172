// Tensor: a strided view (shape, strides, offset; all in elements) over shared, aligned Storage.
//
// Contract
//   - Views (reshape when possible, view, permute/transpose, narrow/slice/select, expand,
//     squeeze/unsqueeze, flatten) share storage and copy nothing; contiguous() copies only when
//     the tensor is not already row-major contiguous.
//   - Layout: the logical order of a 4-d activation is always N, C, H, W (PyTorch's convention).
//     Its memory may be row-major (MemoryFormat::contiguous) or channels-last (NHWC in memory;
//     MemoryFormat::channels_last), as PyTorch's channels_last.
//   - Shape and dtype errors throw lowbit::Error naming the operation and the shapes.
//   - The tensor knows nothing of gradients: autograd::Variable wraps it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/storage.h"

namespace lowbit {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& shape);

enum class MemoryFormat { contiguous, channels_last };

class Generator;

class Tensor {
 public:
  Tensor() = default;  // undefined tensor

  // ---- creation ----
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, MemoryFormat format = MemoryFormat::contiguous);
  static Tensor empty_strided(const Shape& shape, const Shape& strides, DType dtype = DType::f32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32);
  static Tensor ones(const Shape& shape, DType dtype = DType::f32);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
  static Tensor scalar(double value, DType dtype = DType::f32);  // 0-d
  static Tensor arange(double start, double end, double step = 1, DType dtype = DType::f32);
  static Tensor arange(int64_t n, DType dtype = DType::f32) { return arange(0, double(n), 1, dtype); }
  // Uniform on [low, high) and normal(mean, std) from a counter-based generator: element i of the
  // result depends only on the generator's seed and position, never on the thread count.
  static Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::f32, double low = 0, double high = 1);
  static Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::f32, double mean = 0, double std = 1);
  static Tensor rand(const Shape& shape, DType dtype = DType::f32);   // default generator
  static Tensor randn(const Shape& shape, DType dtype = DType::f32);  // default generator
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  static Tensor from_list(std::initializer_list<double> values, const Shape& shape, DType dtype = DType::f32);
  // A tensor shaped and laid out like `like` (dense layouts such as channels-last are kept).
  static Tensor empty_like(const Tensor& like, DType dtype);
  static Tensor empty_like(const Tensor& like) { return empty_like(like, like.dtype()); }

  // ---- metadata ----
  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  bool is_contiguous() const;
  bool is_contiguous(MemoryFormat format) const;
  // Dense: the elements exactly fill a contiguous block in some order of the dimensions
  // (row-major, channels-last, any permutation); no gaps, no overlap.
  bool is_dense() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool shares_storage(const Tensor& other) const { return storage_ == other.storage_; }

  void* data_ptr() const;
  template <class T>
  T* data() const;  // checks dtype

  // ---- views (no copy) ----
  Tensor view(const Shape& shape) const;     // throws if not expressible as a view
  Tensor reshape(const Shape& shape) const;  // view when possible, else copy; one -1 allowed
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  // 2-d transpose
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor expand(const Shape& shape) const;  // broadcast: size-1 dims get stride 0
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;

  // ---- copies ----
  Tensor contiguous() const;
  Tensor contiguous(MemoryFormat format) const;
  Tensor clone() const;  // keeps a dense layout
  Tensor to(DType dtype) const;
  Tensor& copy_(const Tensor& src);  // src broadcast to this shape; dtype converted
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0); }

  double item() const;                    // one-element tensors
  std::vector<double> to_vector() const;  // row-major order, as double
  std::string str() const;

 private:
  Tensor(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset, DType dtype);
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Normalises a possibly negative dimension index against `ndim`, naming `op` on error.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);
// Broadcast shape of a and b (NumPy rules) or throw naming `op` and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// |a - b| <= atol + rtol * |b| elementwise, same shape (broadcast allowed).
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
// Largest |a - b| (shapes must broadcast).
double max_abs_diff(const Tensor& a, const Tensor& b);

template <class T>
T* Tensor::data() const {
  LOWBIT_CHECK(defined(), "Tensor::data: undefined tensor");
  LOWBIT_CHECK(dtype_ == dtype_of<T>(), "Tensor::data: tensor is ", dtype_name(dtype_), ", asked for ",
               dtype_name(dtype_of<T>()));
  return static_cast<T*>(storage_->data()) + offset_;
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  LOWBIT_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "Tensor::from_vector: ", values.size(),
               " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>());
  T* p = t.data<T>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return t;
}

}  // namespace lowbit
