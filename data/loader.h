// DataLoader: deterministic, prefetching mini-batches of an ImageDataset.
//
// Contract
//   - Epoch e visits the samples in permutation(e), a pure function of (seed, e) (Philox-driven
//     Fisher-Yates; identity when shuffle is off). Batch b holds positions [b*B, min((b+1)*B, N))
//     of that order; drop_last drops a final short batch.
//   - Each sample is converted to floats 0..255 (HWC) and run through options.transforms with the
//     generator sample_generator(seed, e, dataset index) (data/transforms.h).
//   - So make_batch(e, b) is a pure function of (dataset, options minus threading, e, b): the same
//     for any num_workers, prefetch depth or start batch; resuming with begin_epoch(e, k)
//     reproduces batches k.. of the uninterrupted epoch.
//   - Batch.images: float32, logical [B, C, H, W], channels-last memory; Batch.labels: int32 [B].
//   - Sharding (data-parallel training, docs/distributed.md): with set_shard(r, P) batch b holds only
//     rank r's contiguous part of the global batch above, positions [lo, hi) with
//     lo = first + count*r/P, hi = first + count*(r+1)/P (count = the global batch's size), so the
//     union over the P ranks is exactly the one-process batch, in order. num_batches() stays the
//     global count; Batch.global_size is the global batch's size. Default: (0, 1), the whole batch.
//   - prefetch > 0: a background thread prepares up to `prefetch` batches ahead (bounded queue);
//     a batch's samples are processed with lowbit::parallel_for (num_workers == 0), serially (1),
//     or in a oneTBB arena of num_workers threads. Errors in the background thread are rethrown by
//     next(). Destroying the loader or starting another epoch mid-epoch stops the thread cleanly.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"
#include "data/transforms.h"

namespace lowbit::data {

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  uint64_t seed = 0;
  bool drop_last = false;
  Compose transforms = parse_transforms("");  // ToFloat only
  int num_workers = 0;                        // 0: lowbit's thread count; 1: serial; n: n threads
  int64_t prefetch = 2;                       // batches prepared ahead; 0: on the caller's thread
};

struct Batch {
  Tensor images;       // float32 [B, C, H, W], channels-last memory
  Tensor labels;       // int32 [B]
  int64_t index = -1;  // batch number within the epoch
  int64_t epoch = -1;
  int64_t global_size = 0;  // images in the global batch (all shards); labels.numel() unsharded
};

// Order of n samples in `epoch`: Fisher-Yates driven by Philox keyed on (seed, epoch).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

class DataLoader {
 public:
  explicit DataLoader(const ImageDataset& dataset, LoaderOptions options = {});
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t num_batches() const;
  const LoaderOptions& options() const { return options_; }
  const ImageDataset& dataset() const { return dataset_; }

  // Rank r of P takes its contiguous part of every batch (see contract); stops a running epoch.
  void set_shard(int rank, int world);
  int shard_rank() const { return shard_rank_; }
  int shard_world() const { return shard_world_; }
  // Rank r's share [lo, hi) of a global batch of `count` images.
  static std::pair<int64_t, int64_t> shard_range(int64_t count, int rank, int world) {
    return {count * rank / world, count * (rank + 1) / world};
  }

  std::vector<int64_t> permutation(int64_t epoch) const;
  // Batch b of epoch e, built on the calling thread (pure function; see contract).
  Batch make_batch(int64_t epoch, int64_t batch) const;

  // Sequential access: begin_epoch then next() until it returns false.
  void begin_epoch(int64_t epoch, int64_t start_batch = 0);
  bool next(Batch& out);
  // Stops the background thread (if any) and ends the current epoch.
  void stop();

  // Range-for over the epoch set by set_epoch (for (const Batch& b : loader)).
  void set_epoch(int64_t epoch) { epoch_ = epoch; }
  int64_t epoch() const { return epoch_; }
  class Iterator {
   public:
    const Batch& operator*() const { return batch_; }
    const Batch* operator->() const { return &batch_; }
    Iterator& operator++();
    bool operator!=(const Iterator& other) const { return done_ != other.done_; }

   private:
    friend class DataLoader;
    Iterator(DataLoader* loader, bool done) : loader_(loader), done_(done) {}
    DataLoader* loader_;
    Batch batch_;
    bool done_;
  };
  Iterator begin();
  Iterator end() { return Iterator(this, true); }

 private:
  void fill_samples(const std::vector<int64_t>& order, int64_t first, int64_t count, int64_t epoch, Batch& out) const;
  std::shared_ptr<const std::vector<int64_t>> cached_permutation(int64_t epoch) const;
  void produce(int64_t epoch, int64_t start_batch);

  ImageDataset dataset_;
  LoaderOptions options_;
  Geometry geometry_{0, 0, 0};
  int64_t epoch_ = 0;
  int shard_rank_ = 0, shard_world_ = 1;

  mutable std::mutex perm_mutex_;
  mutable int64_t perm_epoch_ = -1;
  mutable std::shared_ptr<const std::vector<int64_t>> perm_;

  // Epoch state (consumer side).
  int64_t cur_epoch_ = -1, cur_next_ = 0;
  bool active_ = false;
  // Producer/consumer queue.
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Slot> queue_;
  bool stop_ = false;
};

}  // namespace lowbit::data
