#include "data/io.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace lowbit::data {

bool file_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

std::string find_raw_or_gz(const std::string& path) {
  if (file_exists(path)) return path;
  if (file_exists(path + ".gz")) return path + ".gz";
  return "";
}

Bytes read_file_bytes(const std::string& path, const std::string& who) {
  LOWBIT_CHECK(file_exists(path), who, ": ", path, ": file not found");
  gzFile f = gzopen(path.c_str(), "rb");
  LOWBIT_CHECK(f != nullptr, who, ": ", path, ": cannot open for reading");
  gzbuffer(f, 1 << 20);
  // Capacity guess: the file size, or for gzip the trailer's ISIZE (uncompressed size mod 2^32)
  // when plausible (<= 64x the compressed size; a corrupt trailer must not cause a huge
  // allocation), so large files are read without doubling copies.
  std::error_code ec;
  const uint64_t disk_size = std::filesystem::file_size(path, ec);
  uint64_t guess = ec ? 0 : disk_size;
  if (!ec && disk_size >= 18) {
    std::FILE* raw = std::fopen(path.c_str(), "rb");
    uint8_t magic[2] = {0, 0}, trailer[4] = {0, 0, 0, 0};
    if (raw && std::fread(magic, 1, 2, raw) == 2 && magic[0] == 0x1f && magic[1] == 0x8b &&
        std::fseek(raw, -4, SEEK_END) == 0 && std::fread(trailer, 1, 4, raw) == 4) {
      const uint64_t isize = load_le32(trailer);
      guess = isize <= 64 * disk_size ? isize : 4 * disk_size;
    }
    if (raw) std::fclose(raw);
  }
  Bytes out(size_t(std::max<uint64_t>(guess, 1)));
  size_t used = 0;
  std::vector<uint8_t> probe(65536);
  for (;;) {
    int got;
    if (used < out.size()) {
      got = gzread(f, out.data() + used, static_cast<unsigned>(std::min<size_t>(out.size() - used, size_t(1) << 30)));
      if (got > 0) used += size_t(got);
    } else {  // full: probe for more before growing (the guess is usually exact)
      got = gzread(f, probe.data(), static_cast<unsigned>(probe.size()));
      if (got > 0) {
        out.resize(std::max(out.size() * 2, out.size() + size_t(got)));
        std::memcpy(out.data() + used, probe.data(), size_t(got));
        used += size_t(got);
      }
    }
    if (got < 0) {
      int errnum = 0;
      const std::string msg = gzerror(f, &errnum);
      gzclose(f);
      throw Error(detail::concat(who, ": ", path, ": corrupt gzip stream (", msg, ")"));
    }
    if (got == 0) break;
  }
  // gzread stops quietly at a gzip stream cut short; gzerror then reports Z_BUF_ERROR.
  int errnum = 0;
  const std::string msg = gzerror(f, &errnum);
  gzclose(f);
  LOWBIT_CHECK(errnum == Z_OK || errnum == Z_STREAM_END, who, ": ", path, ": truncated or corrupt gzip stream (", msg,
               ") after ", used, " bytes");
  out.resize(used);
  return out;
}

void write_file_bytes(const std::string& path, const Bytes& bytes, bool gzip) {
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    LOWBIT_CHECK(f != nullptr, "write_file_bytes: ", path, ": cannot open for writing");
    size_t done = 0;
    while (done < bytes.size()) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(bytes.size() - done, size_t(1) << 30));
      const int wrote = gzwrite(f, bytes.data() + done, chunk);
      if (wrote <= 0) {
        gzclose(f);
        throw Error(detail::concat("write_file_bytes: ", path, ": write failed"));
      }
      done += size_t(wrote);
    }
    LOWBIT_CHECK(gzclose(f) == Z_OK, "write_file_bytes: ", path, ": close failed");
    return;
  }
  std::FILE* f = std::fopen(path.c_str(), "wb");
  LOWBIT_CHECK(f != nullptr, "write_file_bytes: ", path, ": cannot open for writing");
  const size_t wrote = bytes.empty() ? 0 : std::fwrite(bytes.data(), 1, bytes.size(), f);
  const bool closed = std::fclose(f) == 0;
  LOWBIT_CHECK(wrote == bytes.size() && closed, "write_file_bytes: ", path, ": write failed");
}

Bytes zlib_compress(const uint8_t* data, size_t size) {
  uLongf bound = compressBound(uLong(size));
  Bytes out(bound);
  const int rc = compress2(out.data(), &bound, data, uLong(size), Z_DEFAULT_COMPRESSION);
  LOWBIT_CHECK(rc == Z_OK, "zlib_compress: failed with code ", rc);
  out.resize(bound);
  return out;
}

Bytes zlib_decompress(const uint8_t* data, size_t size, const std::string& who) {
  z_stream zs{};
  LOWBIT_CHECK(inflateInit(&zs) == Z_OK, who, ": inflateInit failed");
  Bytes out(std::max<size_t>(size * 4, 4096));
  zs.next_in = const_cast<Bytef*>(data);
  size_t in_left = size;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.total_out == out.size()) out.resize(out.size() * 2);
    const size_t in_chunk = std::min<size_t>(in_left, size_t(1) << 30);
    zs.avail_in = uInt(in_chunk);
    const size_t out_room = std::min<size_t>(out.size() - zs.total_out, size_t(1) << 30);
    zs.next_out = out.data() + zs.total_out;
    zs.avail_out = uInt(out_room);
    rc = inflate(&zs, Z_NO_FLUSH);
    in_left -= in_chunk - zs.avail_in;
    if (rc == Z_STREAM_END) break;
    if (rc == Z_BUF_ERROR && in_left == 0 && zs.avail_out != 0) {
      inflateEnd(&zs);
      throw Error(detail::concat(who, ": truncated zlib stream (", size, " compressed bytes end mid-stream)"));
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      const std::string msg = zs.msg ? zs.msg : "unknown";
      inflateEnd(&zs);
      throw Error(detail::concat(who, ": corrupt zlib stream (", msg, ")"));
    }
    if (in_left == 0 && zs.avail_out != 0 && rc == Z_OK) {
      // All input consumed, output space left, and no stream end: the stream is cut short.
      inflateEnd(&zs);
      throw Error(detail::concat(who, ": truncated zlib stream (", size, " compressed bytes end mid-stream)"));
    }
  }
  out.resize(zs.total_out);
  inflateEnd(&zs);
  return out;
}

}  // namespace lowbit::data
