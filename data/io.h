// Byte-level file access for the data readers: whole-file reads that transparently accept raw or
// gzip-compressed files (decompressed in memory with zlib), gzip/zlib writers (used to produce test
// fixtures), and zlib inflate/deflate of in-memory buffers (MAT-file miCOMPRESSED elements).
//
// Contract: every failure throws lowbit::Error naming `who` (the reader) and the path: a missing
// file, an unreadable file, a truncated or corrupt gzip stream. Nothing is ever read short
// silently.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace lowbit::data {

using Bytes = std::vector<uint8_t>;

// Reads the whole file; gzip files are decompressed. `who` prefixes error messages.
Bytes read_file_bytes(const std::string& path, const std::string& who);
// Reads the whole file as stored (no decompression).
Bytes read_file_raw(const std::string& path, const std::string& who);
// The contents of a file held in memory: `file` itself, or, when it starts with the gzip magic
// (1f 8b), its decompressed bytes, kept in `storage`. Concatenated gzip members are decoded in
// turn; a stream cut short, a corrupt stream or bytes after the last member other than zero
// padding throw naming `who` and `name`.
std::span<const uint8_t> gunzip_if_gzip(std::span<const uint8_t> file, Bytes& storage, const std::string& name,
                                        const std::string& who);
// Writes `bytes` to `path`, gzip-compressed when `gzip` is true.
void write_file_bytes(const std::string& path, const Bytes& bytes, bool gzip = false);
// zlib streams (RFC 1950), as found in MAT-file miCOMPRESSED elements.
Bytes zlib_compress(const uint8_t* data, size_t size);
// Inflates one zlib stream; throws naming `who` when the stream is corrupt or truncated.
Bytes zlib_decompress(const uint8_t* data, size_t size, const std::string& who);

bool file_exists(const std::string& path);
// The first of `path` and `path + ".gz"` that exists, else "".
std::string find_raw_or_gz(const std::string& path);

// Big/little-endian loads from a byte pointer.
inline uint32_t load_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
inline uint32_t load_le32(const uint8_t* p) {
  return (uint32_t(p[3]) << 24) | (uint32_t(p[2]) << 16) | (uint32_t(p[1]) << 8) | uint32_t(p[0]);
}
inline uint16_t load_le16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }

}  // namespace lowbit::data
