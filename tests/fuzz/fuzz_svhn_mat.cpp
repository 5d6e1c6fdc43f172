// libFuzzer harness of the SVHN MAT-file reader: data/dataset.h read_svhn_mat_data (data/mat.cpp),
// the code read_svhn_mat runs on the file's contents (MATLAB 5.0 MAT-file, elements plain or
// miCOMPRESSED; the whole file may also be gzip). Input: one .mat file.
#include <cstdint>
#include <span>

#include "core/error.h"
#include "data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lowbit::data::read_svhn_mat_data(std::span<const uint8_t>(data, size), "train_32x32.mat").validate();
  } catch (const lowbit::Error&) {
  }
  return 0;
}
