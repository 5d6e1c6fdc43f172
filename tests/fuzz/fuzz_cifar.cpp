// libFuzzer harness of the CIFAR binary readers: data/dataset.h read_cifar10_data and
// read_cifar100_data (fine and coarse labels), the code read_cifar10 / read_cifar100 run on each
// file's contents (raw or gzip). Input: one batch file.
#include <cstdint>
#include <span>

#include "core/error.h"
#include "data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> file(data, size);
  try {
    lowbit::data::read_cifar10_data(file, "data_batch.bin").validate();
  } catch (const lowbit::Error&) {
  }
  for (bool fine : {true, false}) {
    try {
      lowbit::data::read_cifar100_data(file, "train.bin", fine).validate();
    } catch (const lowbit::Error&) {
    }
  }
  return 0;
}
