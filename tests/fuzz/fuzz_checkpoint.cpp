// libFuzzer harness of the checkpoint reader: core/serialize.h load_checkpoint_data, the code
// load_checkpoint runs on the file's contents.
//
// Input: a whole checkpoint file when it starts with the magic "LOWBITCK"; otherwise the payload
// (metadata and tensor records), which the harness wraps in a valid header (size and CRC-32), so
// the fuzzer reaches the record parser instead of stopping at the checksum.
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/serialize.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string file;
  if (size >= 8 && std::memcmp(data, "LOWBITCK", 8) == 0) {
    file.assign(reinterpret_cast<const char*>(data), size);
  } else {
    auto put = [&file](const auto& v) { file.append(reinterpret_cast<const char*>(&v), sizeof v); };
    file = "LOWBITCK";
    put(lowbit::kCheckpointVersion);
    put(uint32_t{0});
    put(uint64_t{size});
    put(uint32_t(crc32(crc32(0L, Z_NULL, 0), data, uInt(size))));
    file.append(reinterpret_cast<const char*>(data), size);
  }
  try {
    const lowbit::Checkpoint c = lowbit::load_checkpoint_data(file, "fuzz.ckpt");
    for (const auto& [name, t] : c.tensors)
      if (!t.defined() || t.numel() * int64_t(lowbit::dtype_size(t.dtype())) > int64_t(size)) __builtin_trap();
  } catch (const lowbit::Error&) {
  }
  return 0;
}
