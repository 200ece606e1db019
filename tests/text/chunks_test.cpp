// encode_chunks(): consecutive windows of content ids, each framed by the special tokens.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "fixtures.h"
#include "qkscope/error.h"
#include "qkscope/text/tokenizer.h"

namespace qkscope::text {
namespace {

using Ids = std::vector<int64_t>;
using Chunks = std::vector<Ids>;

TEST(EncodeChunksTest, FramesEveryChunkWithSpecialTokens) {
  testing::ScratchDir dir;
  auto tok = load_bert_vocab(dir.write("vocab.txt", testing::bert_vocab_txt()), true);
  // Content: hello world hello world hello = 5 6 5 6 5; room per chunk: 4 - 2 = 2.
  EXPECT_EQ(tok->encode_chunks("hello world hello world hello", 4),
            (Chunks{{2, 5, 6, 3}, {2, 5, 6, 3}, {2, 5, 3}}));
  // An exact multiple leaves no empty trailing chunk.
  EXPECT_EQ(tok->encode_chunks("hello world hello world", 4), (Chunks{{2, 5, 6, 3}, {2, 5, 6, 3}}));
  // Everything fits: same as encode().
  EXPECT_EQ(tok->encode_chunks("hello world", 512), (Chunks{tok->encode("hello world")}));
}

TEST(EncodeChunksTest, EmptyTextGivesOneChunkOfSpecialTokens) {
  testing::ScratchDir dir;
  auto tok = load_bert_vocab(dir.write("vocab.txt", testing::bert_vocab_txt()), true);
  EXPECT_EQ(tok->encode_chunks("", 8), (Chunks{{2, 3}}));
  EXPECT_EQ(tok->encode_chunks(" \n ", 8), (Chunks{{2, 3}}));
}

TEST(EncodeChunksTest, RejectsLengthWithoutRoomForText) {
  testing::ScratchDir dir;
  auto tok = load_bert_vocab(dir.write("vocab.txt", testing::bert_vocab_txt()), true);
  EXPECT_THROW(tok->encode_chunks("hello", 2), UsageError);
  EXPECT_THROW(tok->encode_chunks("hello", 0), UsageError);
}

TEST(EncodeChunksTest, WorksWithoutSpecialTokens) {
  testing::ScratchDir dir;
  auto tok = load_tokenizer_json(dir.write_json("tokenizer.json", testing::bpe_tokenizer_json()));
  // Hello Ġworld ! !
  EXPECT_EQ(tok->encode_chunks("Hello world!!", 3), (Chunks{{32, 37, 12}, {12}}));
  EXPECT_EQ(tok->encode_chunks("Hello world!!", 1), (Chunks{{32}, {37}, {12}, {12}}));
}

}  // namespace
}  // namespace qkscope::text
