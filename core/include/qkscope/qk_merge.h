// Several q/k files analysed as one set: their samples merged (QkStore::merge) into the one
// seeded sample a single run over all their sequences would keep, under one budget.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qkscope/qk_data.h"

namespace qkscope {

// Where a file's sequences come from: the global identity of a sequence is its index, and a
// run draws its sample from one range of indices (capture --first-sequence N: [N, N + count)).
// Recorded as qkscope's sequences.* metadata keys (SPEC 2 allows other keys; see the README):
//   sequences.count      R, the number of ranges
//   sequences.{i}.range  "B:E": the indices [B, E) offered to the sample (kept or not)
//   sequences.{i}.source the input file of those sequences (capture --text/--ids/--inputs), or
//                        the server process that captured them, "<kind>:<host>:<pid>:<start
//                        time, UTC>" (qkscope_http_server: http-server, qkscope_server_example:
//                        server-example; their indices are prefix << 40 | request number,
//                        tools/common/sequence_identity.h)
//   sequences.{i}.lines  the 1-based line in `source` of each kept sequence of the range, in
//                        index order, comma-separated (--text, --ids; absent for --inputs)
// Two files whose ranges overlap cannot be merged, even when their samples kept none of the
// shared indices (their sequences would share priorities): a collision is refused, not merged.
struct SequenceRange {
  int64_t begin = 0, end = 0;
  std::string source;
  std::vector<std::pair<int64_t, int64_t>> lines;  // (sequence, line), by sequence; may be empty
};

// The sequences.* entries for `ranges` (sorted by begin, disjoint), with the lines of the
// sequences `kept` holds. Throws Error when a kept sequence is in no range.
std::vector<std::pair<std::string, std::string>> sequence_metadata(
    const std::vector<SequenceRange>& ranges, const QkData& kept);

// The ranges a file's metadata records (empty when it has no sequences.* keys: a file of
// another tool, or of a server of an earlier qkscope). Throws FormatError naming
// `file` on a malformed entry, a kept sequence outside every range, or a lines list whose
// length is not the number of kept sequences of its range.
std::vector<SequenceRange> read_sequence_ranges(const std::map<std::string, std::string>& metadata,
                                                const QkData& kept, const std::string& file);

// Reads `paths` and merges them. Refused, with an Error naming the two files and what differs:
// different sites (layers, module, prescale, heads, head_dim), token ids in one and not the
// other, different recorded sample seeds, a `seed` other than the one that sampled a file the
// budget truncated, overlapping sequence ranges, and (for files without ranges) a sequence index
// present in two files (runs over different corpora need distinct ranges: capture
// --first-sequence). `seed` nullopt: the files' seed (0 if none). `max_tokens` nullopt: no budget
// beyond the files' own. `ranges`, when given, receives the files' ranges (for the merged
// file's sequences.* keys), sorted by begin.
QkData merge_qk_files(const std::vector<std::string>& paths, std::optional<int64_t> max_tokens,
                      std::optional<uint64_t> seed, std::vector<SequenceRange>* ranges = nullptr);

}  // namespace qkscope
