// Store files: a QkStore's kept sample saved as a q/k file (SPEC 2 with the sample.* keys of
// qk_file.h), and read back into a store. A checkpoint of a long run is such a file with
// checkpoint.* metadata (written by the capture program); any store file is also a valid q/k
// file for `capture --qk`, and `QkStore::merge` of what read_store_file returns restores the
// store exactly: same kept sequences, priorities, counts and cutoff.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "qkscope/qk_data.h"
#include "qkscope/qk_merge.h"
#include "qkscope/qk_store.h"

namespace qkscope {

// "<bytes>:<16 hex digits>": the size and a 64-bit hash of a file's bytes (not cryptographic:
// it tells a changed model or corpus apart). Reads the whole file (about 2 GB/s). Throws Error
// naming the path when it cannot be read.
std::string hash_file(const std::string& path);

// Called while a store file is written with the bytes written so far and the total; may throw
// to abandon the write (the temporary file is then removed).
using WriteProgress = std::function<void(uint64_t written, uint64_t total)>;

// Writes the store's kept sequences (sorted by sequence) straight from its buffers, without
// materialising them: the file appears complete under `path` or not at all (temporary file,
// fsync, rename, fsync of the folder); on any failure (a full disk) the previous file at `path`
// is left as it was. `extra` adds metadata entries (keys must not clash with the q/k file's).
// Must not overlap QkStore::add(). Throws Error naming the path and the system's reason.
void write_store_file(const std::string& path, const QkStore& store,
                      const std::map<std::string, std::string>& extra,
                      const WriteProgress& progress = nullptr);

// The sequences.* entries (qk_merge.h) that sequence_metadata(ranges, store.take()) would give,
// read from the store in place (for a checkpoint, written while the run goes on): every kept
// sequence must be in a range, and have a line in it when the range has lines. Must not
// overlap QkStore::add(). Throws Error as sequence_metadata does.
std::vector<std::pair<std::string, std::string>> store_sequence_metadata(
    const std::vector<SequenceRange>& ranges, const QkStore& store);

struct StoreFile {
  QkData kept;                               // as read_qk_file gives it
  QkStore::Counts counts;                    // tokens/sequences seen and the sample's cutoff
  std::map<std::string, std::string> metadata;  // every metadata entry of the file
};

// Reads a q/k file for QkStore::merge. A file without sample.* keys (written by another tool)
// is read as a complete sample (cutoff 2). Throws FormatError as read_qk_file does.
StoreFile read_store_file(const std::string& path);

}  // namespace qkscope
