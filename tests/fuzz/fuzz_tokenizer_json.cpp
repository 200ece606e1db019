// Fuzz target: load_tokenizer_json, then encoding with the loaded tokenizer.
//
// Input: the tokenizer.json bytes, a NUL byte, then the text to encode (see check_tokenizer
// for what must hold). Without a NUL the whole input is the tokenizer.json and the text is "".
#include <cstddef>
#include <cstdint>
#include <memory>

#include "fuzz_util.h"
#include "qkscope/error.h"
#include "qkscope/text/tokenizer.h"
#include "tokenizer_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static qkscope::fuzz::MemFile file("tokenizer.json");
  const auto [json, text] = qkscope::fuzz::split_at_nul(data, size);
  std::unique_ptr<qkscope::text::Tokenizer> tokenizer;
  try {
    tokenizer = qkscope::text::load_tokenizer_json(file.set(json));
  } catch (const qkscope::Error&) {
    return 0;
  }
  qkscope::fuzz::check_tokenizer(*tokenizer, text, size % 5);
  return 0;
}
