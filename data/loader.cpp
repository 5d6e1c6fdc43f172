#include "data/loader.h"

#include <tbb/task_arena.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/parallel.h"

namespace lowbit::data {

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  // Key for this epoch's stream: one Philox block of (seed; tag | epoch).
  constexpr uint64_t kShuffleTag = uint64_t(0x5f1) << 48;
  const auto r = philox4x32(seed, kShuffleTag ^ uint64_t(epoch), 0);
  const Generator gen((uint64_t(r[0]) << 32) | r[1]);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = std::min<int64_t>(i, int64_t(gen.uniform_at(uint64_t(i)) * double(i + 1)));
    std::swap(order[size_t(i)], order[size_t(j)]);
  }
  return order;
}

DataLoader::DataLoader(const ImageDataset& dataset, LoaderOptions options)
    : dataset_(dataset), options_(std::move(options)) {
  dataset_.validate();
  LOWBIT_CHECK(options_.batch_size > 0, "DataLoader: batch_size ", options_.batch_size, " must be positive");
  LOWBIT_CHECK(options_.prefetch >= 0, "DataLoader: prefetch ", options_.prefetch, " must be >= 0");
  LOWBIT_CHECK(options_.num_workers >= 0, "DataLoader: num_workers ", options_.num_workers, " must be >= 0");
  geometry_ = options_.transforms.output_geometry({dataset_.height(), dataset_.width(), dataset_.channels()});
}

DataLoader::~DataLoader() { stop(); }

int64_t DataLoader::num_batches() const {
  const int64_t n = dataset_.size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<int64_t> DataLoader::permutation(int64_t epoch) const { return *cached_permutation(epoch); }

std::shared_ptr<const std::vector<int64_t>> DataLoader::cached_permutation(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(perm_mutex_);
  if (!perm_ || perm_epoch_ != epoch) {
    if (options_.shuffle) {
      perm_ = std::make_shared<const std::vector<int64_t>>(epoch_permutation(dataset_.size(), options_.seed, epoch));
    } else {
      std::vector<int64_t> identity(size_t(dataset_.size()));
      for (size_t i = 0; i < identity.size(); ++i) identity[i] = int64_t(i);
      perm_ = std::make_shared<const std::vector<int64_t>>(std::move(identity));
    }
    perm_epoch_ = epoch;
  }
  return perm_;
}

void DataLoader::fill_samples(const std::vector<int64_t>& order, int64_t first, int64_t count, int64_t epoch,
                              Batch& out) const {
  const Geometry in{dataset_.height(), dataset_.width(), dataset_.channels()};
  const int64_t in_size = in.height * in.width * in.channels;
  const int64_t out_size = geometry_.height * geometry_.width * geometry_.channels;
  float* dst = out.images.data<float>();
  int32_t* labels = out.labels.data<int32_t>();
  // A failing sample must not escape a worker thread half-way; the error of the earliest failing
  // position is rethrown afterwards, so the reported error does not depend on scheduling.
  std::mutex error_mutex;
  int64_t error_position = count;
  std::exception_ptr error;
  auto work = [&](int64_t lo, int64_t hi) {
    ImageBuffer buf;
    for (int64_t i = lo; i < hi; ++i) try {
        const int64_t idx = order[size_t(first + i)];
        buf.height = in.height, buf.width = in.width, buf.channels = in.channels;
        buf.pixels.resize(size_t(in_size));
        const uint8_t* src = dataset_.pixels(idx);
        for (int64_t k = 0; k < in_size; ++k) buf.pixels[size_t(k)] = float(src[k]);
        Generator rng = sample_generator(options_.seed, epoch, idx);
        options_.transforms.apply(buf, rng);
        LOWBIT_CHECK(buf.height == geometry_.height && buf.width == geometry_.width &&
                         buf.channels == geometry_.channels && int64_t(buf.pixels.size()) == out_size,
                     "DataLoader: sample ", idx, " of ", dataset_.source, " came out of the transforms as ", buf.height,
                     "x", buf.width, "x", buf.channels, ", expected ", geometry_.height, "x", geometry_.width, "x",
                     geometry_.channels);
        std::memcpy(dst + i * out_size, buf.pixels.data(), size_t(out_size) * sizeof(float));
        labels[i] = dataset_.label(idx);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (i < error_position) error_position = i, error = std::current_exception();
        return;
      }
  };
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(in_size, 1));
  if (options_.num_workers == 1) {
    work(0, count);
  } else if (options_.num_workers == 0) {
    parallel_for(0, count, grain, work);
  } else {
    tbb::task_arena arena(options_.num_workers);
    arena.execute([&] { parallel_for(0, count, grain, work); });
  }
  if (error) std::rethrow_exception(error);
}

