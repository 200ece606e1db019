#include "analyse.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <numeric>

#include "checkpoint_run.h"
#include "qkscope/checkpoint.h"
#include "interrupt.h"
#include "mpi_metrics.h"
#include "mpi_run.h"
#include "report_options.h"
#include "progress.h"
#include "qkscope/joint_report.h"
#include "qkscope/metrics.h"
#include "qkscope/qk_file.h"
#include "qkscope/error.h"
#include "qkscope/qk_merge.h"
#include "qkscope/qk_store.h"

namespace qkscope::cli {
namespace {

// --max-tokens on a saved file: the same seeded sample of whole sequences as a live capture.
QkData subsample(QkData data, const CaptureOptions& options) {
  StoreOptions store_options;
  store_options.max_tokens = options.max_tokens;
  store_options.seed = options.seed;
  QkStore store(store_options);
  for (const SiteData& site : data.sites)
    store.declare_site(site.layer, SiteMeta{site.module, site.prescale, site.head_index});
  for (const SiteData& site : data.sites) {
    QkBatch batch;
    batch.layer = site.layer;
    batch.n_tokens = data.n_tokens();
    batch.n_heads = site.n_heads;
    batch.head_dim = site.head_dim;
    batch.q = site.q.data();
    batch.k = site.k.data();
    batch.sequence = data.sequence.data();
    batch.position = data.position.data();
    batch.token_id = data.has_token_ids() ? data.token_id.data() : nullptr;
    store.add(batch);
  }
  QkData sampled = store.take();
  sampled.tokens_seen = std::max(data.tokens_seen, data.n_tokens());
  sampled.sequences_seen = std::max(data.sequences_seen, sampled.sequences_seen);
  return sampled;
}

}  // namespace

void analyse_and_write(const QkData& data, const CaptureOptions& options, const RunInfo& run,
                       bool save, double capture_seconds, const std::vector<SequenceRange>& ranges) {
  if (save && !options.save_qk.empty()) {
    const auto parent = std::filesystem::path(options.save_qk).parent_path();
    std::error_code ec;
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);  // errors: at the write
    write_qk_file(options.save_qk, data, sequence_metadata(ranges, data));
  }
  const MpiWorld& world = mpi_world();
  Progress progress(world.size > 1 ? "metrics (rank 0's heads)" : "metrics (heads)", !options.quiet);
  MetricSpread spread;
  CTable table = mpi_compute_ctable(data, options.metrics, [&](int64_t done, int64_t total) {
    throw_if_interrupted();
    test_crash_point("metrics", done);
    progress.update(done, total);
  }, &spread);
  throw_if_interrupted();
  progress.finish();
  const double metric_seconds = progress.elapsed();
  if (world.size > 1 && !options.quiet)
    std::fprintf(stderr,
                 "capture: %lld heads spread over %d ranks (at most %lld each): their q/k sent "
                 "from rank 0, %.1f MB in %.2f s (building %.2f s); rank 0's heads %.2f s; the "
                 "other ranks' rows %.2f s later\n",
                 static_cast<long long>(spread.heads), spread.ranks,
                 static_cast<long long>(spread.most_heads), spread.bytes_sent / 1e6,
                 spread.send_seconds, spread.share_seconds, spread.own_seconds,
                 spread.gather_seconds);
  auto paths = write_outputs(options.out, table, run);
  if (options.report) {
    const auto start = std::chrono::steady_clock::now();
    write_report(options.out, data, table, run, report_options(options));
    if (!options.quiet)
      std::fprintf(stderr, "capture: report %s/report.html and report.json in %.2f s\n", options.out.c_str(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  if (options.quiet) return;

  int64_t chosen = 0;
  for (const HeadResult& h : table.heads) chosen += h.c_wcorr.has_value();
  std::string sites = std::to_string(data.sites.size());
  std::fprintf(stderr,
               "capture: %lld of %lld tokens kept (%lld of %lld sequences), %s sites, %zu heads "
               "(%lld with a weighted-correlation choice); capture %.2f s, metrics %.2f s.\n"
               "Tables: %s/heads.csv (per head c), scales.csv, ctable.json; heatmap: %s/heatmaps.svg%s%s\n",
               static_cast<long long>(table.tokens_kept), static_cast<long long>(table.tokens_seen),
               static_cast<long long>(table.sequences_kept),
               static_cast<long long>(table.sequences_seen), sites.c_str(), table.heads.size(),
               static_cast<long long>(chosen), capture_seconds, metric_seconds,
               options.out.c_str(), options.out.c_str(),
               save && !options.save_qk.empty() ? "; q/k: " : "",
               save && !options.save_qk.empty() ? options.save_qk.c_str() : "");
}

void analyse_on_other_rank(const CaptureOptions& options) {
  mpi_compute_ctable(QkData(), options.metrics, [](int64_t done, int64_t) {
    throw_if_interrupted();
    test_crash_point("metrics", done);  // QKSCOPE_TEST_CRASH: a rank killed during its heads
  });
}

int run_qk_mode(const CaptureOptions& options) {
  if (mpi_world().rank != 0) {
    analyse_on_other_rank(options);
    return 0;
  }
  QkData data;
  std::vector<SequenceRange> ranges;
  if (options.qk_files.size() > 1) {
    data = merge_qk_files(options.qk_files, options.max_tokens,
                          options.seed_given ? std::optional<uint64_t>(options.seed) : std::nullopt,
                          &ranges);
  } else {
    StoreFile file = read_store_file(options.qk);
    data = std::move(file.kept);
    ranges = read_sequence_ranges(file.metadata, data, options.qk);
    if (options.max_tokens) data = subsample(std::move(data), options);
  }
  RunInfo run;
  run.model = options.qk_files.size() > 1 ? fmt::format("{}", fmt::join(options.qk_files, " "))
                                          : options.qk;
  run.max_tokens = options.max_tokens;
  run.seed = options.seed;
  analyse_and_write(data, options, run, /*save=*/!options.save_qk.empty(), 0.0, ranges);
  return 0;
}

}  // namespace qkscope::cli
