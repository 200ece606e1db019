// The q/k file (SPEC section 2): a standard safetensors file holding QkData.
//
// Tensors (N tokens, H heads, D head dimension; little-endian, row-major):
//   layer{L}.q       F32 [N, H, D]   queries of site L (SiteData::q)
//   layer{L}.k       F32 [N, H, D]   keys of site L (SiteData::k)
//   tokens.sequence  I64 [N]         QkData::sequence
//   tokens.position  I64 [N]         QkData::position
//   tokens.id        I64 [N]         QkData::token_id; absent when the input had no token ids
// No other tensor may be present. H and D may differ between sites; N may not.
//
// "__metadata__" (all values are strings):
//   format            "qkscope.qk.v1"
//   layers            the sites' layer numbers, decimal, comma-separated, no spaces, strictly
//                     increasing ("0,1,2"; "" for a file without sites)
//   layer{L}.module   SiteData::module (may be empty)
//   layer{L}.prescale SiteData::prescale, written with {:.17g} so it reads back exactly; "1" if
//                     nothing was stepped over; must be finite and > 0
//   layer{L}.heads    SiteData::head_index as comma-separated numbers; written only when it is
//                     not 0..H-1, and read as 0..H-1 when absent
//   tokens_seen       QkData::tokens_seen; read as N when absent
//   sequences_seen    QkData::sequences_seen; read as the number of distinct sequences when absent
//   sample.seed       QkData::sample->seed: the seed of the store's priorities  } all three or
//   sample.max_tokens QkData::sample->max_tokens: its budget, "0" for none        } none; read
//   sample.cutoff     QkData::sample->cutoff, {:.17g}: lowest priority evicted    } as no sample
// These are qkscope's additions to SPEC section 2, optional so that files written by other
// tools following the SPEC are readable. Other metadata keys are ignored (checkpoints add
// checkpoint.* keys, see checkpoint.h).
//
// A file that breaks a rule of the safetensors format (see safetensors.h), of this layout, or of
// QkData's invariants (see validate() in qk_data.h) is rejected with a FormatError whose message
// reads "<file>: <rule>: <detail>".
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "qkscope/qk_data.h"

namespace qkscope {

// Writes `data` to `path` (through a temporary file and a rename). Throws qkscope::Error,
// including when `data` breaks validate().
void write_qk_file(const std::string& path, const QkData& data);

// The same with `extra` metadata entries besides the layout's (e.g. sequence_metadata() of
// qk_merge.h); an extra key that the layout writes itself is an Error.
void write_qk_file(const std::string& path, const QkData& data,
                   const std::vector<std::pair<std::string, std::string>>& extra);

// Reads and validates a q/k file. Throws FormatError naming the broken rule and the file.
QkData read_qk_file(const std::string& path);

// The same file as bytes in memory (what write_qk_file would write; no temporary file), and
// those bytes read back (`name` stands for the file in error messages). For moving a sample
// between processes (mpirun -np K capture).
std::string qk_file_bytes(const QkData& data);
QkData parse_qk_bytes(std::string bytes, const std::string& name);

// The sample.* metadata entries of `data` (none when data.sample is absent).
std::vector<std::pair<std::string, std::string>> sample_metadata(const QkData& data);

// The "format" metadata value of files this version writes and reads.
inline constexpr const char* kQkFormat = "qkscope.qk.v1";

}  // namespace qkscope
