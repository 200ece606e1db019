// Helpers shared by the fuzz targets (libFuzzer entry point LLVMFuzzerTestOneInput).
//
// A target fails (aborts, which libFuzzer and the replay driver report with the input) when
//   - the code under test throws anything that is not a qkscope::Error (std::bad_alloc,
//     std::out_of_range, nlohmann::json exceptions, qkscope::InternalError, ...);
//   - a property the target checks does not hold (FUZZ_EXPECT);
//   - a sanitizer reports (the targets are built with ASan + UBSan).
// Throwing a qkscope::Error is the expected way to refuse bad input.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

namespace qkscope::fuzz {

// A property of the code under test does not hold: print it and abort, so that the input is
// saved as a crash.
[[noreturn]] inline void property_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "fuzz property failed: %s at %s:%d\n", what, file, line);
  std::abort();
}

#define FUZZ_EXPECT(cond) \
  ((cond) ? static_cast<void>(0) : ::qkscope::fuzz::property_failed(#cond, __FILE__, __LINE__))

// A file whose contents are replaced for every input: an in-memory file (memfd) reached through
// /proc/self/fd, so that path-taking readers can be fuzzed without touching the disk.
class MemFile {
 public:
  explicit MemFile(const char* name) {
    fd_ = ::memfd_create(name, 0);
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  // Replaces the contents with `bytes`; returns the path readers open.
  const std::string& set(std::string_view bytes) {
    if (::ftruncate(fd_, 0) != 0) std::abort();
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::pwrite(fd_, bytes.data() + done, bytes.size() - done,
                                 static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<std::size_t>(n);
    }
    return path_;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

// A path in the temporary directory private to this process, for targets that must write real
// files (writers rename into place). The caller removes the file when done with it.
inline std::filesystem::path scratch_path(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("qkscope_fuzz_" + std::to_string(::getpid()) + "_" + name);
}

// Input split at its first NUL byte: (before, after). Without a NUL, `after` is empty.
inline std::pair<std::string_view, std::string_view> split_at_nul(const uint8_t* data,
                                                                  std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = all.find('\0');
  if (nul == std::string_view::npos) return {all, {}};
  return {all.substr(0, nul), all.substr(nul + 1)};
}

// Reads fixed-size values from the front of the input; zeros once it runs out.
class Bytes {
 public:
  Bytes(const uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  bool flag() { return (u8() & 1) != 0; }
  template <class T>
  T raw() {
    T value{};
    unsigned char buffer[sizeof(T)] = {};
    for (std::size_t i = 0; i < sizeof(T); ++i) buffer[i] = u8();
    std::memcpy(&value, buffer, sizeof(T));
    return value;
  }
  // A value in [lo, hi].
  int64_t range(int64_t lo, int64_t hi) {
    const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) + 1;
    const uint64_t r = raw<uint32_t>();
    return span == 0 ? lo + static_cast<int64_t>(r)
                     : static_cast<int64_t>(static_cast<uint64_t>(lo) + r % span);
  }
  // A short string (length byte, then the bytes).
  std::string text(std::size_t max) {
    const std::size_t n = u8() % (max + 1);
    std::string out;
    for (std::size_t i = 0; i < n && !empty(); ++i) out += static_cast<char>(u8());
    return out;
  }

 private:
  const uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

}  // namespace qkscope::fuzz
