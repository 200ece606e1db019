#include "run_model.h"

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <iostream>

#include "analyse.h"
#include "checkpoint_run.h"
#include "corpus.h"
#include "interrupt.h"
#include "mpi_run.h"
#include "progress.h"
#include "sequence_lines.h"
#include "qkscope/capture_module.h"
#include "qkscope/capture_sink.h"
#include "qkscope/error.h"
#include "qkscope/model_runner.h"
#include "qkscope/qk_merge.h"
#include "qkscope/qk_store.h"
#include "qkscope/safetensors.h"
#include "qkscope/text/tokenizer.h"

namespace qkscope::cli {
namespace {

// Rows of the first parameter whose name ends with one of `suffixes` (HuggingFace's names for
// the token and position embedding tables), and that name.
std::optional<std::pair<int64_t, std::string>> embedding_rows(
    const torch::jit::Module& module, std::initializer_list<const char*> suffixes) {
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    for (const char* suffix : suffixes) {
      const std::string s(suffix);
      if (p.name.size() >= s.size() && p.name.compare(p.name.size() - s.size(), s.size(), s) == 0 &&
          p.value.dim() == 2)
        return std::make_pair(p.value.size(0), p.name);
    }
  }
  return std::nullopt;
}

std::unique_ptr<text::Tokenizer> load_tokenizer(const CaptureOptions& o) {
  if (!o.tokenizer.empty()) return text::load_tokenizer_json(o.tokenizer);
  if (!o.vocab.empty()) return text::load_bert_vocab(o.vocab, /*lowercase=*/!o.cased);
  return text::load_sentencepiece(o.spm);
}

// --inputs: tensors read from a safetensors file, bound by name.
struct InputFile {
  std::vector<std::string> bytes;  // owns the data the views point to
  std::map<std::string, InputTensor> tensors;
  int64_t rows = 0;
};

InputFile read_inputs(const std::string& path) {
  InputFile f;
  SafetensorsFile file = SafetensorsFile::open(path);
  f.bytes.reserve(file.tensors().size());
  for (const TensorInfo& info : file.tensors()) {
    QKSCOPE_CHECK(!info.shape.empty(), "{}: tensor '{}' has no batch dimension (shape {})", path,
                  info.name, shape_string(info.shape));
    f.bytes.push_back(file.read_bytes(info.name));
    f.tensors[info.name] = InputTensor{dtype_name(info.dtype), info.shape, f.bytes.back().data()};
    f.rows = info.shape[0];
  }
  QKSCOPE_CHECK(!f.tensors.empty(), "{}: no tensors in the inputs file", path);
  return f;
}

// Forwards to a StoreSink; with QKSCOPE_TEST_CRASH=forward:N, kills the process in the middle
// of the forward that captures sequence N (after its first site, before the others).
class CrashTestSink : public CaptureSink {
 public:
  explicit CrashTestSink(StoreSink& inner) : inner_(inner) {}
  void prepare(const std::vector<SiteDescription>& sites) override { inner_.prepare(sites); }
  std::vector<int> wants_heads(const SiteDescription& site) override {
    return inner_.wants_heads(site);
  }
  void consume(const SiteDescription& site, const QkBatch& batch) override {
    if (site.site > 0 && batch.n_tokens > 0) test_crash_point("forward", batch.sequence[batch.n_tokens - 1]);
    inner_.consume(site, batch);
  }

 private:
  StoreSink& inner_;
};

}  // namespace

