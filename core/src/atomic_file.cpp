#include "qkscope/atomic_file.h"

#include <memory>
#include <filesystem>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <utility>

#include "qkscope/error.h"

namespace qkscope {
namespace {

std::string system_reason(int err) { return std::strerror(err); }

// A name no other writer uses: the pid separates processes, the counter threads and objects.
std::string temp_name(const std::string& path) {
  static std::atomic<unsigned long> counter{0};
  return fmt::format("{}.tmp-{}-{}", path, static_cast<long>(::getpid()), counter++);
}

// Temporary files being written, so that an interrupted program can remove them
// (remove_pending_temporary_files). Never destroyed: usable until the very end of the process.
struct PendingFiles {
  std::mutex mutex;
  std::set<std::string> paths;
};
PendingFiles& pending() {
  static PendingFiles* files = new PendingFiles;
  return *files;
}
void track(const std::string& path) {
  std::lock_guard<std::mutex> lock(pending().mutex);
  pending().paths.insert(path);
}
void untrack(const std::string& path) noexcept {
  std::lock_guard<std::mutex> lock(pending().mutex);
  pending().paths.erase(path);
}

}  // namespace

void remove_pending_temporary_files() noexcept {
  std::lock_guard<std::mutex> lock(pending().mutex);
  for (const std::string& path : pending().paths) ::unlink(path.c_str());
  pending().paths.clear();
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  QKSCOPE_CHECK(!path_.empty(), "cannot write a file with an empty path");
  // O_EXCL: never write into a file someone else created; retry with the next name if taken.
  for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
    temp_path_ = temp_name(path_);
    // 0666 lets the umask decide the final permissions, as for any newly created file.
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && errno != EEXIST) break;
  }
  QKSCOPE_CHECK(fd_ >= 0, "cannot create '{}' to write '{}': {}", temp_path_, path_,
                system_reason(errno));
  track(temp_path_);
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::write(const void* data, std::size_t n_bytes) {
  QKSCOPE_ASSERT(fd_ >= 0 && !committed_);
  const char* p = static_cast<const char*>(data);
  while (n_bytes > 0) {
    const ssize_t n = ::write(fd_, p, n_bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      discard();
      throw Error(fmt::format("cannot write '{}': {}", path_, system_reason(err)));
    }
    p += n;
    n_bytes -= static_cast<std::size_t>(n);
  }
}

void AtomicFile::commit() {
  QKSCOPE_ASSERT(fd_ >= 0 && !committed_);
  // fsync before rename: after a crash the target is either the old file or the complete new
  // one, never a renamed file whose blocks were not written yet.
  if (::fsync(fd_) != 0) {
    const int err = errno;
    discard();
    throw Error(fmt::format("cannot write '{}': {}", path_, system_reason(err)));
  }
  const int closed = ::close(fd_);
  const int close_err = errno;
  fd_ = -1;
  if (closed != 0) {
    discard();
    throw Error(fmt::format("cannot write '{}': {}", path_, system_reason(close_err)));
  }
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const std::string message = fmt::format("cannot rename '{}' to '{}': {}", temp_path_, path_,
                                            system_reason(errno));
    discard();
    throw Error(message);
  }
  untrack(temp_path_);
  committed_ = true;
}

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty()) {
    untrack(temp_path_);
    std::remove(temp_path_.c_str());
    temp_path_.clear();
  }
}

void write_bytes_atomically(const std::string& path, std::string_view content) {
  AtomicFile out(path);
  out.write(content);
  out.commit();
}

std::vector<std::string> write_files_together(
    const std::string& dir, const std::vector<std::pair<std::string, std::string>>& files,
    const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  QKSCOPE_CHECK(!ec && std::filesystem::is_directory(dir), "{}: cannot create output folder '{}': {}",
                what, dir, ec ? ec.message() : "not a folder");
  const std::filesystem::path base(dir);
  std::vector<std::string> paths;
  std::vector<std::unique_ptr<AtomicFile>> pending;
  for (const auto& [name, content] : files) {
    paths.push_back((base / name).string());
    pending.push_back(std::make_unique<AtomicFile>(paths.back()));
    pending.back()->write(content);
  }
  for (auto& file : pending) file->commit();
  return paths;
}

}  // namespace qkscope
