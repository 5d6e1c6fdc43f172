// Data-parallel gradient all-reduce in buckets, started during backward (docs/distributed.md).
//
// Contract
//   GradientReducer(params, bucket_bytes): `params` in the same order on every rank (fit passes every
//     optimizer group's parameters once). Buckets are runs of consecutive parameters of one dtype
//     taken from the last parameter to the first (backward finishes the last layers first), each of
//     about bucket_bytes, plus one flag slot per parameter ("this rank has a gradient").
//   start(weight): hooks every parameter (Variable::set_grad_ready_hook). When a parameter's gradient
//     is final, its gradient times `weight` (the rank's share of the global batch) goes into its bucket;
//     a bucket whose parameters are all in starts its MPI_Iallreduce. Buckets start strictly in bucket
//     order on every rank (MPI's rule for collectives), so a ready bucket waits for those before it.
//     Only the calling thread's backward may fire the hooks (MPI_THREAD_FUNNELED).
//   finish(weight): removes the hooks; a parameter whose hook did not fire (its gradient was set by the
//     step itself, by a second backward, or there is none) goes in now; the remaining buckets start in
//     order; all are waited for and written back into the gradients: each is the weighted sum over the
//     ranks; a parameter no rank has a gradient for keeps none, one some rank has a gradient for gets
//     zeros from the others. Every rank calls finish for every step (with or without start), so the
//     ranks issue the same collectives. Gradients travel in logical (row-major) order.
//   A rank that throws between start and finish ends the job (dist::abort in fit), so no rank waits
//   on a bucket another will never start.
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/variable.h"
#include "core/distributed.h"

namespace lowbit::train {

class GradientReducer {
 public:
  GradientReducer(std::vector<Variable> params, int64_t bucket_bytes);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  void start(double weight);
  void finish(double weight);

  int64_t num_buckets() const { return int64_t(buckets_.size()); }
  // Of the last step: buckets started from a hook during backward (the rest started in finish).
  int64_t started_during_backward() const { return started_in_backward_; }

 private:
  struct Bucket {
    DType dtype = DType::f32;
    std::vector<size_t> members;  // parameter indices
    std::vector<int64_t> offset;  // each member's first element in data
    std::vector<float> f32;       // gradients, then one flag per member
    std::vector<double> f64;
    int64_t elements = 0;  // gradient elements (flags follow)
    size_t filled = 0;     // members in so far this step
    dist::Request request;
  };
  void begin_step();
  void fill(size_t param, double weight);
  void start_ready_buckets();
  void remove_hooks();

  std::vector<Variable> params_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // parameter -> bucket
  std::vector<size_t> slot_of_;    // parameter -> member position in its bucket
  std::vector<bool> filled_;       // parameter -> in its bucket this step
  size_t next_to_start_ = 0;
  bool hooked_ = false;
  int64_t started_in_backward_ = 0;
};

}  // namespace lowbit::train
