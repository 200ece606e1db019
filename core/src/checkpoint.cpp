#include "qkscope/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <vector>

#include "qkscope/atomic_file.h"
#include "qkscope/error.h"
#include "qkscope/qk_file.h"
#include "qkscope/safetensors.h"

namespace qkscope {
namespace {

static_assert(sizeof(float) == 4, "q/k files store F32");

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// Four independent lanes over 32-byte blocks, so the multiplies pipeline.
struct Hasher {
  uint64_t lane[4] = {0x9e3779b97f4a7c15ULL, 0xc2b2ae3d27d4eb4fULL, 0x165667b19e3779f9ULL,
                      0x85ebca77c2b2ae63ULL};
  uint64_t length = 0;
  void block(const unsigned char* p) {
    for (int i = 0; i < 4; ++i) {
      uint64_t w;
      std::memcpy(&w, p + 8 * i, 8);
      lane[i] = rotl(lane[i] ^ (w * 0x87c37b91114253d5ULL), 31) * 0x4cf5ad432745937fULL;
    }
  }
  uint64_t finish(const unsigned char* tail, size_t n) {
    unsigned char last[32] = {};
    std::memcpy(last, tail, n);
    block(last);
    uint64_t h = mix(length);
    for (uint64_t l : lane) h = mix(h ^ l);
    return h;
  }
};

void fsync_folder(const std::string& path) {
  std::string folder = std::filesystem::path(path).parent_path().string();
  if (folder.empty()) folder = ".";
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // the rename happened; a folder we cannot open cannot be synced either
  ::fsync(fd);
  ::close(fd);
}

// Buffers the data section so that the file is written in large blocks.
class ChunkWriter {
 public:
  ChunkWriter(AtomicFile& out, uint64_t total, const WriteProgress& progress)
      : out_(out), total_(total), progress_(progress) {
    buffer_.reserve(kChunk);
  }
  void append(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const size_t take = std::min(n, kChunk - buffer_.size());
      buffer_.append(p, take);
      p += take;
      n -= take;
      if (buffer_.size() == kChunk) flush();
    }
  }
  void flush() {
    if (buffer_.empty()) return;
    out_.write(buffer_);
    written_ += buffer_.size();
    buffer_.clear();
    if (progress_) progress_(written_, total_);
  }

 private:
  static constexpr size_t kChunk = size_t{4} << 20;
  AtomicFile& out_;
  uint64_t total_, written_ = 0;
  const WriteProgress& progress_;
  std::string buffer_;
};

}  // namespace

std::string hash_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QKSCOPE_CHECK(in.good(), "cannot read '{}': {}", path, std::strerror(errno));
  Hasher h;
  std::vector<unsigned char> buffer(size_t{1} << 20);
  size_t pending = 0;  // bytes at the start of buffer not yet hashed (< 32)
  while (true) {
    in.read(reinterpret_cast<char*>(buffer.data() + pending),
            static_cast<std::streamsize>(buffer.size() - pending));
    const size_t n = pending + static_cast<size_t>(in.gcount());
    h.length += static_cast<uint64_t>(in.gcount());
    size_t i = 0;
    for (; i + 32 <= n; i += 32) h.block(buffer.data() + i);
    pending = n - i;
    std::memmove(buffer.data(), buffer.data() + i, pending);
    if (!in) break;
  }
  QKSCOPE_CHECK(in.eof(), "cannot read '{}': {}", path, std::strerror(errno));
  return fmt::format("{}:{:016x}", h.length, h.finish(buffer.data(), pending));
}

