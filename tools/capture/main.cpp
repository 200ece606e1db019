// capture: parse, validate, run the chosen mode, write. Errors are one line on stderr; exit
// status 0 success, 2 usage error, 1 anything else (SPEC section 5).
#include <csignal>
#include <exception>
#include <iostream>
#include <string>

#include "analyse.h"
#include "capture_options.h"
#include "interrupt.h"
#include "mpi_run.h"
#include "qkscope/error.h"
#ifdef QKSCOPE_HAVE_PLUGIN
#include "run_model.h"
#endif

namespace {

std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "unknown error" : line;
}

int run(qkscope::cli::CaptureOptions options) {
  const qkscope::cli::MpiWorld& world = qkscope::cli::mpi_world();
  if (world.rank != 0) options.quiet = true;  // progress and summary: rank 0's, once per run
  if (!options.qk.empty()) return qkscope::cli::run_qk_mode(options);  // heads over the ranks
#ifdef QKSCOPE_HAVE_PLUGIN
  return qkscope::cli::run_model_mode(options);
#else
  throw qkscope::Error("this capture was built without the LibTorch plugin: only --qk works");
#endif
}

}  // namespace

int main(int argc, char** argv) {
  // Under mpirun (-np K > 1) a failing rank prints its line and stops every rank (mpi_fail).
  qkscope::cli::mpi_init(&argc, &argv);
  const qkscope::cli::MpiWorld& world = qkscope::cli::mpi_world();
  const auto fail = [&](const std::string& line, int code) {
    if (world.size > 1)
      qkscope::cli::mpi_fail(world.rank == 0 ? line : "capture: rank " + std::to_string(world.rank) +
                                                          ": " + line.substr(9), code);
    std::cerr << line << "\n";
    qkscope::cli::mpi_finalize();
    return code;
  };
  qkscope::cli::install_interrupt_handlers();
  // Under mpirun, SIGTERM is mpirun ending the job (a rank's MPI_Abort, or Ctrl-C on mpirun): the
  // rank ends at once, silently, so the failing rank's line stays the run's only one.
  if (world.size > 1) std::signal(SIGTERM, SIG_DFL);
  try {
    std::string help;
    auto options = qkscope::cli::parse_capture_options(argc, argv, help);
    if (!options) {
      if (world.rank == 0) std::cout << help;
      qkscope::cli::mpi_finalize();
      return 0;
    }
    const int status = run(*options);
    qkscope::cli::mpi_finalize();
    return status;
  } catch (const qkscope::UsageError& e) {
    return fail("capture: " + first_line(e.what()) + " (see capture --help)", 2);
  } catch (const std::exception& e) {
    return fail("capture: error: " + first_line(e.what()), 1);
  }
}
