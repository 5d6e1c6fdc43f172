#include "data/io.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
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

Bytes read_file_raw(const std::string& path, const std::string& who) {
  LOWBIT_CHECK(file_exists(path), who, ": ", path, ": file not found");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  LOWBIT_CHECK(f != nullptr, who, ": ", path, ": cannot open for reading (", std::strerror(errno), ")");
  std::error_code ec;
  const uint64_t disk_size = std::filesystem::file_size(path, ec);
  Bytes out(ec ? size_t(1) << 16 : size_t(disk_size) + 1);  // +1: see the end of the file in one read
  size_t used = 0;
  for (;;) {
    if (used == out.size()) out.resize(out.size() * 2);
    const size_t got = std::fread(out.data() + used, 1, out.size() - used, f);
    used += got;
    if (got == 0) break;
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  LOWBIT_CHECK(!failed, who, ": ", path, ": read error after ", used, " bytes");
  out.resize(used);
  return out;
}

namespace {

// inflateEnd on every way out.
struct Inflater {
  z_stream zs{};
  bool live = false;
  ~Inflater() {
    if (live) inflateEnd(&zs);
  }
};

}  // namespace

std::span<const uint8_t> gunzip_if_gzip(std::span<const uint8_t> file, Bytes& storage, const std::string& name,
                                        const std::string& who) {
  if (file.size() < 2 || file[0] != 0x1f || file[1] != 0x8b) return file;
  // Capacity guess: the last member's ISIZE trailer (uncompressed size mod 2^32) when plausible
  // (<= 64x the compressed size; a corrupt trailer must not cause a huge allocation), so large
  // files are decompressed without doubling copies.
  size_t guess = 4 * file.size();
  if (file.size() >= 18) {
    const uint64_t isize = load_le32(file.data() + file.size() - 4);
    if (isize <= 64 * uint64_t(file.size())) guess = size_t(isize);
  }
  storage.resize(std::max<size_t>(guess, 64));
  Inflater inf;
  LOWBIT_CHECK(inflateInit2(&inf.zs, 16 + MAX_WBITS) == Z_OK, who, ": ", name, ": inflateInit2 failed");
  inf.live = true;
  size_t in_pos = 0, used = 0;
  for (;;) {  // one gzip member per pass
    for (;;) {
      if (used == storage.size()) storage.resize(storage.size() * 2);
      const uInt in_chunk = uInt(std::min<size_t>(file.size() - in_pos, size_t(1) << 30));
      const uInt out_chunk = uInt(std::min<size_t>(storage.size() - used, size_t(1) << 30));
      inf.zs.next_in = const_cast<Bytef*>(file.data() + in_pos);
      inf.zs.avail_in = in_chunk;
      inf.zs.next_out = storage.data() + used;
      inf.zs.avail_out = out_chunk;
      const int rc = inflate(&inf.zs, Z_NO_FLUSH);
      in_pos += in_chunk - inf.zs.avail_in;
      used += out_chunk - inf.zs.avail_out;
      if (rc == Z_STREAM_END) break;
      if (rc == Z_OK || (rc == Z_BUF_ERROR && inf.zs.avail_out == 0)) continue;  // progress, or needs room
      if (rc == Z_BUF_ERROR && in_pos == file.size())
        throw Error(detail::concat(who, ": ", name, ": truncated gzip stream: the ", file.size(),
                                   " compressed bytes end mid-stream (after ", used, " decompressed bytes)"));
      throw Error(detail::concat(who, ": ", name, ": corrupt gzip stream (", inf.zs.msg ? inf.zs.msg : "no progress",
                                 ") at compressed byte ", in_pos, " (after ", used, " decompressed bytes)"));
    }
    if (in_pos == file.size()) break;
    const std::span<const uint8_t> rest = file.subspan(in_pos);
    if (rest.size() >= 2 && rest[0] == 0x1f && rest[1] == 0x8b) {  // another member follows
      inflateReset(&inf.zs);
      continue;
    }
    LOWBIT_CHECK(std::all_of(rest.begin(), rest.end(), [](uint8_t b) { return b == 0; }), who, ": ", name, ": ",
                 rest.size(), " bytes after the end of the gzip stream (at byte ", in_pos, ") are not gzip data");
    break;  // zero padding, as gzip(1) accepts
  }
  storage.resize(used);
  return storage;
}

Bytes read_file_bytes(const std::string& path, const std::string& who) {
  Bytes raw = read_file_raw(path, who);
  Bytes out;
  if (gunzip_if_gzip(raw, out, path, who).data() == raw.data()) return raw;
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
