#include "capture_options.h"

#include <CLI/CLI.hpp>
#include <set>

#include "qkscope/error.h"

namespace qkscope::cli {
namespace {

constexpr const char* kDescription =
    "capture: per attention head, the scale c that makes query/key distance the best inverse\n"
    "proxy of attention (queries c*q, keys k/c), by weighted correlation, weighted correlation\n"
    "scaled and norm ratio.\n\n"
    "Modes:\n"
    "  capture --model M.pt --text corpus.txt (--tokenizer F | --vocab F | --spm F) --out DIR\n"
    "  capture --model M.pt --ids ids.txt --out DIR\n"
    "  capture --model M.pt --inputs inputs.safetensors --out DIR\n"
    "  capture --qk run.safetensors --out DIR        analyse saved q/k\n"
    "  capture --model M.pt --list-sites             show the attention sites found\n\n"
    "Outputs in DIR: heads.csv, scales.csv, ctable.json, heatmaps.svg.\n"
    "Exit status: 0 success, 2 usage error, 1 any other failure.";

// How many of the given strings are non-empty.
int count_set(std::initializer_list<const std::string*> values) {
  int n = 0;
  for (const std::string* v : values) n += !v->empty();
  return n;
}

void check_mode(const CaptureOptions& o) {
  const int inputs = count_set({&o.text, &o.ids, &o.inputs});
  if (!o.qk.empty()) {
    QKSCOPE_CHECK_AS(UsageError, o.model.empty() && inputs == 0 && !o.list_sites,
                     "--qk analyses a saved q/k file: it takes no --model, --text, --ids, "
                     "--inputs or --list-sites");
    QKSCOPE_CHECK_AS(UsageError, !o.out.empty(), "--qk needs --out DIR for the tables");
    return;
  }
  QKSCOPE_CHECK_AS(UsageError, !o.model.empty(),
                   "expected --model FILE (or --qk FILE); see --help");
  if (o.list_sites) {
    QKSCOPE_CHECK_AS(UsageError, inputs == 0 && o.out.empty(),
                     "--list-sites only prints the sites of --model: it takes no inputs or --out");
    return;
  }
  QKSCOPE_CHECK_AS(UsageError, inputs == 1,
                   "expected exactly one of --text, --ids or --inputs with --model, got {}", inputs);
  QKSCOPE_CHECK_AS(UsageError, !o.out.empty(), "expected --out DIR for the tables");
  const int tokenizers = count_set({&o.tokenizer, &o.vocab, &o.spm});
  if (!o.text.empty())
    QKSCOPE_CHECK_AS(UsageError, tokenizers == 1,
                     "--text needs exactly one of --tokenizer, --vocab or --spm, got {}", tokenizers);
  else
    QKSCOPE_CHECK_AS(UsageError, tokenizers == 0 && !o.cased,
                     "--tokenizer, --vocab, --spm and --cased apply to --text only");
  QKSCOPE_CHECK_AS(UsageError, !o.cased || !o.vocab.empty(), "--cased applies to --vocab only");
}

}  // namespace

std::vector<int> parse_layer_list(const std::string& text) {
  std::set<int> layers;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string part = text.substr(start, end - start);
    size_t dash = part.find('-');
    try {
      size_t used = 0;
      if (dash == std::string::npos) {
        int v = std::stoi(part, &used);
        QKSCOPE_CHECK_AS(UsageError, used == part.size() && v >= 0, "");
        layers.insert(v);
      } else {
        std::string a = part.substr(0, dash), b = part.substr(dash + 1);
        size_t ua = 0, ub = 0;
        int lo = std::stoi(a, &ua), hi = std::stoi(b, &ub);
        QKSCOPE_CHECK_AS(UsageError, ua == a.size() && ub == b.size() && lo >= 0 && hi >= lo, "");
        for (int v = lo; v <= hi; ++v) layers.insert(v);
      }
    } catch (const std::exception&) {
      throw UsageError(fmt::format(
          "--layers: expected a list like 0,3-5 of layer numbers >= 0, got '{}' (at '{}')", text, part));
    }
    start = end + 1;
  }
  return {layers.begin(), layers.end()};
}

