// Live progress of one epoch: on a terminal a bar redrawn in place (batch, loss, accuracy,
// images/s, ETA); otherwise (a pipe, a log file, CI) a plain line every `plain_every` batches
// and at the end, so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace lowbit::train {

class Progress {
 public:
  Progress(std::string label, int64_t total_batches, int64_t plain_every = 50);
  // Called after each batch with running totals of the epoch so far.
  void update(int64_t batch_done, double mean_loss, double accuracy, int64_t images_done);
  void finish();  // ends the bar's line
  double seconds() const;

  static bool is_terminal();

 private:
  std::string label_;
  int64_t total_;
  int64_t plain_every_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_duration(double seconds);

}  // namespace lowbit::train
