#include "train/grad_reducer.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace lowbit::train {

GradientReducer::GradientReducer(std::vector<Variable> params, int64_t bucket_bytes) : params_(std::move(params)) {
  const int64_t cap = std::max<int64_t>(1, bucket_bytes);
  bucket_of_.resize(params_.size());
  slot_of_.resize(params_.size());
  filled_.assign(params_.size(), false);
  for (size_t k = params_.size(); k-- > 0;) {  // last parameter first: roughly backward's order
    const Variable& p = params_[k];
    const int64_t n = p.numel(), bytes = n * int64_t(dtype_size(p.dtype()));
    const bool full = !buckets_.empty() && !buckets_.back().members.empty() &&
                      buckets_.back().elements * int64_t(dtype_size(p.dtype())) + bytes > cap;
    if (buckets_.empty() || buckets_.back().dtype != p.dtype() || full) {
      buckets_.emplace_back();
      buckets_.back().dtype = p.dtype();
    }
    Bucket& b = buckets_.back();
    bucket_of_[k] = buckets_.size() - 1;
    slot_of_[k] = b.members.size();
    b.members.push_back(k);
    b.offset.push_back(b.elements);
    b.elements += n;
  }
  for (Bucket& b : buckets_) {
    const size_t total = size_t(b.elements) + b.members.size();
    if (b.dtype == DType::f64)
      b.f64.resize(total);
    else
      b.f32.resize(total);
  }
}

GradientReducer::~GradientReducer() { remove_hooks(); }

void GradientReducer::remove_hooks() {
  if (!hooked_) return;
  for (Variable& p : params_) p.set_grad_ready_hook({});
  hooked_ = false;
}

// Parameter k's gradient (times weight) and its flag into its bucket.
void GradientReducer::fill(size_t k, double weight) {
  if (filled_[k]) return;
  filled_[k] = true;
  Bucket& b = buckets_[bucket_of_[k]];
  const size_t slot = slot_of_[k];
  const int64_t n = params_[k].numel(), at = b.offset[slot];
  const Variable g = params_[k].grad();
  auto copy = [&](auto* data) {
    using T = std::remove_pointer_t<decltype(data)>;
    data[b.elements + int64_t(slot)] = g.defined() ? T(1) : T(0);
    if (!g.defined()) {
      std::fill(data + at, data + at + n, T(0));
      return;
    }
    const Tensor gc = g.data().to(b.dtype).contiguous();
    const T* src = gc.data<T>();
    const T w = T(weight);
    for (int64_t i = 0; i < n; ++i) data[at + i] = src[i] * w;
  };
  if (b.dtype == DType::f64)
    copy(b.f64.data());
  else
    copy(b.f32.data());
  ++b.filled;
}

void GradientReducer::start_ready_buckets() {
  while (next_to_start_ < buckets_.size() &&
         buckets_[next_to_start_].filled == buckets_[next_to_start_].members.size()) {
    Bucket& b = buckets_[next_to_start_++];
    const int64_t total = b.elements + int64_t(b.members.size());
    b.request =
        b.dtype == DType::f64 ? dist::iallreduce_sum(b.f64.data(), total) : dist::iallreduce_sum(b.f32.data(), total);
    if (hooked_) ++started_in_backward_;
  }
  // Let MPI progress the started ones (MPI_Testall) while backward goes on.
  for (size_t i = 0; i < next_to_start_; ++i)
    if (buckets_[i].request.pending()) dist::test(buckets_[i].request);
}

void GradientReducer::begin_step() {
  std::fill(filled_.begin(), filled_.end(), false);
  for (Bucket& b : buckets_) b.filled = 0;
  next_to_start_ = 0;
  started_in_backward_ = 0;
}

void GradientReducer::start(double weight) {
  begin_step();
  for (size_t k = 0; k < params_.size(); ++k)
    params_[k].set_grad_ready_hook([this, k, weight] {
      fill(k, weight);
      start_ready_buckets();
    });
  hooked_ = true;
}

void GradientReducer::finish(double weight) {
  if (!hooked_) begin_step();
  remove_hooks();
  for (size_t k = 0; k < params_.size(); ++k) fill(k, weight);
  start_ready_buckets();
  for (Bucket& b : buckets_) {
    dist::wait(b.request);
    for (size_t slot = 0; slot < b.members.size(); ++slot) {
      Variable& p = params_[b.members[slot]];
      const int64_t n = p.numel(), at = b.offset[slot];
      const double ranks_with_grad =
          b.dtype == DType::f64 ? b.f64[size_t(b.elements) + slot] : double(b.f32[size_t(b.elements) + slot]);
      if (ranks_with_grad == 0) continue;
      // Into the existing gradient when it is a dense buffer of the parameter's dtype, else a new one.
      Variable g = p.grad();
      const bool reuse = g.defined() && g.dtype() == b.dtype && g.data().is_contiguous() && g.shape() == p.shape() &&
                         !g.requires_grad() && g.data().storage().use_count() == 1;
      Tensor out = reuse ? g.data() : Tensor::empty(p.shape(), b.dtype);
      const void* src = b.dtype == DType::f64 ? static_cast<const void*>(b.f64.data() + at)
                                              : static_cast<const void*>(b.f32.data() + at);
      std::memcpy(out.data_ptr(), src, size_t(n) * dtype_size(b.dtype));
      if (!reuse) p.set_grad(Variable(out));
    }
  }
}

}  // namespace lowbit::train