int run_model_mode(const CaptureOptions& o) {
  if (o.threads > 0) at::set_num_threads(o.threads);
  // mpirun -np K: rank r runs the batches b with b % K == r; the samples merge on rank 0.
  const MpiWorld& world = mpi_world();
  QKSCOPE_CHECK_AS(UsageError, world.size == 1 || (o.inputs.empty() && o.checkpoint.empty()),
                   "under mpirun -np {}: --inputs, --checkpoint and --resume run in one process "
                   "(mpirun -np 1 or no mpirun)", world.size);
  CaptureModule module = CaptureModule::load(o.model);
  if (o.list_sites) {
    if (world.rank == 0) std::cout << format_sites(module.sites());
    return 0;
  }

  StoreOptions store_options;
  store_options.max_tokens = o.max_tokens;
  store_options.seed = o.seed;
  QkStore store(store_options);
  SiteFilter filter;
  if (!o.layers_text.empty()) filter.layers = parse_layer_list(o.layers_text);
  StoreSink store_sink(store, filter);
  CrashTestSink crash_sink(store_sink);
  CaptureSink& sink = std::getenv("QKSCOPE_TEST_CRASH") ? static_cast<CaptureSink&>(crash_sink)
                                                        : store_sink;

  RunInfo run;
  run.model = o.model;
  run.max_tokens = o.max_tokens;
  run.seed = o.seed;
  // Sites the graph pass found but cannot capture are said, not hidden (and kept in ctable.json).
  for (const SiteDescription& s : module.sites()) {
    if (s.skipped.empty()) continue;
    run.skipped_sites.push_back({s.site, s.kind, s.module, s.skipped});
    if (world.rank == 0) std::cerr << fmt::format("capture: note: attention site {} ({}{}{}) is not captured: {}\n",
                             s.site, s.kind, s.module.empty() ? "" : ", ", s.module, s.skipped);
  }
  const auto start = std::chrono::steady_clock::now();
  Progress progress("capture (sequences)", !o.quiet);
  std::vector<SequenceRange> ranges;  // for --save-qk's sequences.* keys

  if (!o.inputs.empty()) {
    run.input = o.inputs;
    InputFile inputs = read_inputs(o.inputs);
    RunOptions ro;
    ro.batch_size = o.batch_size;
    ro.first_sequence = o.first_sequence;
    ro.progress = [&](int64_t done, int64_t total) {
      throw_if_interrupted();
      progress.update(done, total);
    };
    run_model(module, inputs.tensors, sink, ro);
    ranges.push_back(SequenceRange{o.first_sequence, o.first_sequence + inputs.rows, o.inputs, {}});
  } else {
    run.input = o.text.empty() ? o.ids : o.text;
    const auto vocab = embedding_rows(module.original(),
                                      {"word_embeddings.weight", "wte.weight", "embed_tokens.weight",
                                       "shared.weight", "embeddings.weight"});
    const auto positions = embedding_rows(module.original(), {"position_embeddings.weight", "wpe.weight"});
    const int max_length = o.max_length.value_or(
        positions ? static_cast<int>(std::min<int64_t>(positions->first, 128)) : 128);
    // Longer sequences would index past the model's position table inside the forward.
    QKSCOPE_CHECK_AS(UsageError, !positions || max_length <= positions->first,
                     "--max-length {} is longer than the model's position table ({} positions, "
                     "'{}'): use --max-length {} or less", max_length, positions->first,
                     positions->second, positions->first);
    QKSCOPE_CHECK_AS(UsageError, !positions || !o.pad_to || *o.pad_to <= positions->first,
                     "--pad-to {} is longer than the model's position table ({} positions, '{}')",
                     o.pad_to.value_or(0), positions ? positions->first : 0,
                     positions ? positions->second : std::string());
    // The corpus is read a batch at a time (never whole: memory does not grow with it). Every
    // rank reads every batch (a line's tokens decide where the batches fall) and runs its own.
    std::unique_ptr<text::Tokenizer> tokenizer;
    int64_t pad_id = 0;
    std::optional<SequenceReader> reader;
    if (!o.text.empty()) {
      tokenizer = load_tokenizer(o);
      pad_id = tokenizer->pad_id();
      reader.emplace(SequenceReader::text(o.text, *tokenizer, static_cast<size_t>(max_length)));
    } else {
      reader.emplace(SequenceReader::ids(o.ids, static_cast<size_t>(max_length)));
    }
    // Global identity: sequence first_sequence + i is the i-th sequence of the input; its line
    // is kept while the sample may keep it (sequence_lines.h).
    SequenceLines lines(o.seed);
    const size_t batch_size = static_cast<size_t>(o.batch_size);
    int64_t next = 0;  // sequences read, counted from --first-sequence
    // The next batch (empty at the end of the input), its lines noted and its ids checked
    // before any forward of it (on every rank: each finds a bad id at the same batch).
    const auto read_batch = [&] {
      std::vector<Sequence> batch = reader->next_batch(batch_size);
      const double cutoff = store.counts().cutoff;
      for (size_t i = 0; i < batch.size(); ++i)
        lines.note(o.first_sequence + next + static_cast<int64_t>(i), batch[i].line, cutoff);
      lines.prune(cutoff);
      next += static_cast<int64_t>(batch.size());
      if (vocab) check_vocabulary(batch, vocab->first, run.input, vocab->second);
      return batch;
    };

    // --checkpoint / --resume: batches are the uninterrupted run's (a resumed run starts at a
    // batch boundary), so every q/k is computed on the same padded shapes.
    RunSettings settings;
    if (!o.checkpoint.empty()) settings = checkpoint_settings(o, max_length);
    Checkpointer checkpointer(o, settings);
    if (!o.resume.empty()) {
      const ResumePoint point = resume_from(o.resume, settings, store);
      // The checkpoint's sequences are read again (not run): that finds the batch boundary,
      // and their lines must be those the checkpoint recorded.
      while (next < point.next_sequence && !read_batch().empty()) {}
      // Full batches are read until the end, so a count that is no multiple of the batch size
      // is the end of the input: `next` is a boundary exactly when it is the checkpoint's.
      if (next != point.next_sequence) {
        Sequence rest;
        while (reader->next(rest)) {}
        throw Error(fmt::format("--resume {}: next sequence {} is not a batch boundary of this "
                                "corpus ({} sequences)", o.resume, point.next_sequence,
                                reader->sequences_read()));
      }
      for (const SequenceRange& r : point.ranges)
        for (const auto& [sequence, line] : r.lines) {
          const std::optional<int64_t> here = lines.line_of(sequence);
          QKSCOPE_CHECK(here == line,
                        "--resume {}: the checkpoint kept sequence {} as line {} of {}, but this "
                        "corpus has it at {}", o.resume, sequence, line, r.source,
                        here ? "line " + std::to_string(*here) : std::string("no line"));
        }
    }
    if (checkpointer.enabled()) set_interrupt_grace(60000);  // the rest of a forward + the write
    int64_t tokens_done = store.tokens_seen();
    int64_t done = next;
    const auto corpus_share = [&] {
      return reader->file_bytes() ? 100.0 * reader->bytes_read() / reader->file_bytes() : 0.0;
    };
    try {
      for (int64_t batch_number = next / o.batch_size;; ++batch_number) {
        throw_if_interrupted();
        const int64_t begin = next;
        const std::vector<Sequence> sequences = read_batch();
        if (sequences.empty()) break;
        const int64_t end = next;
        if (batch_number % world.size != world.rank) continue;
        auto batch = make_batch(sequences, 0, sequences.size(), pad_id, o.pad_to,
                                module.argument_names());
        RunOptions ro;
        ro.batch_size = end - begin;
        ro.first_sequence = begin + o.first_sequence;
        try {
          run_model(module, batch->tensors, sink, ro);
        } catch (const UsageError&) {
          throw;
        } catch (const Error& e) {
          // Name the batch by its first sequence's place in the input file.
          throw Error(fmt::format("{}:{} (batch of sequences {}..{}): {}", run.input,
                                  sequences.front().line, begin, end - 1, e.what()));
        }
        tokens_done += batch->tokens;
        const double seconds = progress.elapsed();
        progress.update(static_cast<int64_t>(reader->bytes_read()),
                        static_cast<int64_t>(reader->file_bytes()),
                        fmt::format("{} sequences, {} tokens, {:.0f} tokens/s", end, tokens_done,
                                    seconds > 0 ? tokens_done / seconds : 0.0));
        done = end;
        checkpointer.after_batch(store, done, lines);
      }
    } catch (const Interrupted&) {
      if (checkpointer.enabled()) {
        checkpointer.after_batch(store, done, lines, /*force=*/true);
        std::cerr << fmt::format("\ncapture: checkpoint written to {} ({} sequences, {:.0f}% of "
                                 "the corpus); continue with --resume {}\n", o.checkpoint, done,
                                 corpus_share(), o.checkpoint);
      }
      throw;
    }
    // Also at the end of the capture: a run stopped during the metrics resumes there.
    checkpointer.after_batch(store, done, lines, /*force=*/true);
    ranges.push_back(SequenceRange{o.first_sequence, o.first_sequence + next, run.input, lines.lines()});
  }
  progress.finish();
  if (world.size > 1) {
    const MergeStats merged = mpi_merge_stores(store);
    if (world.rank != 0) {
      analyse_on_other_rank(o);  // this rank's share of the heads' metrics
      return 0;
    }
    if (!o.quiet)
      std::cerr << fmt::format("capture: {} ranks; their samples merged on rank 0: {:.1f} MB in {:.2f} s "
                               "(receiving {:.2f} s, reading {:.2f} s, merging {:.2f} s; after {:.2f} s "
                               "waiting for the last rank's batches)\n",
                               world.size, merged.bytes / 1e6, merged.seconds,
                               merged.receive_seconds, merged.read_seconds, merged.merge_seconds,
                               merged.wait_seconds);
  }
  const double capture_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  QkData data = store.take();
  QKSCOPE_CHECK(!data.sites.empty(), "no attention site was captured (--layers {} matches none?)",
                o.layers_text);
  analyse_and_write(data, o, run, /*save=*/true, capture_seconds, ranges);
  return 0;
}

}  // namespace qkscope::cli
