// Checkpoint files: named tensors plus typed metadata, versioned, checksummed, written atomically.
//
// Format (all integers little-endian):
//   magic        8 bytes  "LOWBITCK"
//   version      u32      kCheckpointVersion
//   flags        u32      0
//   payload_size u64      bytes that follow the header
//   payload_crc  u32      CRC-32 (zlib) of the payload
//   payload:
//     u32 metadata count, then per entry: key (u32 length + bytes), type u8 (0 int64, 1 double,
//         2 string), value (i64 | f64 | u32 length + bytes)
//     u32 tensor count, then per tensor: name (u32 length + bytes), dtype u8 (lowbit::DType),
//         u32 ndim, i64 dims[ndim], u64 nbytes, raw row-major data
//
// save_checkpoint writes `path + ".tmp"` in the same folder, flushes it to disk, then renames it over
// `path`: a crash leaves either the old file or the new one, never a torn file.
// load_checkpoint checks magic, version, sizes, checksum and every record, and throws lowbit::Error
// naming the file and what is wrong (truncated, bad magic, checksum mismatch, unknown dtype, a
// tensor larger than the bytes left, duplicate names, ...); it allocates a tensor only after
// checking that its bytes are in the file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <variant>

#include "core/tensor.h"

namespace lowbit {

inline constexpr uint32_t kCheckpointVersion = 1;

using MetaValue = std::variant<int64_t, double, std::string>;

struct Checkpoint {
  std::map<std::string, MetaValue> meta;
  std::map<std::string, Tensor> tensors;

  // Typed metadata access; a missing key or a wrong type throws naming the key.
  int64_t get_int(const std::string& key) const;
  double get_double(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  bool has(const std::string& key) const { return meta.count(key) != 0; }
  // Tensors under "prefix." with the prefix stripped (e.g. "model." -> a module's state dict).
  std::map<std::string, Tensor> tensors_with_prefix(const std::string& prefix) const;
  void add_tensors(const std::string& prefix, const std::map<std::string, Tensor>& ts);
};

void save_checkpoint(const std::string& path, const Checkpoint& ckpt);
Checkpoint load_checkpoint(const std::string& path);
// The same parsing from a file's contents held in memory; `name` labels messages (load_checkpoint
// reads the file and calls this; so does the fuzzer tests/fuzz/fuzz_checkpoint.cpp).
Checkpoint load_checkpoint_data(std::string_view file, const std::string& name);

// Writes `contents` to `path` atomically (temporary file in the same folder, fsync, rename).
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace lowbit
