// Several q/k files analysed as one set: their samples merged (QkStore::merge) into the one
// seeded sample a single run over all their sequences would keep, under one budget.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qkscope/qk_data.h"

namespace qkscope {

// Reads `paths` and merges them. Refused, with an Error naming the two files and what differs:
// different sites (layers, module, prescale, heads, head_dim), token ids in one and not the
// other, different recorded sample seeds, a `seed` other than the one that sampled a file the
// budget truncated, and a sequence index present in two files (runs over different corpora need
// distinct ranges: capture --first-sequence). `seed` nullopt: the files' seed (0 if none).
// `max_tokens` nullopt: no budget beyond the files' own.
QkData merge_qk_files(const std::vector<std::string>& paths, std::optional<int64_t> max_tokens,
                      std::optional<uint64_t> seed);

}  // namespace qkscope
