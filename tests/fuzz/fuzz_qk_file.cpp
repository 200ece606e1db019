// Fuzz target: read_qk_file on arbitrary bytes (through an in-memory file).
//
// Input: a whole q/k file. An accepted file must satisfy validate(), and survive a round trip
// through write_qk_file with every field equal (floats compared bit for bit, NaNs included).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "qkscope/error.h"
#include "qkscope/qk_data.h"
#include "qkscope/qk_file.h"

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

bool same(const qkscope::QkData& a, const qkscope::QkData& b) {
  if (a.sequence != b.sequence || a.position != b.position || a.token_id != b.token_id ||
      a.tokens_seen != b.tokens_seen || a.sequences_seen != b.sequences_seen ||
      a.sites.size() != b.sites.size())
    return false;
  for (std::size_t i = 0; i < a.sites.size(); ++i) {
    const qkscope::SiteData& s = a.sites[i];
    const qkscope::SiteData& t = b.sites[i];
    if (s.layer != t.layer || s.module != t.module || s.prescale != t.prescale ||
        s.n_heads != t.n_heads || s.head_dim != t.head_dim || s.head_index != t.head_index ||
        !same_bits(s.q, t.q) || !same_bits(s.k, t.k))
      return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static qkscope::fuzz::MemFile input("fuzz_qk_file");
  const std::string& path = input.set({reinterpret_cast<const char*>(data), size});
  qkscope::QkData qk;
  try {
    qk = qkscope::read_qk_file(path);
  } catch (const qkscope::Error&) {
    return 0;
  }
  qkscope::validate(qk, "accepted file");  // a qkscope::Error here escapes: a failure

  const std::string again = qkscope::fuzz::scratch_path("roundtrip.safetensors").string();
  qkscope::write_qk_file(again, qk);
  const qkscope::QkData read_back = qkscope::read_qk_file(again);
  std::filesystem::remove(again);
  FUZZ_EXPECT(same(read_back, qk));
  return 0;
}