std::optional<CaptureOptions> parse_capture_options(int argc, const char* const* argv,
                                                    std::string& help_out) {
  CaptureOptions o;
  CLI::App app{kDescription, "capture"};
  app.get_formatter()->column_width(30);
  std::string pairs = "sequence", select = "closest";

  // Input and model.
  app.add_option("--model", o.model, "TorchScript model to run (traced or scripted)")->type_name("FILE")->group("Input");
  app.add_option("--text", o.text, "text corpus: one sequence per non-empty line")->type_name("FILE")->group("Input");
  app.add_option("--ids", o.ids, "pre-tokenized input: one sequence of space-separated ids per line")->type_name("FILE")->group("Input");
  app.add_option("--inputs", o.inputs, "safetensors file of tensors named after the model's forward arguments")->type_name("FILE")->group("Input");
  app.add_option("--qk", o.qk_files, "analyse saved q/k files instead of running a model (several: one merged sample)")->type_name("FILE...")->group("Input");
  app.add_flag("--list-sites", o.list_sites, "print the attention sites found in --model and exit")->group("Input");
  app.add_option("--tokenizer", o.tokenizer, "HuggingFace tokenizer.json for --text")->type_name("FILE")->group("Tokenizer");
  app.add_option("--vocab", o.vocab, "BERT vocab.txt for --text (lower-cased unless --cased)")->type_name("FILE")->group("Tokenizer");
  app.add_flag("--cased", o.cased, "keep case with --vocab")->group("Tokenizer");
  app.add_option("--spm", o.spm, "SentencePiece model for --text")->type_name("FILE")->group("Tokenizer");
  // Outputs.
  app.add_option("--out", o.out, "folder for heads.csv, scales.csv, ctable.json, heatmaps.svg")->type_name("DIR")->group("Output");
  app.add_option("--save-qk", o.save_qk, "also save the captured q/k (safetensors)")->type_name("FILE")->group("Output");
  app.add_flag("--quiet", o.quiet, "no progress line and no summary on stderr")->group("Output");
  app.add_flag("--report", o.report, "also write report.html (offline joint query/key view of every head) and report.json (faithfulness per head and c)")->group("Output");
  app.add_option("--report-k", o.report_k, "k of the report's faithfulness (k most attended among k nearest keys)")->type_name("K")->default_str("5")->group("Output");
  app.add_option("--report-tokens", o.report_tokens, "tokens in the report's sample of whole sequences (0: as many as a ~20 MB page allows, at most 750 so that UMAP in the page stays within ~3 s)")->type_name("N")->default_str("0")->group("Output");
  // Metrics.
  app.add_option("--scales", o.scales_text, "scale grid: a list, or log:LO:HI:N")
      ->type_name("LIST")->default_str(o.scales_text)->group("Metrics");
  app.add_option("--pairs", pairs, "pair scope: sequence | causal | all")->type_name("SCOPE")->default_str(pairs)->group("Metrics");
  app.add_flag("--center", o.metrics.center, "subtract the query and key centroids first")->group("Metrics");
  app.add_option("--percentile", o.metrics.percentile, "distance threshold percentile, in percent")
      ->type_name("P")->default_str("0.5")->group("Metrics");
  app.add_option("--select", select, "choice of c: closest (to -1) | min (most negative)")
      ->type_name("RULE")->default_str(select)->group("Metrics");
  // Store and run.
  app.add_option("--max-tokens", o.max_tokens, "token budget: keep a seeded random sample of whole sequences")->type_name("N")->group("Run");
  app.add_option("--seed", o.seed, "seed of that sample")->type_name("N")->default_str("0")->group("Run");
  app.add_option("--batch-size", o.batch_size, "sequences per forward")->type_name("N")->default_str("8")->group("Run");
  app.add_option("--max-length", o.max_length, "longest sequence in tokens; longer lines are split (default: the model's, or 128)")->group("Run");
  app.add_option("--pad-to", o.pad_to, "pad every batch to N tokens (for traced models with frozen shapes)")->type_name("N")->group("Run");
  app.add_option("--threads", o.threads, "intra-op and engine threads (0: all cores)")->type_name("N")->default_str("0")->group("Run");
  app.add_option("--layers", o.layers_text, "capture only these sites, e.g. 0,3-5")->type_name("LIST")->group("Run");
  // Long runs.
  app.add_option("--checkpoint", o.checkpoint, "write the run's state here (atomically) every --checkpoint-every sequences / --checkpoint-seconds, at the end of the capture and on Ctrl-C")->type_name("FILE")->group("Long runs");
  app.add_option("--resume", o.resume, "continue the run saved in this checkpoint (same model, corpus and settings); checkpoints go on to --checkpoint, or to this file")->type_name("FILE")->group("Long runs");
  app.add_option("--first-sequence", o.first_sequence, "index of the first sequence (runs over different corpora whose q/k files will be merged need distinct ranges)")->type_name("N")->default_str("0")->group("Long runs");
  app.add_option("--checkpoint-every", o.checkpoint_every, "sequences between checkpoints (0: by time only)")->type_name("N")->default_str("0")->group("Long runs");
  app.add_option("--checkpoint-seconds", o.checkpoint_seconds, "seconds between checkpoints (0: by count only)")->type_name("S")->default_str("600")->group("Long runs");
  app.set_version_flag("--version", "capture (qkscope) 0.1.0");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    help_out = app.help();
    return std::nullopt;
  } catch (const CLI::CallForVersion& e) {
    help_out = std::string(e.what()) + "\n";
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    throw UsageError(e.what());
  }

  if (!o.qk_files.empty()) o.qk = o.qk_files.front();
  o.seed_given = app.count("--seed") > 0;
  QKSCOPE_CHECK_AS(UsageError, o.first_sequence >= 0, "--first-sequence: expected >= 0");
  o.metrics.scales = parse_scales(o.scales_text);
  o.metrics.pairs = parse_pair_scope(pairs);
  o.metrics.select = parse_select_rule(select);
  o.metrics.threads = o.threads;
  validate(o.metrics);
  QKSCOPE_CHECK_AS(UsageError, !o.max_tokens || *o.max_tokens > 0,
                   "--max-tokens: expected a positive token budget, got {}", *o.max_tokens);
  QKSCOPE_CHECK_AS(UsageError, o.batch_size > 0, "--batch-size: expected >= 1, got {}", o.batch_size);
  QKSCOPE_CHECK_AS(UsageError, !o.max_length || *o.max_length >= 2,
                   "--max-length: expected >= 2, got {}", *o.max_length);
  QKSCOPE_CHECK_AS(UsageError, !o.pad_to || *o.pad_to >= 1, "--pad-to: expected >= 1, got {}", *o.pad_to);
  QKSCOPE_CHECK_AS(UsageError, o.threads >= 0, "--threads: expected >= 0, got {}", o.threads);
  QKSCOPE_CHECK_AS(UsageError, o.report_k >= 1, "--report-k: expected >= 1, got {}", o.report_k);
  QKSCOPE_CHECK_AS(UsageError, o.report_tokens >= 0, "--report-tokens: expected >= 0, got {}", o.report_tokens);
  if (!o.layers_text.empty()) parse_layer_list(o.layers_text);
  QKSCOPE_CHECK_AS(UsageError, o.checkpoint_every >= 0 && o.checkpoint_seconds >= 0,
                   "--checkpoint-every and --checkpoint-seconds: expected >= 0");
  if (!o.resume.empty() && o.checkpoint.empty()) o.checkpoint = o.resume;
  QKSCOPE_CHECK_AS(UsageError, o.checkpoint.empty() || (o.text.size() + o.ids.size() > 0),
                   "--checkpoint and --resume apply to --text and --ids runs");
  check_mode(o);
  return o;
}

}  // namespace qkscope::cli
