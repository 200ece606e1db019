// Writing a file so that readers never see it half-written: the bytes go to a temporary file
// in the same folder, which is flushed to disk and then renamed over the target. An interrupted
// or failed write leaves the previous file (or none) and no temporary behind.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qkscope {

// One atomic write in progress. Typical use:
//
//   AtomicFile out(path);          // creates "<path>.tmp-<pid>-<n>" next to `path`
//   out.write(header); out.write(data, n_bytes);
//   out.commit();                  // fsync, close, rename over `path`
//
// Without commit() (an exception on the way), the destructor removes the temporary file.
// Errors throw qkscope::Error naming the path and the system's reason. Not copyable; one
// object is used by one thread at a time.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends `n_bytes` bytes from `data`. Only valid before commit().
  void write(const void* data, std::size_t n_bytes);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }

  // Makes the file visible under its final name. Only valid once.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  void discard() noexcept;  // closes and removes the temporary file

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// Removes the temporary files of every AtomicFile not yet committed or discarded, in any thread.
// For a program stopping on a signal without unwinding (the files' owners never run again).
void remove_pending_temporary_files() noexcept;

// Writes `content` to `path` through an AtomicFile.
void write_bytes_atomically(const std::string& path, std::string_view content);

// Creates the folder `dir` if needed and writes each (file name, content) into it. All are
// written before any is renamed into place, so an interruption leaves the previous set of files
// (or none), never a mix. Returns the paths, in order. `what` names the folder in errors.
std::vector<std::string> write_files_together(
    const std::string& dir, const std::vector<std::pair<std::string, std::string>>& files,
    const std::string& what = "--out");

}  // namespace qkscope
