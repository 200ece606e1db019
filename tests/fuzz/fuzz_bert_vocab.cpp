// Fuzz target: load_bert_vocab, then encoding with the loaded tokenizer.
//
// Input: the vocab.txt bytes, a NUL byte, then the text to encode (see check_tokenizer for
// what must hold). The input's size picks `lowercase`. Without a NUL the text is "".
#include <cstddef>
#include <cstdint>
#include <memory>

#include "fuzz_util.h"
#include "qkscope/error.h"
#include "qkscope/text/tokenizer.h"
#include "tokenizer_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static qkscope::fuzz::MemFile file("vocab.txt");
  const auto [vocab, text] = qkscope::fuzz::split_at_nul(data, size);
  std::unique_ptr<qkscope::text::Tokenizer> tokenizer;
  try {
    tokenizer = qkscope::text::load_bert_vocab(file.set(vocab), (size & 1) == 0);
  } catch (const qkscope::Error&) {
    return 0;
  }
  qkscope::fuzz::check_tokenizer(*tokenizer, text, size % 5);
  return 0;
}
