// qkscope_consumer MODEL: loads a text model whose forward takes input_ids and attention_mask,
// runs one forward of two sequences (8 and 5 tokens) under a capture session, prints what the
// sink received and checks it. Exit status 0 when the counts are right.
#include <atomic>
#include <cstdio>

#include "qkscope/capture_module.h"
#include "qkscope/capture_session.h"
#include "qkscope/error.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: qkscope_consumer MODEL.pt\n");
    return 2;
  }
  try {
    qkscope::CaptureModule model = qkscope::CaptureModule::load(argv[1]);
    at::Tensor ids = torch::randint(1, 50, {2, 8}, torch::kLong);
    at::Tensor mask = torch::ones({2, 8}, torch::kLong);
    mask.index_put_({1, torch::indexing::Slice(5)}, 0);
    std::vector<c10::IValue> inputs;
    for (const std::string& name : model.argument_names()) {
      if (name == "input_ids") inputs.emplace_back(ids);
      else if (name == "attention_mask") inputs.emplace_back(mask);
      else throw qkscope::Error("unexpected argument '" + name + "'");
    }
    int batches = 0;
    int64_t tokens = 0;
    qkscope::CallbackSink sink([&](const qkscope::SiteDescription&, const qkscope::QkBatch& b) {
      ++batches;
      tokens += b.n_tokens;
    });
    {
      qkscope::CaptureSession session(sink);
      model.forward(inputs);
    }
    const auto sites = model.sites();
    std::printf("%s", qkscope::format_sites(sites).c_str());
    std::printf("sites %zu batches %d tokens %lld\n", sites.size(), batches,
                static_cast<long long>(tokens));
    const bool ok = !sites.empty() && batches == static_cast<int>(sites.size()) &&
                    tokens == 13 * batches;
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qkscope_consumer: %s\n", e.what());
    return 1;
  }
}