Batch DataLoader::make_batch(int64_t epoch, int64_t batch) const {
  LOWBIT_CHECK(batch >= 0 && batch < num_batches(), "DataLoader::make_batch: batch ", batch, " outside [0, ",
               num_batches(), ")");
  const auto order = cached_permutation(epoch);
  const int64_t global_first = batch * options_.batch_size;
  const int64_t global_count = std::min<int64_t>(options_.batch_size, dataset_.size() - global_first);
  const auto [lo, hi] = shard_range(global_count, shard_rank_, shard_world_);
  const int64_t first = global_first + lo, count = hi - lo;
  Batch out;
  out.global_size = global_count;
  out.images = Tensor::empty({count, geometry_.channels, geometry_.height, geometry_.width}, DType::f32,
                             MemoryFormat::channels_last);
  out.labels = Tensor::empty({count}, DType::i32);
  out.index = batch;
  out.epoch = epoch;
  fill_samples(*order, first, count, epoch, out);
  return out;
}

void DataLoader::set_shard(int rank, int world) {
  LOWBIT_CHECK(world >= 1 && rank >= 0 && rank < world, "DataLoader::set_shard: rank ", rank, " of ", world);
  stop();
  shard_rank_ = rank, shard_world_ = world;
}

void DataLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  queue_.clear();
  stop_ = false;
  active_ = false;
}

void DataLoader::produce(int64_t epoch, int64_t start_batch) {
  for (int64_t b = start_batch; b < num_batches(); ++b) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || int64_t(queue_.size()) < options_.prefetch; });
      if (stop_) return;
    }
    Slot slot;
    try {
      slot.batch = make_batch(epoch, b);
    } catch (...) {
      slot.error = std::current_exception();
    }
    const bool failed = slot.error != nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_) return;
      queue_.push_back(std::move(slot));
    }
    cv_.notify_all();
    if (failed) return;
  }
}

void DataLoader::begin_epoch(int64_t epoch, int64_t start_batch) {
  stop();
  LOWBIT_CHECK(start_batch >= 0 && start_batch <= num_batches(), "DataLoader::begin_epoch: start batch ", start_batch,
               " outside [0, ", num_batches(), "]");
  cur_epoch_ = epoch;
  cur_next_ = start_batch;
  active_ = true;
  cached_permutation(epoch);  // compute once on this thread
  if (options_.prefetch > 0 && start_batch < num_batches())
    worker_ = std::thread([this, epoch, start_batch] { produce(epoch, start_batch); });
}

bool DataLoader::next(Batch& out) {
  LOWBIT_CHECK(active_, "DataLoader::next: call begin_epoch first");
  if (cur_next_ >= num_batches()) {
    if (worker_.joinable()) worker_.join();  // the producer has delivered everything
    return false;
  }
  if (options_.prefetch == 0) {
    out = make_batch(cur_epoch_, cur_next_++);
    return true;
  }
  Slot slot;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return !queue_.empty(); });
    slot = std::move(queue_.front());
    queue_.pop_front();
  }
  cv_.notify_all();
  if (slot.error) {
    stop();
    std::rethrow_exception(slot.error);
  }
  out = std::move(slot.batch);
  ++cur_next_;
  return true;
}

DataLoader::Iterator DataLoader::begin() {
  begin_epoch(epoch_, 0);
  Iterator it(this, false);
  ++it;
  return it;
}

DataLoader::Iterator& DataLoader::Iterator::operator++() {
  if (!loader_->next(batch_)) done_ = true;
  return *this;
}

}  // namespace lowbit::data
