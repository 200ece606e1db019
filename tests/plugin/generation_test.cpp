// Capture of a generation with a key/value cache (gpt2_cache): the greedy decoding of 12 tokens
// run step by step through CaptureModule, assembled by SequenceAssembler into a QkStore, must
// hold exactly what one forward over the whole generated sequences captures, and both must equal
// the Python reference. Also: left-padded prompts, outputs unchanged, the assembler's checks.
#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <thread>

#include "plugin_test_util.h"
#include "qkscope/capture_module.h"
#include "qkscope/capture_session.h"
#include "qkscope/error.h"
#include "qkscope/qk_store.h"

namespace qkscope::test {
namespace {

// The gpt2_cache model, its prompt inputs and its reference (see models/README.md).
struct Generation {
  CaptureModule module;
  at::Tensor prompt_ids, prompt_mask, empty_past;  // [B, 7], [B, 7], [L, B, H, 0, D]
  std::map<std::string, at::Tensor> ref;          // layer{L}.q/k: [B, H, 7 + 12, D]
  std::vector<std::vector<int64_t>> generated_ids;  // [B][7 + 12], the prompt included
  std::vector<int64_t> prompt_lengths;
  int new_tokens = 0;
  int n_layers = 0;
};

// The integers of a JSON array of arrays, row by row.
std::vector<std::vector<int64_t>> parse_id_rows(const std::string& json) {
  std::vector<std::vector<int64_t>> rows;
  int depth = 0;
  for (size_t i = 0; i < json.size();) {
    const char c = json[i];
    if (c == '[') {
      if (++depth == 2) rows.emplace_back();
      ++i;
    } else if (c == ']') {
      --depth;
      ++i;
    } else if (std::isdigit(static_cast<unsigned char>(c)) || c == '-') {
      size_t used = 0;
      const int64_t v = std::stoll(json.substr(i), &used);
      rows.back().push_back(v);
      i += used;
    } else {
      ++i;
    }
  }
  return rows;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t used = 0;
    out.push_back(std::stoll(s.substr(i), &used));
    i += used + 1;
  }
  return out;
}

const Generation& gpt2_cache() {
  static const Generation g = [] {
    Generation out{CaptureModule::load(model_path("gpt2_cache.pt")), {}, {}, {}, {}, {}, {}, 0, 0};
    auto inputs = read_tensors(SafetensorsFile::open(model_path("gpt2_cache_inputs.safetensors")));
    out.prompt_ids = inputs.at("input_ids");
    out.prompt_mask = inputs.at("attention_mask");
    out.empty_past = inputs.at("past_k");
    SafetensorsFile ref = SafetensorsFile::open(model_path("gpt2_cache_ref.safetensors"));
    out.ref = read_tensors(ref);
    const auto meta = ref.metadata();
    out.generated_ids = parse_id_rows(meta.at("generated_ids"));
    out.prompt_lengths = parse_list(meta.at("prompt_lengths"));
    out.new_tokens = std::stoi(meta.at("new_tokens"));
    out.n_layers = std::stoi(meta.at("layers"));
    return out;
  }();
  return g;
}

enum class Run { kCaptured, kNoSession, kOriginal };

struct Generated {
  at::Tensor ids, mask;               // [B, 7 + new_tokens]
  std::vector<c10::IValue> outputs;   // one per forward
};

// Greedy decoding as the Python reference does it: the prompt with an empty past, then one
// token per forward with the presents fed back as the past; `new_tokens` forwards in all, so the
// last generated token is never fed to the model. kCaptured: every forward with `sequences`.
// `limit[b]` >= 0: row b stops after that many new tokens (then pad id 0 with mask 0).
Generated generate(const Generation& g, Run run, const std::vector<int64_t>& sequences = {},
                   const std::vector<int>& limit = {}) {
  Generated out;
  out.ids = g.prompt_ids.clone();
  out.mask = g.prompt_mask.clone();
  at::Tensor step_ids = out.ids, past_k = g.empty_past, past_v = g.empty_past.clone();
  for (int step = 0; step < g.new_tokens; ++step) {
    std::vector<c10::IValue> inputs{step_ids, out.mask, past_k, past_v};
    c10::IValue result = run == Run::kCaptured   ? g.module.forward(inputs, sequences)
                         : run == Run::kNoSession ? g.module.forward(inputs)
                                                  : g.module.forward_original(inputs);
    const auto& elements = result.toTupleRef().elements();
    at::Tensor logits = elements.at(0).toTensor();
    past_k = elements.at(1).toTensor();
    past_v = elements.at(2).toTensor();
    step_ids = logits.select(1, logits.size(1) - 1).argmax(-1, /*keepdim=*/true);
    at::Tensor real = at::ones_like(step_ids);
    for (size_t b = 0; b < limit.size(); ++b) {
      if (limit[b] >= 0 && step + 1 > limit[b]) {
        step_ids[b][0] = 0;
        real[b][0] = 0;
      }
    }
    out.ids = at::cat({out.ids, step_ids}, 1);
    out.mask = at::cat({out.mask, real}, 1);
    out.outputs.push_back(result);
  }
  return out;
}

// Column of (row b, position p) in the left-padded [B, 7 + 12] layout.
int64_t column(const Generation& g, int64_t b, int64_t p) {
  return g.prompt_ids.size(1) - g.prompt_lengths.at(b) + p;
}

const std::vector<int64_t> kSequences{40, 41, 42};  // any unique indices, one per batch row

// The generation captured through the assembler into a store.
QkData capture_generation(const Generation& g, Generated* generated = nullptr) {
  QkStore store;
  StoreSink sink(store);
  SequenceAssembler assembler(sink);
  Generated run;
  {
    CaptureSession session(assembler);
    run = generate(g, Run::kCaptured, kSequences);
  }
  EXPECT_EQ(store.tokens_seen(), 0) << "nothing reaches the store before flush()";
  assembler.flush();
  EXPECT_EQ(assembler.buffered_tokens(), 0);
  if (generated) *generated = run;
  return store.take();
}

// One forward over the whole sequences (full mask, empty past), captured into a store.
QkData capture_one_forward(const Generation& g, const at::Tensor& ids, const at::Tensor& mask) {
  QkStore store;
  StoreSink sink(store);
  CaptureSession session(sink);
  g.module.forward({ids, mask, g.empty_past, g.empty_past.clone()}, kSequences);
  return store.take();
}

TEST(GenerationTest, GreedyDecodingWithTheCacheGeneratesTheReferenceTokens) {
  const Generation& g = gpt2_cache();
  ASSERT_EQ(g.new_tokens, 12);
  ASSERT_EQ(g.prompt_lengths, (std::vector<int64_t>{7, 5, 3}));
  Generated run = generate(g, Run::kNoSession);
  ASSERT_EQ(run.ids.size(0), static_cast<int64_t>(g.generated_ids.size()));
  for (int64_t b = 0; b < run.ids.size(0); ++b) {
    std::vector<int64_t> row(run.ids[b].data_ptr<int64_t>(),
                             run.ids[b].data_ptr<int64_t>() + run.ids.size(1));
    EXPECT_EQ(row, g.generated_ids[b]) << "row " << b;
  }
}

TEST(GenerationTest, AssembledGenerationEqualsOneForwardCaptureAndReference) {
  const Generation& g = gpt2_cache();
  Generated run;
  QkData stepped = capture_generation(g, &run);
  QkData whole = capture_one_forward(g, run.ids, run.mask);
  ASSERT_EQ(static_cast<int>(stepped.sites.size()), g.n_layers);
  ASSERT_EQ(whole.sites.size(), stepped.sites.size());

  // The generation feeds the prompt and 11 of the 12 new tokens (the 12th is produced by the
  // last forward and never run through the model), so it captures positions 0..len+10 of a
  // sequence of len+12 tokens; the one-forward capture has one more token per sequence, which
  // is left out of the comparison.
  std::vector<size_t> compared;  // token indices of `whole` that the generation also holds
  for (size_t t = 0; t < whole.sequence.size(); ++t) {
    const int64_t b = whole.sequence[t] - kSequences[0];
    if (whole.position[t] < g.prompt_lengths.at(b) + g.new_tokens - 1) compared.push_back(t);
  }
  ASSERT_EQ(stepped.n_tokens(), static_cast<int64_t>(compared.size()));
  EXPECT_EQ(stepped.n_tokens(), (7 + 5 + 3) + 3 * (g.new_tokens - 1));
  EXPECT_EQ(whole.n_tokens(), stepped.n_tokens() + 3);
  for (size_t i = 0; i < compared.size(); ++i) {
    const size_t t = compared[i];
    ASSERT_EQ(stepped.sequence[i], whole.sequence[t]) << i;
    ASSERT_EQ(stepped.position[i], whole.position[t]) << i;
    ASSERT_EQ(stepped.token_id[i], whole.token_id[t]) << i;
    // And the ids are the generated ones at the right columns (left padding).
    const int64_t b = stepped.sequence[i] - kSequences[0];
    ASSERT_EQ(stepped.token_id[i], g.generated_ids[b][column(g, b, stepped.position[i])]);
  }
  for (size_t s = 0; s < stepped.sites.size(); ++s) {
    SCOPED_TRACE("layer " + std::to_string(s));
    const SiteData& a = stepped.sites[s];
    const SiteData& w = whole.sites[s];
    EXPECT_EQ(a.layer, w.layer);
    EXPECT_EQ(a.module, w.module);
    EXPECT_EQ(a.module, "h." + std::to_string(s) + ".attn");
    EXPECT_DOUBLE_EQ(a.prescale, w.prescale);
    ASSERT_EQ(a.n_heads, w.n_heads);
    ASSERT_EQ(a.head_dim, w.head_dim);
    const at::Tensor rq = g.ref.at("layer" + std::to_string(s) + ".q");
    const at::Tensor rk = g.ref.at("layer" + std::to_string(s) + ".k");
    ASSERT_EQ(rq.size(1), a.n_heads);
    const int64_t row = static_cast<int64_t>(a.n_heads) * a.head_dim;
    for (size_t i = 0; i < compared.size(); ++i) {
      const int64_t b = stepped.sequence[i] - kSequences[0];
      const int64_t col = column(g, b, stepped.position[i]);
      for (int h = 0; h < a.n_heads; ++h) {
        for (int d = 0; d < a.head_dim; ++d) {
          const size_t x = static_cast<size_t>(i * row + h * a.head_dim + d);
          const size_t y = static_cast<size_t>(compared[i] * row + h * a.head_dim + d);
          ASSERT_NEAR(a.q[x], w.q[y], 1e-5) << "q token " << i << " h=" << h << " d=" << d;
          ASSERT_NEAR(a.k[x], w.k[y], 1e-5) << "k token " << i << " h=" << h << " d=" << d;
          ASSERT_NEAR(a.q[x], rq[b][h][col][d].item<float>(), 1e-5)
              << "q vs ref b=" << b << " p=" << stepped.position[i];
          ASSERT_NEAR(a.k[x], rk[b][h][col][d].item<float>(), 1e-5)
              << "k vs ref b=" << b << " p=" << stepped.position[i];
        }
      }
    }
    // The one-forward capture equals the reference at every real token, the last one included.
    for (size_t t = 0; t < whole.sequence.size(); ++t) {
      const int64_t b = whole.sequence[t] - kSequences[0];
      const int64_t col = column(g, b, whole.position[t]);
      for (int h = 0; h < w.n_heads; ++h)
        for (int d = 0; d < w.head_dim; ++d) {
          const size_t y = static_cast<size_t>(t * row + h * w.head_dim + d);
          ASSERT_NEAR(w.q[y], rq[b][h][col][d].item<float>(), 1e-5);
          ASSERT_NEAR(w.k[y], rk[b][h][col][d].item<float>(), 1e-5);
        }
    }
  }
}

TEST(GenerationTest, LeftPaddedPromptTokensGetTheirIndexAmongRealTokens) {
  const Generation& g = gpt2_cache();
  RecordingSink sink;
  {
    CaptureSession session(sink);
    g.module.forward({g.prompt_ids, g.prompt_mask, g.empty_past, g.empty_past.clone()},
                     {7, 8, 9});
  }
  ASSERT_EQ(static_cast<int>(sink.batches.size()), g.n_layers);
  for (const Captured& c : sink.batches) {
    SCOPED_TRACE("layer " + std::to_string(c.layer));
    size_t t = 0;
    for (int64_t b = 0; b < 3; ++b) {
      for (int64_t p = 0; p < g.prompt_lengths[b]; ++p, ++t) {
        ASSERT_LT(t, c.sequence.size());
        EXPECT_EQ(c.sequence[t], 7 + b);
        EXPECT_EQ(c.position[t], p) << "not the padded column " << column(g, b, p);
        EXPECT_EQ(c.token_id[t], g.prompt_ids[b][column(g, b, p)].item<int64_t>());
      }
    }
    EXPECT_EQ(t, c.sequence.size()) << "padding tokens were captured";
  }
}

TEST(GenerationTest, CachedStepCapturesTheNewTokenAtItsPositionInTheSequence) {
  const Generation& g = gpt2_cache();
  // One step after the prompt: input_ids [3, 1], mask [3, 8], past of 7.
  at::Tensor past_k, past_v, next;
  {
    auto out = g.module.forward({g.prompt_ids, g.prompt_mask, g.empty_past, g.empty_past.clone()});
    const auto& e = out.toTupleRef().elements();
    past_k = e[1].toTensor();
    past_v = e[2].toTensor();
    at::Tensor logits = e[0].toTensor();
    next = logits.select(1, logits.size(1) - 1).argmax(-1, true);
  }
  at::Tensor mask = at::cat({g.prompt_mask, at::ones_like(next)}, 1);
  RecordingSink sink;
  {
    CaptureSession session(sink);
    g.module.forward({next, mask, past_k, past_v}, {0, 1, 2});
  }
  ASSERT_EQ(static_cast<int>(sink.batches.size()), g.n_layers);
  for (const Captured& c : sink.batches) {
    ASSERT_EQ(c.sequence, (std::vector<int64_t>{0, 1, 2}));
    EXPECT_EQ(c.position, (std::vector<int64_t>{7, 5, 3}));
    for (int64_t b = 0; b < 3; ++b) EXPECT_EQ(c.token_id[b], next[b][0].item<int64_t>());
  }
}

TEST(GenerationTest, OutputsAreBitIdenticalWithAndWithoutCapture) {
  const Generation& g = gpt2_cache();
  QkStore store;
  StoreSink sink(store);
  SequenceAssembler assembler(sink);
  Generated captured;
  {
    CaptureSession session(assembler);
    captured = generate(g, Run::kCaptured, kSequences);
  }
  assembler.flush();
  Generated plain = generate(g, Run::kNoSession);
  Generated original = generate(g, Run::kOriginal);
  ASSERT_EQ(captured.outputs.size(), static_cast<size_t>(g.new_tokens));
  for (size_t i = 0; i < captured.outputs.size(); ++i) {
    EXPECT_TRUE(ivalue_equal(captured.outputs[i], original.outputs[i])) << "forward " << i;
    EXPECT_TRUE(ivalue_equal(plain.outputs[i], original.outputs[i])) << "forward " << i;
  }
  EXPECT_TRUE(torch::equal(captured.ids, original.ids));
}

TEST(GenerationTest, RowsThatStopEarlyAreAssembledWithTheirRealTokens) {
  const Generation& g = gpt2_cache();
  // Row 2 stops after 4 new tokens: from then on it is fed pad id 0 with mask 0.
  const std::vector<int> limit{-1, -1, 4};
  QkStore stepped_store;
  StoreSink sink(stepped_store);
  SequenceAssembler assembler(sink);
  Generated run;
  {
    CaptureSession session(assembler);
    run = generate(g, Run::kCaptured, kSequences, limit);
  }
  assembler.flush();
  QkData stepped = stepped_store.take();
  QkData whole = capture_one_forward(g, run.ids, run.mask);
  // Rows 0 and 1 miss their last (never fed) token; row 2's 4th new token was fed (mask 1) at
  // the 5th forward, so it has all its real tokens.
  std::vector<size_t> compared;
  for (size_t t = 0; t < whole.sequence.size(); ++t) {
    const int64_t b = whole.sequence[t] - kSequences[0];
    const int64_t real = g.prompt_lengths.at(b) + (b == 2 ? limit[2] : g.new_tokens - 1);
    if (whole.position[t] < real) compared.push_back(t);
  }
  EXPECT_EQ(whole.n_tokens(), static_cast<int64_t>(compared.size()) + 2);
  ASSERT_EQ(stepped.n_tokens(), static_cast<int64_t>(compared.size()));
  for (size_t i = 0; i < compared.size(); ++i) {
    ASSERT_EQ(stepped.sequence[i], whole.sequence[compared[i]]);
    ASSERT_EQ(stepped.position[i], whole.position[compared[i]]);
    ASSERT_EQ(stepped.token_id[i], whole.token_id[compared[i]]);
  }
  for (size_t s = 0; s < stepped.sites.size(); ++s) {
    const size_t row = static_cast<size_t>(stepped.sites[s].n_heads) * stepped.sites[s].head_dim;
    for (size_t i = 0; i < compared.size(); ++i)
      for (size_t x = 0; x < row; ++x) {
        ASSERT_NEAR(stepped.sites[s].q[i * row + x], whole.sites[s].q[compared[i] * row + x], 1e-5);
        ASSERT_NEAR(stepped.sites[s].k[i * row + x], whole.sites[s].k[compared[i] * row + x], 1e-5);
      }
  }
}

TEST(GenerationTest, StepsWithoutExplicitSequenceIndicesAreCaughtAtFlush) {
  const Generation& g = gpt2_cache();
  RecordingSink sink;
  SequenceAssembler assembler(sink);
  {
    CaptureSession session(assembler);
    // Each forward numbers its rows anew: the steps become sequences of their own.
    at::Tensor step = g.prompt_ids, mask = g.prompt_mask, pk = g.empty_past, pv = pk.clone();
    for (int i = 0; i < 2; ++i) {
      auto out = g.module.forward({step, mask, pk, pv});
      const auto& e = out.toTupleRef().elements();
      pk = e[1].toTensor();
      pv = e[2].toTensor();
      at::Tensor logits = e[0].toTensor();
      step = logits.select(1, logits.size(1) - 1).argmax(-1, true);
      mask = at::cat({mask, at::ones_like(step)}, 1);
    }
  }
  try {
    assembler.flush();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sequence 3 at layer 0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("same sequence indices"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(sink.batches.empty()) << "nothing is delivered when a check fails";
  EXPECT_EQ(assembler.buffered_tokens(), 0);
}

TEST(GenerationTest, ConcurrentGenerationsShareOneAssemblerAndStore) {
  const Generation& g = gpt2_cache();
  QkData alone = capture_generation(g);
  QkStore store;
  StoreSink sink(store);
  SequenceAssembler assembler(sink);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      try {
        std::vector<int64_t> sequences = assembler.new_sequences(3);
        {
          CaptureSession session(assembler);
          generate(g, Run::kCaptured, sequences);
        }
        assembler.finish(sequences);
        (void)t;
      } catch (...) {
        ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  EXPECT_EQ(assembler.buffered_sequences(), 0);
  QkData data = store.take();
  ASSERT_EQ(data.n_tokens(), 3 * alone.n_tokens());
  ASSERT_EQ(data.sites.size(), alone.sites.size());
  // Sequences 0..8: three copies of the same generation, in whichever order the threads ran.
  for (int64_t copy = 0; copy < 3; ++copy) {
    const int64_t n = alone.n_tokens();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = copy * n + i;
      EXPECT_EQ(data.sequence[t] % 3, (alone.sequence[i] - kSequences[0]));
      EXPECT_EQ(data.position[t], alone.position[i]);
      EXPECT_EQ(data.token_id[t], alone.token_id[i]);
    }
    for (size_t s = 0; s < data.sites.size(); ++s) {
      const size_t row = static_cast<size_t>(data.sites[s].n_heads) * data.sites[s].head_dim;
      for (size_t x = 0; x < static_cast<size_t>(n) * row; ++x) {
        ASSERT_NEAR(data.sites[s].q[copy * n * row + x], alone.sites[s].q[x], 1e-6);
        ASSERT_NEAR(data.sites[s].k[copy * n * row + x], alone.sites[s].k[x], 1e-6);
      }
    }
  }
}

// ---- the assembler alone, on hand-made batches ----------------------------------------------

struct HandBatch {
  std::vector<int64_t> sequence, position, token_id;
  std::vector<float> q, k;  // one head of dimension 1: the value is 100 * sequence + position
  QkBatch view(int layer) {
    q.clear();
    for (size_t i = 0; i < sequence.size(); ++i)
      q.push_back(static_cast<float>(100 * sequence[i] + position[i]));
    k = q;
    QkBatch b;
    b.layer = layer;
    b.n_tokens = static_cast<int64_t>(sequence.size());
    b.n_heads = 1;
    b.head_dim = 1;
    b.q = q.data();
    b.k = k.data();
    b.sequence = sequence.data();
    b.position = position.data();
    b.token_id = token_id.data();
    return b;
  }
};

SiteDescription hand_site(int layer) {
  SiteDescription s;
  s.layer = layer;
  s.n_heads = 1;
  s.head_dim = 1;
  s.module = "m" + std::to_string(layer);
  return s;
}

TEST(SequenceAssemblerTest, DeliversWholeSequencesSortedPerLayer) {
  RecordingSink sink;
  SequenceAssembler assembler(sink);
  // Two forwards, rows in any order; sequence 5 stops after the first.
  HandBatch first{{9, 9, 5}, {0, 1, 0}, {11, 12, 13}, {}, {}};
  HandBatch second{{9}, {2}, {14}, {}, {}};
  for (int layer = 0; layer < 2; ++layer) assembler.consume(hand_site(layer), first.view(layer));
  for (int layer = 0; layer < 2; ++layer) assembler.consume(hand_site(layer), second.view(layer));
  EXPECT_TRUE(sink.batches.empty());
  EXPECT_EQ(assembler.buffered_tokens(), 4);
  EXPECT_EQ(assembler.buffered_sequences(), 2);
  assembler.flush();
  ASSERT_EQ(sink.batches.size(), 2u);
  for (int layer = 0; layer < 2; ++layer) {
    const Captured& c = sink.batches[layer];
    EXPECT_EQ(c.layer, layer);
    EXPECT_EQ(c.module, "m" + std::to_string(layer));
    EXPECT_EQ(c.sequence, (std::vector<int64_t>{5, 9, 9, 9}));
    EXPECT_EQ(c.position, (std::vector<int64_t>{0, 0, 1, 2}));
    EXPECT_EQ(c.token_id, (std::vector<int64_t>{13, 11, 12, 14}));
    EXPECT_EQ(c.q, (std::vector<float>{500, 900, 901, 902}));
    EXPECT_EQ(c.k, c.q);
  }
  EXPECT_EQ(assembler.buffered_tokens(), 0);
  assembler.flush();  // nothing left: nothing delivered
  EXPECT_EQ(sink.batches.size(), 2u);
}

TEST(SequenceAssemblerTest, FinishDeliversOnlyTheNamedSequencesAndDiscardDrops) {
  RecordingSink sink;
  SequenceAssembler assembler(sink);
  HandBatch batch{{1, 2, 3}, {0, 0, 0}, {7, 8, 9}, {}, {}};
  assembler.consume(hand_site(0), batch.view(0));
  assembler.finish({2, 77});
  ASSERT_EQ(sink.batches.size(), 1u);
  EXPECT_EQ(sink.batches[0].sequence, (std::vector<int64_t>{2}));
  assembler.discard({1});
  EXPECT_EQ(assembler.buffered_sequences(), 1);
  assembler.flush();
  ASSERT_EQ(sink.batches.size(), 2u);
  EXPECT_EQ(sink.batches[1].sequence, (std::vector<int64_t>{3}));
}

void expect_flush_error(SequenceAssembler& assembler, const std::vector<std::string>& parts) {
  try {
    assembler.flush();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(SequenceAssemblerTest, RejectsGapsRepeatsAndLayersThatDisagree) {
  RecordingSink sink;
  {
    SequenceAssembler assembler(sink);
    HandBatch gap{{4, 4}, {0, 2}, {1, 2}, {}, {}};
    assembler.consume(hand_site(0), gap.view(0));
    expect_flush_error(assembler, {"sequence 4 at layer 0", "a position is missing"});
  }
  {
    SequenceAssembler assembler(sink);
    HandBatch twice{{4, 4}, {0, 0}, {1, 1}, {}, {}};
    assembler.consume(hand_site(1), twice.view(1));
    expect_flush_error(assembler, {"sequence 4 at layer 1", "a position arrived twice"});
  }
  {
    SequenceAssembler assembler(sink);
    HandBatch a{{4, 4}, {0, 1}, {1, 2}, {}, {}};
    HandBatch b{{4}, {0}, {1}, {}, {}};
    assembler.consume(hand_site(0), a.view(0));
    assembler.consume(hand_site(1), b.view(1));
    expect_flush_error(assembler, {"sequence 4 has 1 tokens at layer 1 but 2 at layer 0"});
  }
  {
    SequenceAssembler assembler(sink);
    HandBatch a{{4, 6}, {0, 0}, {1, 2}, {}, {}};
    HandBatch b{{6}, {0}, {2}, {}, {}};
    assembler.consume(hand_site(0), a.view(0));
    assembler.consume(hand_site(1), b.view(1));
    expect_flush_error(assembler, {"sequence 4 has tokens at layer 0 but none at layer 1"});
  }
  {
    SequenceAssembler assembler(sink);
    HandBatch a{{4}, {0}, {1}, {}, {}};
    HandBatch b{{4}, {0}, {5}, {}, {}};
    assembler.consume(hand_site(0), a.view(0));
    assembler.consume(hand_site(1), b.view(1));
    expect_flush_error(assembler, {"sequence 4 position 0: token id 5 at layer 1 but 1 at layer 0"});
  }
  EXPECT_TRUE(sink.batches.empty());
}

}  // namespace
}  // namespace qkscope::test