void write_store_file(const std::string& path, const QkStore& store,
                      const std::map<std::string, std::string>& extra,
                      const WriteProgress& progress) {
  const std::vector<QkStore::SiteInfo> sites = store.sites();
  const QkStore::Counts counts = store.counts();
  const int64_t n = store.tokens_kept();
  const bool ids = store.has_token_ids();

  // The header of the same file write_qk_file would write; the writer only lays it out (its
  // data pointers are never read), the data section is streamed below in that layout: I64
  // tensors first, then F32, each group in order of addition.
  SafetensorsWriter layout;
  QkData meta;  // only for the sample.* keys
  meta.sample = QkData::Sample{store.options().seed, store.options().max_tokens.value_or(0),
                               counts.cutoff};
  for (const auto& [key, value] : sample_metadata(meta)) layout.set_metadata(key, value);
  layout.set_metadata("format", kQkFormat);
  std::vector<int> layers;
  for (const auto& s : sites) layers.push_back(s.layer);
  layout.set_metadata("layers", fmt::format("{}", fmt::join(layers, ",")));
  layout.set_metadata("tokens_seen", std::to_string(counts.tokens_seen));
  layout.set_metadata("sequences_seen", std::to_string(counts.sequences_seen));
  for (const auto& [key, value] : extra) layout.set_metadata(key, value);

  static const char kAnywhere = 0;
  uint64_t total = 0;
  auto add = [&](const std::string& name, Dtype dtype, const Shape& shape) {
    size_t bytes = dtype_size(dtype);
    for (int64_t d : shape) bytes *= static_cast<size_t>(d);
    layout.add(name, dtype, shape, &kAnywhere, bytes);
    total += bytes;
  };
  add("tokens.sequence", Dtype::I64, {n});
  add("tokens.position", Dtype::I64, {n});
  if (ids) add("tokens.id", Dtype::I64, {n});
  std::vector<size_t> row(sites.size());
  for (size_t i = 0; i < sites.size(); ++i) {
    const auto& s = sites[i];
    const int heads = static_cast<int>(s.meta.head_index.size());
    const int dim = std::max(s.head_dim, 0);
    row[i] = static_cast<size_t>(heads) * dim;
    layout.set_metadata(fmt::format("layer{}.module", s.layer), s.meta.module);
    layout.set_metadata(fmt::format("layer{}.prescale", s.layer),
                        fmt::format("{:.17g}", s.meta.prescale));
    std::vector<int> identity(s.meta.head_index.size());
    std::iota(identity.begin(), identity.end(), 0);
    if (s.meta.head_index != identity)
      layout.set_metadata(fmt::format("layer{}.heads", s.layer),
                          fmt::format("{}", fmt::join(s.meta.head_index, ",")));
    add(fmt::format("layer{}.q", s.layer), Dtype::F32, {n, heads, dim});
    add(fmt::format("layer{}.k", s.layer), Dtype::F32, {n, heads, dim});
  }
  const std::string header = layout.header();

  AtomicFile out(path);
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header.size() >> (8 * i));
  out.write(length, 8);
  out.write(header);
  ChunkWriter data(out, total, progress);
  int64_t written_tokens = 0;
  store.visit_kept([&](const QkStore::KeptView& v) {
    for (size_t t = 0; t < v.position->size(); ++t) data.append(&v.sequence, 8);
    written_tokens += static_cast<int64_t>(v.position->size());
  });
  QKSCOPE_CHECK(written_tokens == n, "store file '{}': {} tokens kept but {} visited", path, n,
                written_tokens);
  store.visit_kept([&](const QkStore::KeptView& v) {
    data.append(v.position->data(), v.position->size() * 8);
  });
  if (ids)
    store.visit_kept([&](const QkStore::KeptView& v) {
      data.append(v.token_id->data(), v.token_id->size() * 8);
    });
  for (size_t i = 0; i < sites.size(); ++i) {
    store.visit_kept([&](const QkStore::KeptView& v) {
      data.append(v.q[i], v.position->size() * row[i] * sizeof(float));
    });
    store.visit_kept([&](const QkStore::KeptView& v) {
      data.append(v.k[i], v.position->size() * row[i] * sizeof(float));
    });
  }
  data.flush();
  out.commit();
  fsync_folder(path);
}

std::vector<std::pair<std::string, std::string>> store_sequence_metadata(
    const std::vector<SequenceRange>& ranges, const QkStore& store) {
  // sequence_metadata reads only the kept sequence indices of its QkData, in increasing order
  // (one entry per sequence is enough): those, without the q/k.
  QkData indices;
  store.visit_kept([&](const QkStore::KeptView& v) { indices.sequence.push_back(v.sequence); });
  return sequence_metadata(ranges, indices);
}

StoreFile read_store_file(const std::string& path) {
  StoreFile f;
  f.metadata = SafetensorsFile::open(path).metadata();
  f.kept = read_qk_file(path);
  f.counts.tokens_seen = f.kept.tokens_seen;
  f.counts.sequences_seen = f.kept.sequences_seen;
  f.counts.cutoff = f.kept.sample ? f.kept.sample->cutoff : 2.0;
  return f;
}

}  // namespace qkscope
