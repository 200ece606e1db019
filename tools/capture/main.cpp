// capture: parse, validate, run the chosen mode, write. Errors are one line on stderr; exit
// status 0 success, 2 usage error, 1 anything else (SPEC section 5).
#include <exception>
#include <iostream>
#include <string>

#include "analyse.h"
#include "capture_options.h"
#include "interrupt.h"
#include "qkscope/error.h"
#ifdef QKSCOPE_HAVE_PLUGIN
#include "run_model.h"
#endif

namespace {

std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "unknown error" : line;
}

int run(const qkscope::cli::CaptureOptions& options) {
  if (!options.qk.empty()) return qkscope::cli::run_qk_mode(options);
#ifdef QKSCOPE_HAVE_PLUGIN
  return qkscope::cli::run_model_mode(options);
#else
  throw qkscope::Error("this capture was built without the LibTorch plugin: only --qk works");
#endif
}

}  // namespace

int main(int argc, char** argv) {
  qkscope::cli::install_interrupt_handlers();
  try {
    std::string help;
    auto options = qkscope::cli::parse_capture_options(argc, argv, help);
    if (!options) {
      std::cout << help;
      return 0;
    }
    return run(*options);
  } catch (const qkscope::UsageError& e) {
    std::cerr << "capture: " << first_line(e.what()) << " (see capture --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "capture: error: " << first_line(e.what()) << "\n";
    return 1;
  }
}
